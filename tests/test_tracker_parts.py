"""The tracker's parts on their own: association cues, costs and gates, tag statistics, motion, One-Euro."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tagtrack.tracker.association import (
    FORBIDDEN,
    assign,
    iou_matrix,
    mahalanobis_matrix,
    oks_from_offsets,
    oks_matrix,
    pose_offsets,
)
from tagtrack.tracker.config import TrackerConfig
from tagtrack.tracker.costs import (
    TagStatistics,
    learn_tag_statistics,
    match_cost,
    match_gate_units,
    reid_cost,
    tag_trust,
    tag_unit,
)
from tagtrack.tracker.motion import BoxMotion, MotionStep, box_to_measurement, measurement_to_box
from tagtrack.tracker.one_euro import OneEuroParams, one_euro_step

SIGMAS = np.full(3, 0.1)
LEARNED = TagStatistics(same=0.5, other=4.0, samples=100)  # a model whose tags move 0.5 a frame


# ---------------------------------------------------------------- association


def test_iou_of_known_boxes():
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 50.0 / 150.0, 0.0]])


def test_offsets_and_oks_use_only_the_joints_both_have():
    predicted = np.array([[[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]])
    known = np.array([[True, True, False]])
    detection = predicted + np.array([2.0, 1.0])
    detection[0, 2] = [500.0, 500.0]  # a joint the track does not know: ignored
    offsets = pose_offsets(predicted, known, detection, np.ones((1, 3), bool))
    assert offsets.count[0, 0] == 2
    np.testing.assert_allclose(offsets.shift[0, 0], [2.0, 1.0])
    # COCO OKS over the two shared joints, each 5 px^2 away: exp(-5 / (2 * area 100 * (2 * 0.1)^2))
    expected = math.exp(-5.0 / (2 * 100.0 * 0.2 ** 2))
    np.testing.assert_allclose(oks_from_offsets(offsets, np.array([100.0]), SIGMAS), [[expected]])
    every = np.ones((1, 3), bool)
    all_joints = oks_matrix(predicted, every, np.array([100.0]), detection, every, SIGMAS)
    assert all_joints[0, 0] < expected  # the far joint, counted, pulls it down
    assert oks_matrix(predicted, every, np.array([100.0]), predicted, every, SIGMAS)[0, 0] == pytest.approx(1.0)
    assert oks_matrix(predicted, known, np.array([100.0]), predicted, ~known, SIGMAS)[0, 0] == 0.0  # none shared


def test_oks_widens_by_the_prediction_spread():
    predicted = np.zeros((1, 3, 2))
    offsets = pose_offsets(predicted, np.ones((1, 3), bool), predicted + np.array([3.0, 4.0]), np.ones((1, 3), bool))
    plain = oks_from_offsets(offsets, np.array([100.0]), SIGMAS)
    np.testing.assert_allclose(oks_from_offsets(offsets, np.array([100.0]), SIGMAS, np.zeros(1)), plain)
    # Each joint's variance area * (2 sigma)^2 = 4 px^2 grows by the spread, 21 px^2: exp(-25 / (2 * 25)).
    np.testing.assert_allclose(oks_from_offsets(offsets, np.array([100.0]), SIGMAS, np.array([21.0])),
                               [[math.exp(-0.5)]])
    assert plain[0, 0] < math.exp(-0.5)


def test_mahalanobis_with_identity_covariance_is_the_length():
    shifts = np.array([[[3.0, 4.0], [0.0, 0.0]]])
    np.testing.assert_allclose(mahalanobis_matrix(shifts, np.eye(2)[None]), [[5.0, 0.0]])
    np.testing.assert_allclose(mahalanobis_matrix(shifts, 4.0 * np.eye(2)[None]), [[2.5, 0.0]])
    along_axes = np.array([[[3.0, 0.0], [0.0, 8.0]]])  # each axis by its own variance
    np.testing.assert_allclose(mahalanobis_matrix(along_axes, np.diag([9.0, 16.0])[None]), [[1.0, 2.0]])


def test_assign_never_returns_a_forbidden_pair():
    cost = np.array([[0.1, FORBIDDEN], [FORBIDDEN, FORBIDDEN]])
    assert assign(cost) == [(0, 0)]
    assert assign(np.array([[0.9, 0.1], [0.1, 0.9]])) == [(0, 1), (1, 0)]


# ---------------------------------------------------------------- tag statistics


def test_tag_statistics_learn_from_unambiguous_pairs_only():
    config = TrackerConfig()
    oks = np.array([[0.9, 0.05, 0.0], [0.0, 0.8, 0.1]])
    distance = np.array([[0.2, 3.0, 5.0], [4.0, 0.4, 2.0]])
    stats = learn_tag_statistics(TagStatistics(), oks, distance, config)
    assert stats.samples == 2
    assert stats.same == pytest.approx((0.2 + 0.4) / 2)
    assert stats.other == pytest.approx(((3.0 + 5.0) / 2 + (4.0 + 2.0) / 2) / 2)
    # track 0 fits both poses: neither its pair nor track 1's (whose pose track 0 could claim) says anything
    ambiguous = np.array([[0.9, 0.5], [0.0, 0.8]])
    assert learn_tag_statistics(TagStatistics(), ambiguous, distance[:, :2], config).samples == 0
    clear = np.array([[0.9, 0.1], [0.0, 0.8]])
    assert learn_tag_statistics(TagStatistics(), clear, distance[:, :2], config).samples == 2
    assert learn_tag_statistics(TagStatistics(), oks[:1], distance[:1], config) == TagStatistics()


def test_running_means_follow_new_evidence_at_the_configured_memory():
    config = TrackerConfig(trust_memory=20.0)
    old = TagStatistics(same=1.0, other=4.0, samples=50)
    new = learn_tag_statistics(old, np.array([[0.9, 0.0], [0.0, 0.9]]), np.array([[0.0, 4.0], [4.0, 0.0]]), config)
    rate = 1.0 - 0.95 ** 2  # two pairs
    assert new.same == pytest.approx(1.0 - rate) and new.other == pytest.approx(4.0) and new.samples == 52


def test_trust_and_unit():
    config = TrackerConfig(tag_trust_samples=20, tag_trust_ratio=0.6)
    assert tag_trust(TagStatistics(0.1, 4.0, 19), config) == 0.0  # not enough evidence yet
    assert tag_trust(TagStatistics(0.1, 4.0, 20), config) == 1.0  # ratio 0.025: full trust
    assert tag_trust(TagStatistics(0.45, 1.0, 20), config) == pytest.approx(0.5)  # half way from 0.3 to 0.6
    assert tag_trust(TagStatistics(1.0, 1.0, 20), config) == 0.0  # tags mean nothing
    assert tag_unit(TagStatistics()) == 1.0
    assert tag_unit(LEARNED) == 0.5
    assert tag_unit(TagStatistics(0.0, 4.0, 30)) == pytest.approx(0.16)  # floored at 0.04 of the other distance


# ---------------------------------------------------------------- costs and gates


def _cues(n: int = 1, oks: float = 0.9, motion: float = 1.0):
    full = np.full((n, n), oks)
    return full, full, np.full((n, n), motion)


def test_match_cost_is_the_weighted_mean_and_each_gate_forbids():
    config = TrackerConfig()
    oks, iou, motion = _cues()
    cost = match_cost(oks, iou, motion, None, 0.0, LEARNED, config)
    assert cost[0, 0] == pytest.approx(1.0 - 0.9)
    with_tag = match_cost(oks, iou, motion, np.array([[0.5]]), 1.0, LEARNED, config)  # one unit: sim exp(-1/2)
    assert with_tag[0, 0] == pytest.approx((2 * 0.1 + (1.0 - math.exp(-0.5))) / 3)
    assert match_cost(oks, iou, np.array([[5.0]]), None, 0.0, LEARNED, config)[0, 0] == FORBIDDEN  # motion
    assert match_cost(np.array([[0.01]]), iou, motion, None, 0.0, LEARNED, config)[0, 0] == FORBIDDEN  # overlap
    assert match_cost(np.array([[0.5]]), iou, motion, None, 0.0, LEARNED, TrackerConfig(max_cost=0.4))[0, 0] == FORBIDDEN


def test_tag_gate_is_tight_for_a_track_seen_last_frame_and_widens_while_it_is_missed():
    config = TrackerConfig(tag_gate=10.0, tag_gate_fresh=6.0, tag_gate_ramp=0.3)
    np.testing.assert_allclose(match_gate_units(np.array([0.0, 0.15, 0.3, 5.0]), config), [6.0, 8.0, 10.0, 10.0])
    oks, iou, motion = _cues()
    distance = np.array([[4.0]])  # 8 learned units
    fresh = match_cost(oks, iou, motion, distance, 1.0, LEARNED, config, missed_for=np.array([0.0]))
    missed = match_cost(oks, iou, motion, distance, 1.0, LEARNED, config, missed_for=np.array([1.0]))
    assert fresh[0, 0] == FORBIDDEN and missed[0, 0] < FORBIDDEN
    untrusted = match_cost(oks, iou, motion, distance, 0.4, LEARNED, config, missed_for=np.array([0.0]))
    assert untrusted[0, 0] < FORBIDDEN  # gates on tags only once they are at least half trusted


def test_tag_gates_scale_with_the_learned_unit():
    config = TrackerConfig()
    oks, iou, motion = _cues()
    small = TagStatistics(same=0.05, other=0.4, samples=100)
    distance = np.array([[0.6]])
    assert match_cost(oks, iou, motion, distance, 1.0, small, config)[0, 0] == FORBIDDEN  # 12 units
    assert match_cost(oks, iou, motion, distance, 1.0, LEARNED, config)[0, 0] < FORBIDDEN  # 1.2 units


def test_reid_by_tag_by_reach_and_size():
    config = TrackerConfig()
    near = np.array([[0.5, 0.5, 1.5, 0.5]])
    sizes = np.log(np.array([[1.0, 1.0, 1.0, 3.0]]))
    distance = np.array([[0.5, 3.0, 0.5, 0.5]])  # 1 unit, 6 units (beyond reid's 4), close but far away, big
    weak = np.zeros(4, bool)
    cost = reid_cost(near, sizes, distance, weak, LEARNED, config)
    assert cost[0, 0] == pytest.approx(0.5 / 2.0 + 0.25 * 0.5)
    assert (cost[0, 1:] == FORBIDDEN).all()
    confident = np.ones(4, bool)  # a confident person also comes back on the looser matching gate
    assert reid_cost(near, sizes, distance, confident, LEARNED, config)[0, 1] < FORBIDDEN
    nan_tag = reid_cost(near, sizes, np.full((1, 4), np.nan), confident, LEARNED, config)
    assert (nan_tag == FORBIDDEN).all()  # a track without a tag cannot come back by one


def test_reid_without_tags_takes_only_confident_people_by_nearness():
    config = TrackerConfig()
    near = np.array([[0.2, 0.6, 0.2]])
    sizes = np.zeros((1, 3))
    cost = reid_cost(near, sizes, None, np.array([True, True, False]), LEARNED, config)
    np.testing.assert_allclose(cost[0, :2], [0.2, 0.6])
    assert cost[0, 2] == FORBIDDEN


# ---------------------------------------------------------------- motion


def test_box_measurement_round_trip():
    box = np.array([10.0, 20.0, 50.0, 120.0])
    z = box_to_measurement(box)
    np.testing.assert_allclose(z, [30.0, 70.0, math.sqrt(40 * 100), math.log(0.4)])
    np.testing.assert_allclose(measurement_to_box(z), box)


def test_motion_learns_a_constant_velocity():
    motion = BoxMotion(np.array([0.0, 0.0, 40.0, 100.0]), 0.1, 0.3)
    for frame in range(1, 30):
        motion.predict(MotionStep(0.1))
        motion.update(np.array([0.0, 0.0, 40.0, 100.0]) + [5.0 * frame, 0.0, 5.0 * frame, 0.0])
    assert motion.kf.x[4, 0] == pytest.approx(50.0, rel=0.05)  # 5 px per 0.1 s
    before = motion.centre.copy()
    motion.predict(MotionStep(1.0))
    assert motion.centre[0] - before[0] == pytest.approx(50.0, rel=0.05)


def test_kalman_prediction_does_not_depend_on_how_time_is_cut():
    box = np.array([100.0, 100.0, 160.0, 300.0])
    one, two = BoxMotion(box, 0.06, 1.0), BoxMotion(box, 0.06, 1.0)
    for motion in (one, two):
        motion.kf.x[4, 0] = 50.0
    one.predict(MotionStep(0.3))
    two.predict(MotionStep(0.1))
    two.predict(MotionStep(0.2))
    np.testing.assert_allclose(one.kf.x, two.kf.x)
    np.testing.assert_allclose(one.kf.P, two.kf.P, rtol=1e-9)


def test_motion_size_never_shrinks_through_zero():
    motion = BoxMotion(np.array([0.0, 0.0, 10.0, 10.0]), 0.1, 0.3)
    motion.kf.x[6, 0] = -100.0  # shrinking fast
    motion.predict(MotionStep(5.0))
    assert motion.size >= 4.0


# ---------------------------------------------------------------- One-Euro


def test_one_euro_keeps_a_still_pose_and_smooths_a_jump():
    params = OneEuroParams(min_cutoff=1.0, beta=0.0, d_cutoff=1.0)
    x = np.zeros((1, 2, 2))
    valid = np.ones((1, 2), bool)
    out, states = one_euro_step([None], x, valid, 0.0, np.ones(1), params)
    np.testing.assert_array_equal(out, x)
    out, states = one_euro_step(states, x, valid, 0.1, np.ones(1), params)
    np.testing.assert_array_equal(out, x)
    jumped = x + 10.0
    out, _ = one_euro_step(states, jumped, valid, 0.2, np.ones(1), params)
    alpha = 1.0 / (1.0 + 1.0 / (2 * math.pi * 1.0 * 0.1))
    np.testing.assert_allclose(out, alpha * 10.0)


def test_one_euro_restarts_a_joint_that_was_not_seen():
    params = OneEuroParams(min_cutoff=1.0, beta=0.0, d_cutoff=1.0)
    x = np.zeros((1, 2, 2))
    _, states = one_euro_step([None], x, np.array([[True, False]]), 0.0, np.ones(1), params)
    out, _ = one_euro_step(states, x + 10.0, np.ones((1, 2), bool), 0.1, np.ones(1), params)
    assert out[0, 0, 0] < 10.0  # filtered
    assert out[0, 1, 0] == 10.0  # came back: starts from the measurement, does not slide in
