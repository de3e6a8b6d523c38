"""A person's whole-body box (head top to soles, arms' reach) estimated from their joints.

A box around the found joints is not the person: it stops at the eyes and the ankles, and on small walkers
whose joints the model puts on one column it is a few pixels wide. Trackers, their evaluation (MOTChallenge,
TrackEval: box IoU >= 0.5) and people drawing boxes all expect the pedestrian box. So every joint type has a
place on a standing body, as a fraction of the body's height from the head top (`BODY_HEIGHT_FRACTION`);
a least-squares fit of top and height to the joints found gives the box's top and bottom, whichever joints
those are (a person seen from the waist up, legs only, a close-up whose legs are out of the frame). The width
is the body's usual width for that height, or the joints' horizontal extent plus a hand's reach when the arms
or legs spread wider.

The numbers were fitted on the MOTChallenge ground truth of frames 1-400 of PETS09-S2L1 (`vtest.avi`), with the
default model's joints, by `python -m tagtrack.bench.boxes` (docs/tracker.md, "Full-body boxes": the fit,
its error and the IoU before and after).
"""

from __future__ import annotations

import numpy as np

# Where each COCO joint sits on a standing person, as a fraction of the body's height below the head top:
# the median over 2,087 default-model (phase 10) people matched to PETS09-S2L1 ground-truth boxes, frames 1-400,
# left and right pooled (the default model does not tell them apart); refit when the default model changes.
# Joints with other names take no part in the fit.
BODY_HEIGHT_FRACTION: dict[str, float] = {
    "nose": 0.110,
    "left_eye": 0.097, "right_eye": 0.097,
    "left_ear": 0.103, "right_ear": 0.103,
    "left_shoulder": 0.198, "right_shoulder": 0.198,
    "left_elbow": 0.371, "right_elbow": 0.371,
    "left_wrist": 0.439, "right_wrist": 0.439,
    "left_hip": 0.472, "right_hip": 0.472,
    "left_knee": 0.687, "right_knee": 0.687,
    "left_ankle": 0.879, "right_ankle": 0.879,
}
BODY_ASPECT = 0.36        # width / height of a pedestrian box (ground-truth median 0.356; 10-90 %: 0.30-0.41)
REACH = 0.06              # beyond the outermost joint (a hand past the wrist, a foot past the ankle), in heights
MIN_SPAN = 0.15           # joints spanning less of the body's height than this cannot fix the height alone
OUTLIER = 0.2             # a joint this far (in heights) from the first fit is dropped before the second
MIN_JOINT_SCORE = 0.2     # joints used; a person with none this confident uses every joint found
SHOULDER_WIDTH = 0.25     # few-joint fallback: a frontal upper body is at most this wide for its height


def body_fractions(keypoint_names: tuple[str, ...] | list[str]) -> np.ndarray:
    """[K] fraction of the body's height below the head top for each joint name, NaN where unknown."""
    return np.array([BODY_HEIGHT_FRACTION.get(name, np.nan) for name in keypoint_names], dtype=np.float64)


