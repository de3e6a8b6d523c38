"""Whole-body boxes from joints (model/body_box.py): a template person, missing joints, strays, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from tagtrack.model.body_box import BODY_ASPECT, BODY_HEIGHT_FRACTION, REACH, body_boxes
from tagtrack.model.schema import COCO17

NAMES = COCO17.keypoint_names
TRUTH = np.array([100.0, 50.0, 100.0 + BODY_ASPECT * 200.0, 250.0])  # a 200 px tall pedestrian box


def standing(keep: tuple[str, ...] = NAMES, score: float = 0.9) -> np.ndarray:
    """[1,17,3] joints where the template puts them in TRUTH (all on its centre line), those not kept missing."""
    keypoints = np.zeros((1, len(NAMES), 3))
    for k, name in enumerate(NAMES):
        if name in keep:
            keypoints[0, k] = [(TRUTH[0] + TRUTH[2]) / 2, TRUTH[1] + BODY_HEIGHT_FRACTION[name] * 200.0, score]
    return keypoints


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return float(inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter))


def test_a_whole_person_gets_the_pedestrian_box():
    box = body_boxes(standing(), NAMES)[0]
    np.testing.assert_allclose(box, TRUTH, atol=1e-3)
    assert box.dtype == np.float32


@pytest.mark.parametrize("keep", [
    NAMES[:11],                       # waist up: no hips, knees, ankles
    NAMES[11:],                       # hips down: upper body hidden
    ("nose", "left_shoulder", "left_hip", "right_ankle"),
    NAMES[:7],                        # head and shoulders (spans too little: the fallback)
])
def test_missing_joints_still_give_head_top_to_soles(keep):
    box = body_boxes(standing(keep), NAMES)[0]
    if len(keep) > 7:
        np.testing.assert_allclose(box, TRUTH, atol=1e-3)
    else:  # head and shoulders in a line: the height comes from their vertical extent over their span
        assert box[1] == pytest.approx(TRUTH[1], abs=1.0) and box[3] == pytest.approx(TRUTH[3], abs=1.0)


def test_a_stray_joint_is_dropped():
    keypoints = standing()
    keypoints[0, NAMES.index("left_ankle")] = [118.0, 400.0, 0.3]  # grouped from someone else, far below
    np.testing.assert_allclose(body_boxes(keypoints, NAMES)[0, [0, 1, 2]], TRUTH[[0, 1, 2]], atol=1e-3)
    # ... but the box never leaves out a joint it was fitted to (here the stray one is not).
    assert body_boxes(keypoints, NAMES)[0, 3] == pytest.approx(TRUTH[3], abs=1e-3)


def test_spread_arms_are_covered_with_a_hands_reach():
    keypoints = standing()
    keypoints[0, NAMES.index("left_wrist"), 0] = 10.0
    keypoints[0, NAMES.index("right_wrist"), 0] = 230.0
    box = body_boxes(keypoints, NAMES)[0]
    assert box[0] == pytest.approx(10.0 - REACH * 200.0, abs=0.5) and box[2] == pytest.approx(230.0 + REACH * 200.0,
                                                                                              abs=0.5)


def test_close_up_is_clipped_to_the_image():
    box = body_boxes(standing(NAMES[:11]), NAMES, image_hw=(150, 130))[0]
    assert box[3] == 150.0 and box[2] == 130.0 and box[1] == pytest.approx(TRUTH[1], abs=1e-3)


def test_degenerate_people_keep_the_box_around_their_joints():
    one = np.zeros((1, 17, 3))
    one[0, 0] = [40.0, 60.0, 0.9]
    nobody = np.zeros((1, 17, 3))
    np.testing.assert_allclose(body_boxes(np.concatenate([one, nobody]), NAMES), [[40, 60, 40, 60], [0, 0, 0, 0]])
    assert body_boxes(np.zeros((0, 17, 3)), NAMES).shape == (0, 4)
    # A schema whose joints the template does not know: the box around them.
    other = [f"joint{k}" for k in range(17)]
    joints = standing()
    top = TRUTH[1] + 200.0 * min(BODY_HEIGHT_FRACTION.values())
    bottom = TRUTH[1] + 200.0 * max(BODY_HEIGHT_FRACTION.values())
    np.testing.assert_allclose(body_boxes(joints, other)[0], [136.0, top, 136.0, bottom], atol=1e-3)


def test_unsure_joints_count_only_when_nothing_is_sure():
    sure = standing()
    unsure = standing(score=0.1)
    np.testing.assert_allclose(body_boxes(unsure, NAMES)[0], TRUTH, atol=1e-3)
    mixed = sure.copy()
    mixed[0, NAMES.index("nose")] = [118.0, 0.0, 0.1]  # an unsure nose far above: ignored
    np.testing.assert_allclose(body_boxes(mixed, NAMES)[0], TRUTH, atol=1e-3)
