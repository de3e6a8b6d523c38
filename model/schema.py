"""Keypoint schemas: COCO-17, the default model's, and any other a checkpoint or a COCO-format data set names."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KeypointSchema:
    """Names, left/right flip permutation, skeleton edges, OKS sigmas and grouping order of a keypoint set."""

    name: str
    keypoint_names: tuple[str, ...]
    flip_index: tuple[int, ...]
    skeleton: tuple[tuple[int, int], ...]
    oks_sigmas: tuple[float, ...]
    grouping_order: tuple[int, ...]

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    def sigmas_array(self) -> np.ndarray:
        return np.asarray(self.oks_sigmas, dtype=np.float32)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "keypoint_names": list(self.keypoint_names),
            "flip_index": list(self.flip_index),
            "skeleton": [list(edge) for edge in self.skeleton],
            "oks_sigmas": list(self.oks_sigmas),
            "grouping_order": list(self.grouping_order),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "KeypointSchema":
        return cls(
            name=str(data["name"]),
            keypoint_names=tuple(data["keypoint_names"]),
            flip_index=tuple(int(i) for i in data["flip_index"]),
            skeleton=tuple((int(a), int(b)) for a, b in data["skeleton"]),
            oks_sigmas=tuple(float(s) for s in data["oks_sigmas"]),
            grouping_order=tuple(int(i) for i in data["grouping_order"]),
        )


COCO17 = KeypointSchema(
    name="coco17",
    keypoint_names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_index=(0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15),
    # 0-based version of the COCO annotation file's skeleton.
    skeleton=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
        (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    # OKS sigmas from the COCO keypoint evaluation (cocoeval.py).
    oks_sigmas=(
        0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
        0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
    ),
    # Head and torso first: they are seen most reliably and anchor the person's tag, then limbs outward.
    grouping_order=(0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16),
)


# OKS sigma of a joint COCO does not name (COCO-17's mean): a neutral scale for a schema read from a data set.
UNKNOWN_JOINT_SIGMA = 0.067


def schema_from_coco_category(category: dict) -> KeypointSchema:
    """The schema of a COCO keypoint category ({"keypoints": [names], "skeleton": [[a, b], ...] 1-based}).

    COCO17 itself when the names are COCO's 17 joints. Otherwise the names and skeleton as given, left/right
    pairs by their names ("left_x" <-> "right_x"), COCO's OKS sigma for a joint named as in COCO (else
    UNKNOWN_JOINT_SIGMA) and the listed order as the grouping order.
    """
    names = tuple(str(name) for name in category["keypoints"])
    if names == COCO17.keypoint_names:
        return COCO17
    index = {name: k for k, name in enumerate(names)}

    def mirror(name: str) -> str:
        for side, other in (("left", "right"), ("right", "left")):
            if side in name:
                return name.replace(side, other)
        return name

    coco_sigmas = dict(zip(COCO17.keypoint_names, COCO17.oks_sigmas))
    return KeypointSchema(
        name=str(category.get("schema", f"{category.get('name', 'keypoints')}-{len(names)}")),
        keypoint_names=names,
        flip_index=tuple(index.get(mirror(name), k) for k, name in enumerate(names)),
        skeleton=tuple((int(a) - 1, int(b) - 1) for a, b in category.get("skeleton", [])),
        oks_sigmas=tuple(coco_sigmas.get(name, UNKNOWN_JOINT_SIGMA) for name in names),
        grouping_order=tuple(range(len(names))),
    )
