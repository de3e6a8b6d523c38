"""Import LSP-format labels (Leeds Sports Pose, LSP Extended, MPII-style 14-joint sets) as a COCO keypoint file.

An LSP label file (`joints.mat`) holds one person per image, 14 joints (right ankle, right knee, right hip,
left hip, left knee, left ankle, right wrist, right elbow, right shoulder, left shoulder, left elbow, left
wrist, neck, head top) as x, y and a flag: visible/labelled 1, unlabelled 0 (LSP Extended's convention; a
joint without a flag or at x = y = 0 is unlabelled too). The array is 14 x 3 x N or N x 14 x 3; column
(or row) i belongs to image `im{i+1:05d}.jpg` unless a naming pattern says otherwise.

In COCO-17 terms the 12 limb joints map one to one; neck and head top have no COCO joint (they only widen
the person's box); the five face points are unknown. Unknown is not absent: the face points are filled from
the teacher where it is confident about the same person, and otherwise stay unlabelled (visibility 0); dense
distillation (training.distill) then gives them the teacher's soft maps rather than an empty target.

With a teacher (MoveNet MultiPose), each image also gets:
- the teacher's other people: confident ones as pseudo-labelled people, doubtful ones as ignore regions
  (the same rules as `tagtrack label`), so nobody else in the image is taught as background;
- a left/right check of the labelled arms and legs against the teacher's confident joints of the same
  person: a limb pair whose swapped labels fit the teacher much better is swapped back, and counted;
- optionally the teacher's dense maps (`maps_dir`), for training.distill.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tagtrack.model.errors import UserFacingError
from tagtrack.model.files import read_image, write_atomically
from tagtrack.model.schema import COCO17
from tagtrack.training.distill import maps_path, save_teacher_maps
from tagtrack.training.label import LabelConfig, coco_categories, person_annotation
from tagtrack.training.teacher import (MoveNetTeacher, TeacherConfig, TeacherPerson, keypoint_similarity, oks_nms_merge,
                                       predict_teacher)

log = logging.getLogger(__name__)

LSP_JOINTS = 14
NECK, HEAD_TOP = 12, 13
# LSP joint index -> COCO-17 index for the 12 shared joints.
LSP_TO_COCO = {0: 16, 1: 14, 2: 12, 3: 11, 4: 13, 5: 15, 6: 10, 7: 8, 8: 6, 9: 5, 10: 7, 11: 9}
FACE = (0, 1, 2, 3, 4)
# Limb groups checked for left/right swaps, as (left joints, right joints) in COCO-17.
ARMS = ((5, 7, 9), (6, 8, 10))
LEGS = ((11, 13, 15), (12, 14, 16))


@dataclass(frozen=True)
class LspImportConfig:
    """How an LSP set is imported.

    image_pattern: file name of image i (0-based column of the label array).
    box_margin: the labelled person's box is its joints' box (head top and neck included) grown by this.
    teacher_long_side: the teacher's input long side (LSP images are small: about 250 px).
    match_oks: the teacher person whose OKS with the labelled joints is highest, if at least this, is the
    labelled person (its face points fill the unknown ones; its limbs check the labels' left and right).
    face_score: a teacher face point with at least this score fills the labelled person's unknown one.
    swap_score: teacher joints with at least this score take part in the left/right check.
    swap_ratio: a limb pair is swapped when the swapped labels' mean distance to the teacher is below
    swap_ratio x the unswapped one, and the unswapped one is above swap_min_error of the person's size.
    """

    image_pattern: str = "im{index:05d}.jpg"
    box_margin: float = 0.1
    teacher_long_side: int = 256
    match_oks: float = 0.3
    face_score: float = 0.5
    swap_score: float = 0.5
    swap_ratio: float = 0.5
    swap_min_error: float = 0.08
    overlap_drop: float = 0.3
    label: LabelConfig = field(default_factory=LabelConfig)


@dataclass
class LspImportSummary:
    annotations_path: Path
    images: int = 0
    labelled_people: int = 0
    teacher_matched: int = 0
    face_points_filled: int = 0
    arm_swaps_fixed: int = 0
    leg_swaps_fixed: int = 0
    other_people: int = 0
    ignore_regions: int = 0
    maps_written: int = 0


# ---------------------------------------------------------------- reading


def read_lsp_joints(path: str | Path) -> np.ndarray:
    """The label array as float64 [N, 14, 3] (x, y, flag); UserFacingError on a missing or malformed file."""
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise UserFacingError(f"LSP label file not found: {path}")
    try:
        contents = loadmat(str(path))
    except Exception as error:  # scipy raises ValueError, TypeError, MatReadError... for non-MAT files
        raise UserFacingError(f"{path} is not a readable MATLAB file: {error}") from None
    if "joints" not in contents:
        names = sorted(k for k in contents if not k.startswith("__"))
        raise UserFacingError(f"{path} has no 'joints' array (it has {names})")
    joints = np.asarray(contents["joints"])
    if joints.ndim == 3 and joints.shape[0] == LSP_JOINTS and joints.shape[1] == 3:
        joints = joints.transpose(2, 0, 1)  # 14 x 3 x N (LSP Extended)
    elif joints.ndim == 3 and joints.shape[1] == LSP_JOINTS and joints.shape[2] == 3:
        pass  # N x 14 x 3
    else:
        raise UserFacingError(f"{path}: 'joints' has shape {joints.shape}, expected 14 x 3 x N or N x 14 x 3")
    if not np.issubdtype(joints.dtype, np.number):
        raise UserFacingError(f"{path}: 'joints' is not numeric ({joints.dtype})")
    return joints.astype(np.float64)


def read_image_list(path: str | Path, images_dir: Path) -> list[str]:
    """Image names listed one per line; every one must exist in images_dir."""
    path = Path(path)
    if not path.is_file():
        raise UserFacingError(f"image list not found: {path}")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    missing = [name for name in names if not (images_dir / name).is_file()]
    if missing:
        raise UserFacingError(f"{len(missing)} image(s) listed in {path} are missing from {images_dir}, e.g. {missing[0]}")
    return names


def lsp_to_coco(lsp: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """One person's LSP joints [14,3] -> COCO-17 [17,3] (x, y, v: 2 labelled, 0 unknown)."""
    height, width = image_hw
    keypoints = np.zeros((COCO17.num_keypoints, 3), dtype=np.float64)
    for lsp_index, coco_index in LSP_TO_COCO.items():
        x, y, flag = lsp[lsp_index]
        if _labelled(x, y, flag, width, height):
            keypoints[coco_index] = (x, y, 2)
    return keypoints


def _labelled(x: float, y: float, flag: float, width: int, height: int) -> bool:
    # Labels may sit a little outside the image (a cut-off foot); far outside or at (0, 0) means no label.
    inside = -0.1 * width <= x <= 1.1 * width and -0.1 * height <= y <= 1.1 * height
    return bool(flag > 0 and inside and not (x == 0 and y == 0))


def person_box(lsp: np.ndarray, keypoints: np.ndarray, image_hw: tuple[int, int], margin: float) -> list[float] | None:
    """x, y, w, h around the labelled joints, neck and head top included, grown by margin; None if < 2 joints."""
    height, width = image_hw
    points = [keypoints[k, :2] for k in range(len(keypoints)) if keypoints[k, 2] > 0]
    points += [lsp[j, :2] for j in (NECK, HEAD_TOP) if _labelled(*lsp[j], width, height)]
    if len(points) < 2:
        return None
    points = np.asarray(points)
    (x1, y1), (x2, y2) = points.min(axis=0), points.max(axis=0)
    grow_x, grow_y = margin * (x2 - x1), margin * (y2 - y1)
    x1, y1 = max(0.0, x1 - grow_x), max(0.0, y1 - grow_y)
    x2, y2 = min(float(width), x2 + grow_x), min(float(height), y2 + grow_y)
    return [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]


# ---------------------------------------------------------------- checking against the teacher


def match_teacher(keypoints: np.ndarray, box: list[float], people: list[TeacherPerson],
                  min_oks: float) -> int | None:
    """Index of the teacher person that is the labelled person (best OKS, swapped limbs allowed), or None."""
    labelled = TeacherPerson(np.concatenate([keypoints[:, :2], (keypoints[:, 2:] > 0).astype(np.float64)], axis=1),
                             1.0, np.array([box[0], box[1], box[0] + box[2], box[1] + box[3]]))
    mirrored = TeacherPerson(labelled.keypoints[list(COCO17.flip_index)], 1.0, labelled.box)
    sigmas = COCO17.sigmas_array()
    best, best_oks = None, min_oks
    for index, person in enumerate(people):
        oks = max(keypoint_similarity(labelled, person, sigmas), keypoint_similarity(mirrored, person, sigmas))
        if oks >= best_oks:
            best, best_oks = index, oks
    return best


def fix_swaps(keypoints: np.ndarray, teacher: TeacherPerson, person_size: float,
              config: LspImportConfig) -> tuple[bool, bool]:
    """Swap back the arms and/or legs whose labels have left and right exchanged (in place); which were."""
    return tuple(_fix_group(keypoints, teacher, group, person_size, config) for group in (ARMS, LEGS))


def _fix_group(keypoints: np.ndarray, teacher: TeacherPerson, group: tuple[tuple[int, ...], tuple[int, ...]],
               person_size: float, config: LspImportConfig) -> bool:
    left, right = group
    joints = list(left + right)
    swapped = list(right + left)
    usable = [(j, s) for j, s in zip(joints, swapped)
              if keypoints[j, 2] > 0 and keypoints[s, 2] > 0 and teacher.keypoints[j, 2] >= config.swap_score]
    if len(usable) < 2:  # the check needs both sides of at least one joint pair seen by both
        return False
    straight = np.mean([np.linalg.norm(keypoints[j, :2] - teacher.keypoints[j, :2]) for j, _ in usable])
    crossed = np.mean([np.linalg.norm(keypoints[s, :2] - teacher.keypoints[j, :2]) for j, s in usable])
    if straight > config.swap_min_error * person_size and crossed < config.swap_ratio * straight:
        keypoints[joints] = keypoints[swapped].copy()
        return True
    return False


# ---------------------------------------------------------------- the import


def import_lsp(
    joints_path: str | Path,
    images_dir: str | Path,
    out_path: str | Path,
    image_list: str | Path | None = None,
    teacher_path: str | Path | None = None,
    maps_dir: str | Path | None = None,
    config: LspImportConfig = LspImportConfig(),
    progress: bool = True,
    teacher_threads: int | None = None,
) -> LspImportSummary:
    """Write a COCO keypoint file for the LSP set; everything is checked before anything is written."""
    from tqdm import tqdm

    images_dir = Path(images_dir)
    out_path = Path(out_path)
    joints = read_lsp_joints(joints_path)
    if not images_dir.is_dir():
        raise UserFacingError(f"image folder not found: {images_dir}")
    if image_list is not None:
        names = read_image_list(image_list, images_dir)
    else:
        names = [config.image_pattern.format(index=i + 1) for i in range(len(joints))]
        names = [name for name in names if (images_dir / name).is_file()]
        if not names:
            raise UserFacingError(f"no image named like {config.image_pattern.format(index=1)} in {images_dir}")
    columns = [_column_of(name, config.image_pattern, len(joints)) for name in names]
    if maps_dir is not None and teacher_path is None:
        raise UserFacingError("teacher maps need a teacher (--teacher)")
    teacher = (MoveNetTeacher(teacher_path, COCO17, threads=teacher_threads, dense_maps=maps_dir is not None)
               if teacher_path else None)
    if maps_dir is not None:
        Path(maps_dir).mkdir(parents=True, exist_ok=True)

    summary = LspImportSummary(annotations_path=out_path)
    dataset = {"info": {"description": f"LSP-format labels imported from {Path(joints_path).name} by tagtrack"},
               "licenses": [], "images": [], "annotations": [], "categories": coco_categories(COCO17)}
    for name, column in tqdm(list(zip(names, columns)), desc="import LSP", unit="image", disable=not progress):
        image = read_image(images_dir / name)
        image_id = len(dataset["images"]) + 1
        height, width = image.shape[:2]
        dataset["images"].append({"id": image_id, "file_name": name, "width": width, "height": height,
                                  "lsp_index": column})
        people, maps = _teacher_people(teacher, image, config, maps_dir is not None)
        if maps is not None:
            save_teacher_maps(maps_path(Path(maps_dir), name), maps)
            summary.maps_written += 1
        for annotation in _image_annotations(joints[column], (height, width), people, config, summary):
            dataset["annotations"].append(dict(annotation, id=len(dataset["annotations"]) + 1, image_id=image_id))
        summary.images += 1
    write_atomically(out_path, lambda temporary: temporary.write_text(json.dumps(dataset), encoding="utf-8"))
    return summary


def _column_of(name: str, pattern: str, count: int) -> int:
    """The label column of an image named by the pattern (im00042.jpg -> 41)."""
    prefix, _, rest = pattern.partition("{")
    suffix = pattern.rpartition("}")[2]
    digits = name[len(prefix): len(name) - len(suffix)] if name.startswith(prefix) and name.endswith(suffix) else ""
    if not digits.isdigit() or not 1 <= int(digits) <= count:
        raise UserFacingError(f"image {name} has no label column (expected names like "
                              f"{pattern.format(index=1)} up to {pattern.format(index=count)})")
    return int(digits) - 1


def _teacher_people(teacher: MoveNetTeacher | None, image_bgr: np.ndarray, config: LspImportConfig,
                    with_maps: bool) -> tuple[list[TeacherPerson], np.ndarray | None]:
    if teacher is None:
        return [], None
    if not with_maps:
        return predict_teacher(teacher, image_bgr, TeacherConfig(scales=(config.teacher_long_side,))), None
    people, maps = teacher.run_dense(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB), config.teacher_long_side)
    people = oks_nms_merge([p for p in people if p.score >= config.label.ignore_threshold], COCO17)
    return people, maps


