"""The record that crosses the model -> tracker -> sinks boundary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Pose:
    """One person found in one image, in image pixel coordinates.

    keypoints: [K, 3] float32 (x, y, score); a joint with score 0 was not found.
    score: person score as in the AE papers (pose-ae): the mean over all K joint types of the heatmap
        scores of the joints grouped into the person, a joint not found counting 0, taken before
        refinement fills missing joints (so a person found whole scores higher than a fragment).
    box: [4] float32 (x1, y1, x2, y2). From the pipeline (`predict.poses_from_maps`): the whole person, head
        top to soles, estimated from the joints (`model.body_box`). From `codec.decode` (map pixels) and
        `box_from_keypoints`: the box around the found joints.
    tag: [L] float32, the person's mean tag vector (the associative embedding).
    """

    keypoints: np.ndarray
    score: float
    box: np.ndarray
    tag: np.ndarray

    @staticmethod
    def box_from_keypoints(keypoints: np.ndarray, min_score: float = 0.0) -> np.ndarray:
        visible = keypoints[:, 2] > min_score
        if not visible.any():
            return np.zeros(4, dtype=np.float32)
        xy = keypoints[visible, :2]
        return np.array([xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()], dtype=np.float32)


def same_poses(ours: list[Pose], theirs: list[Pose]) -> bool:
    """Both lists hold the same people in the same order, every array equal to the bit.

    Beside ``Pose`` in ``model/`` because the decode benchmark (``bench/decode.py``) and the tests both compare
    decoders' outputs with it.
    """
    return len(ours) == len(theirs) and all(
        np.array_equal(a.keypoints, b.keypoints) and a.score == b.score and np.array_equal(a.box, b.box)
        and np.array_equal(a.tag, b.tag) for a, b in zip(ours, theirs))