def _fit_height(y: np.ndarray, v: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares of y = top + v * height per person over the joints in `use` ([P,K] each).
    Returns top [P], height [P] and the span of v used [P] (0 for fewer than two joint levels)."""
    weight = use.astype(np.float64)
    count = np.maximum(weight.sum(1), 1.0)
    v_mean = (weight * v).sum(1) / count
    y_mean = (weight * y).sum(1) / count
    v_dev = np.where(use, v - v_mean[:, None], 0.0)
    svv = (v_dev ** 2).sum(1)
    svy = (v_dev * np.where(use, y - y_mean[:, None], 0.0)).sum(1)
    height = svy / np.maximum(svv, 1e-12)
    span = np.where(use.any(1), np.where(use, v, -np.inf).max(1) - np.where(use, v, np.inf).min(1), 0.0)
    return y_mean - v_mean * height, height, span


def body_boxes(keypoints: np.ndarray, keypoint_names: tuple[str, ...] | list[str],
               image_hw: tuple[int, int] | None = None, min_joint_score: float = MIN_JOINT_SCORE) -> np.ndarray:
    """[P,K,3] joints (x, y, score; score 0: not found) -> [P,4] float32 whole-body boxes (x1, y1, x2, y2).

    Clipped to the image when `image_hw` is given (a close-up's body continues below the frame). A person
    with no joint of a known name, or whose joints cannot fix a height (one joint), gets the box around
    their joints, as before; nobody found (no joint at all) gets zeros.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, len(keypoint_names), 3)
    found = keypoints[:, :, 2] > 0
    joint_box = np.stack([np.where(found, keypoints[:, :, 0], np.inf).min(1, initial=np.inf),
                          np.where(found, keypoints[:, :, 1], np.inf).min(1, initial=np.inf),
                          np.where(found, keypoints[:, :, 0], -np.inf).max(1, initial=-np.inf),
                          np.where(found, keypoints[:, :, 1], -np.inf).max(1, initial=-np.inf)], axis=1)
    joint_box = np.where(found.any(1)[:, None], joint_box, 0.0)
    if not len(keypoints):
        return joint_box.astype(np.float32)
    v = np.broadcast_to(body_fractions(keypoint_names), found.shape)
    known = found & np.isfinite(v)
    use = known & (keypoints[:, :, 2] >= min_joint_score)
    use = np.where(use.any(1, keepdims=True), use, known)  # nobody confident: every joint found counts
    x, y = keypoints[:, :, 0], keypoints[:, :, 1]
    # People with no joint to fit (or one) give inf and NaN below; they get their joint box at the end.
    with np.errstate(invalid="ignore", divide="ignore"):
        boxes = _fitted_boxes(x, y, v, use)
    good = use.any(1) & np.isfinite(boxes).all(1) & (boxes[:, 3] > boxes[:, 1])
    boxes = np.where(good[:, None], boxes, joint_box)
    if image_hw is not None:
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0.0, float(image_hw[1]))
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0.0, float(image_hw[0]))
    return boxes.astype(np.float32)


def _fitted_boxes(x: np.ndarray, y: np.ndarray, v: np.ndarray, use: np.ndarray) -> np.ndarray:
    """[P,4] boxes from the joints in `use` ([P,K] x, y, body fractions v, joints used)."""
    # Two passes: a stray joint (a low-score joint grouped from someone else) would pull the first fit; it is
    # dropped when far from it, as long as what is left still spans enough of the body.
    top, height, span = _fit_height(y, v, use)
    residual = np.abs(top[:, None] + v * height[:, None] - y) / np.maximum(np.abs(height), 1.0)[:, None]
    kept = use & (residual <= OUTLIER)
    _, _, kept_span = _fit_height(y, v, kept)
    use = np.where(((kept_span >= MIN_SPAN) & (span >= MIN_SPAN))[:, None], kept, use)
    top, height, span = _fit_height(y, v, use)

    # Joints at nearly one level (a face, a head and shoulders) cannot fix the height: take it from their
    # extent instead, vertical over the span they should cover, horizontal as a frontal upper body's width.
    extent_x = np.where(use, x, -np.inf).max(1) - np.where(use, x, np.inf).min(1)
    extent_y = np.where(use, y, -np.inf).max(1) - np.where(use, y, np.inf).min(1)
    few = span < MIN_SPAN
    fallback = np.maximum(extent_y / np.maximum(span, 0.05), extent_x / SHOULDER_WIDTH)
    height = np.where(few, fallback, height)
    count = np.maximum(use.sum(1), 1)
    top = np.where(few, (np.where(use, y, 0.0).sum(1) - np.where(use, v, 0.0).sum(1) * height) / count, top)

    # Horizontally the body is centred on its joints' mean (nearer the ground truth's centre than the middle
    # of their extent: 0.036 against 0.039 heights, median), BODY_ASPECT of its height wide, and at least a
    # hand's or a foot's reach past the outermost joints (arms or legs spread). Never smaller than the joints
    # it is fitted to, up and down either (a lying person's joints do not follow the template).
    reach = REACH * np.maximum(height, 0.0)
    centre = np.where(use, x, 0.0).sum(1) / np.maximum(use.sum(1), 1)
    half_width = 0.5 * BODY_ASPECT * height
    boxes = np.stack([np.minimum(centre - half_width, np.where(use, x, np.inf).min(1) - reach),
                      np.minimum(top, np.where(use, y, np.inf).min(1) - reach),
                      np.maximum(centre + half_width, np.where(use, x, -np.inf).max(1) + reach),
                      np.maximum(top + height, np.where(use, y, -np.inf).max(1) + reach)], axis=1)
    return np.where((height > 0)[:, None], boxes, np.nan)
