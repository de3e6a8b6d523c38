"""Person boxes against MOTChallenge ground-truth boxes: the fit of `model.body_box` and its error.

    python -m tagtrack.bench.boxes --poses vtest.jsonl --gt gt.txt [--frames 1 400] [--fit]

`--poses` is a `tagtrack run --no-track --json` file of the video (every person of every frame); people are
paired with ground-truth boxes as `eval-track --match centroid` pairs them (the centroid of their confident
joints within half a box height of the box centre, one to one per frame; don't-care rows left out). Then, on
the same pairs: IoU to the ground-truth box, the top, bottom and height errors in ground-truth heights, for
the box around the joints, that box widened to 0.4 of its height (the MOT export before the body box) and the
body box; and the body box again from only some of each person's joints (robustness to hidden joints).
`--fit` prints the joint fractions and the box aspect measured on these pairs (what `model/body_box.py`
holds), and the same boxes from a fit on the first half of the frames scored on the second half.
Fit only on frames with ground truth you may tune on (for PETS09-S2L1 here: frames 1-400).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from tagtrack.model import body_box
from tagtrack.model.codec import keypoint_boxes
from tagtrack.model.schema import COCO17
from tagtrack.tracker.association import FORBIDDEN, assign
from tagtrack.tracker.mot_eval import MatchRule, distance_matrix, read_mot_file, read_pose_frames, tracked_objects
from tagtrack.tracker.tracker import widened_boxes

# Joints kept in the robustness rows (the rest are marked not found).
UPPER = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
         "left_elbow", "right_elbow", "left_wrist", "right_wrist")
JOINT_SUBSETS: dict[str, tuple[str, ...]] = {
    "waist up (no hips, knees, ankles)": UPPER,
    "head and shoulders": UPPER[:7],
    "hips down (upper body hidden)": ("left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
                                      "right_ankle"),
}


@dataclass
class Pairs:
    """Detected people paired with ground-truth boxes: keypoints [N,K,3], truth [N,4] (x1,y1,x2,y2), frame [N]."""

    keypoints: np.ndarray
    truth: np.ndarray
    frame: np.ndarray

    def subset(self, mask: np.ndarray) -> Pairs:
        return Pairs(self.keypoints[mask], self.truth[mask], self.frame[mask])


def paired_people(poses_path: str, gt_path: str, frames: range) -> Pairs:
    truth = read_mot_file(gt_path)
    rule = MatchRule()
    keypoints, boxes, numbers = [], [], []
    for pose_frame in read_pose_frames(poses_path):
        objects = truth.get(pose_frame.frame)
        if pose_frame.frame not in frames or objects is None or not pose_frame.poses:
            continue
        found = tracked_objects(pose_frame.poses, [0] * len(pose_frame.poses), rule.min_joint_score)
        distance = distance_matrix(objects, found, rule)
        for row, col in assign(np.where(np.isnan(distance), FORBIDDEN, distance)):
            if objects.scored[row]:
                keypoints.append(pose_frame.poses[col].keypoints)
                boxes.append(objects.boxes[row])
                numbers.append(pose_frame.frame)
    count = len(keypoints)
    return Pairs(np.array(keypoints, dtype=np.float64).reshape(count, COCO17.num_keypoints, 3),
                 np.array(boxes, dtype=np.float64).reshape(count, 4), np.array(numbers, dtype=np.int64))


def paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of a[i] with b[i], [N]."""
    width = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0.0, None)
    height = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0.0, None)
    inter = width * height
    union = np.prod(a[:, 2:] - a[:, :2], axis=1) + np.prod(b[:, 2:] - b[:, :2], axis=1) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class BoxErrors:
    median_iou: float
    under_half: float       # share of boxes with IoU < 0.5 (a correct detection counted as a miss + a false positive)
    top: float              # median (box top - truth top) / truth height: > 0 too low
    bottom: float           # median (box bottom - truth bottom) / truth height: < 0 too high
    height: float           # median box height / truth height
    count: int


def box_errors(boxes: np.ndarray, truth: np.ndarray) -> BoxErrors:
    iou = paired_iou(boxes, truth)
    height = truth[:, 3] - truth[:, 1]
    return BoxErrors(float(np.median(iou)), float((iou < 0.5).mean()),
                     float(np.median((boxes[:, 1] - truth[:, 1]) / height)),
                     float(np.median((boxes[:, 3] - truth[:, 3]) / height)),
                     float(np.median((boxes[:, 3] - boxes[:, 1]) / height)), len(iou))