def _image_annotations(lsp: np.ndarray, image_hw: tuple[int, int], people: list[TeacherPerson],
                       config: LspImportConfig, summary: LspImportSummary) -> list[dict]:
    """The labelled person (checked and completed with the teacher) and the teacher's other people."""
    annotations = []
    keypoints = lsp_to_coco(lsp, image_hw)
    box = person_box(lsp, keypoints, image_hw, config.box_margin)
    matched = None
    if box is not None and (keypoints[:, 2] > 0).sum() >= 2:
        matched = match_teacher(keypoints, box, people, config.match_oks)
        if matched is not None:
            summary.teacher_matched += 1
            teacher = people[matched]
            arms, legs = fix_swaps(keypoints, teacher, max(box[2], box[3]), config)
            summary.arm_swaps_fixed += int(arms)
            summary.leg_swaps_fixed += int(legs)
            for k in FACE:
                if teacher.keypoints[k, 2] >= config.face_score:
                    keypoints[k] = (*teacher.keypoints[k, :2], 2)
                    summary.face_points_filled += 1
        annotations.append(_labelled_annotation(keypoints, box))
        summary.labelled_people += 1
    for index, person in enumerate(people):
        if index == matched:
            continue
        annotation = person_annotation(person, image_hw, config.label)
        if annotation is None or (box is not None and overlaps_labelled(annotation, box, config.overlap_drop)):
            continue
        annotations.append(annotation)
        if annotation["num_keypoints"] > 0:
            summary.other_people += 1
        else:
            summary.ignore_regions += 1
    return annotations


def overlaps_labelled(annotation: dict, labelled_box: list[float], limit: float) -> bool:
    """Whether a teacher annotation is probably the labelled person again (see LspImportConfig.overlap_drop)."""
    ax, ay, aw, ah = labelled_box
    bx, by, bw, bh = annotation["bbox"]
    inter = max(0.0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0.0, min(ay + ah, by + bh) - max(ay, by))
    if annotation["num_keypoints"] == 0:
        return inter > limit * max(aw * ah, 1e-9)
    return inter / max(aw * ah + bw * bh - inter, 1e-9) > limit


def _labelled_annotation(keypoints: np.ndarray, box: list[float]) -> dict:
    return {
        "category_id": 1, "iscrowd": 0, "bbox": [round(v, 2) for v in box], "area": round(box[2] * box[3], 2),
        "keypoints": [round(float(v), 2) if i % 3 != 2 else int(v) for i, v in enumerate(keypoints.reshape(-1))],
        "num_keypoints": int((keypoints[:, 2] > 0).sum()), "source": "human",
    }