def keep_joints(keypoints: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    kept = keypoints.copy()
    drop = [k for k, name in enumerate(COCO17.keypoint_names) if name not in names]
    kept[:, drop, 2] = 0.0
    return kept


def fitted_fractions(pairs: Pairs) -> tuple[dict[str, float], float]:
    """Median fraction of the truth's height below its top per joint name (left and right pooled, joints
    with score >= body_box.MIN_JOINT_SCORE), and the median truth aspect (width / height)."""
    height = pairs.truth[:, 3] - pairs.truth[:, 1]
    fractions = {}
    for name in COCO17.keypoint_names:
        same = [k for k, other in enumerate(COCO17.keypoint_names)
                if other.replace("left_", "").replace("right_", "") == name.replace("left_", "").replace("right_", "")]
        values = np.concatenate([((pairs.keypoints[:, k, 1] - pairs.truth[:, 1]) / height)
                                 [pairs.keypoints[:, k, 2] >= body_box.MIN_JOINT_SCORE] for k in same])
        fractions[name] = float(np.median(values)) if len(values) else float("nan")
    aspect = float(np.median((pairs.truth[:, 2] - pairs.truth[:, 0]) / height))
    return fractions, aspect


def boxes_with(keypoints: np.ndarray, fractions: dict[str, float] | None = None,
               aspect: float | None = None) -> np.ndarray:
    """body_boxes with other constants (a fit on other frames), restored afterwards."""
    saved = dict(body_box.BODY_HEIGHT_FRACTION), body_box.BODY_ASPECT
    try:
        if fractions is not None:
            body_box.BODY_HEIGHT_FRACTION.update(fractions)
        if aspect is not None:
            body_box.BODY_ASPECT = aspect
        return body_box.body_boxes(keypoints, COCO17.keypoint_names).astype(np.float64)
    finally:
        body_box.BODY_HEIGHT_FRACTION.clear()
        body_box.BODY_HEIGHT_FRACTION.update(saved[0])
        body_box.BODY_ASPECT = saved[1]


def report(pairs: Pairs, fit: bool) -> str:
    joint = keypoint_boxes(pairs.keypoints.astype(np.float32)).astype(np.float64)
    rows = [("box around the joints", box_errors(joint, pairs.truth)),
            ("  widened to 0.4 of its height (old MOT export)", box_errors(widened_boxes(joint, 0.4), pairs.truth)),
            ("body box (model/body_box.py)", box_errors(boxes_with(pairs.keypoints), pairs.truth))]
    for name, names in JOINT_SUBSETS.items():
        rows.append((f"  from {name}", box_errors(boxes_with(keep_joints(pairs.keypoints, names)), pairs.truth)))
    lines = [f"{len(pairs.truth)} people paired with ground-truth boxes, "
             f"frames {pairs.frame.min()}-{pairs.frame.max()}",
             f"{'box':<48} {'IoU med':>7} {'<0.5':>6} {'top':>6} {'bottom':>7} {'height':>7}"]
    lines += [f"{name:<48} {e.median_iou:7.3f} {100 * e.under_half:5.1f}% {e.top:+6.3f} {e.bottom:+7.3f} "
              f"{e.height:7.3f}" for name, e in rows]
    if fit:
        fractions, aspect = fitted_fractions(pairs)
        lines.append("fitted on these pairs: aspect (width / height) %.3f; joint fractions of the height: %s"
                     % (aspect, ", ".join(f"{k} {v:.3f}" for k, v in fractions.items())))
        half = (pairs.frame.min() + pairs.frame.max()) // 2
        first, second = pairs.subset(pairs.frame <= half), pairs.subset(pairs.frame > half)
        fractions, aspect = fitted_fractions(first)
        errors = box_errors(boxes_with(second.keypoints, fractions, aspect), second.truth)
        lines.append(f"fitted on frames up to {half}, scored on the later ones: IoU median {errors.median_iou:.3f}, "
                     f"< 0.5 {100 * errors.under_half:.1f} %, top {errors.top:+.3f}, bottom {errors.bottom:+.3f}, "
                     f"height {errors.height:.3f} ({errors.count} people)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--poses", required=True, help="JSON Lines of `tagtrack run --no-track --json`")
    parser.add_argument("--gt", required=True, help="MOTChallenge ground truth")
    parser.add_argument("--frames", type=int, nargs=2, default=(1, 400), metavar=("FIRST", "LAST"))
    parser.add_argument("--fit", action="store_true", help="also print the fit and a fit on half the frames")
    args = parser.parse_args(argv)
    print(report(paired_people(args.poses, args.gt, range(args.frames[0], args.frames[1] + 1)), args.fit))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
