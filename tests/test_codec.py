"""The heatmap + tag codec: targets have the documented shape and values, and decoding maps
rendered from known people gives back exactly those people."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tagtrack.model.codec import (
    DecodeConfig,
    decode,
    joint_indices,
    _find_candidates,
    pairwise_oks,
    render_heatmaps,
    render_tag_maps,
)
from tagtrack.model.schema import COCO17
from tagtrack.model.synthetic_maps import synthetic_maps, synthetic_people
from tests.conftest import assert_same_people

# Quarter-pixel adjustment leaves at most a quarter pixel of error on a clean gaussian.
QUARTER = 0.25 + 1e-6


# ------------------------------------------------------------------------------------ encode


def test_render_heatmaps_peak_sigma_and_max_over_people():
    keypoints = np.zeros((2, 17, 3))
    keypoints[0, 0] = (10.0, 20.0, 1)
    keypoints[1, 0] = (30.0, 5.0, 2)
    keypoints[0, 1] = (40.0, 40.0, 0)  # unlabelled: not drawn
    keypoints[1, 2] = (70.0, 3.0, 1)  # outside a 64-wide map: not drawn
    heatmaps = render_heatmaps(keypoints, 48, 64, sigma=np.array([1.5, 3.0]))
    assert heatmaps.shape == (17, 48, 64) and heatmaps.dtype == np.float32
    assert heatmaps[0, 20, 10] == 1.0 and heatmaps[0, 5, 30] == 1.0
    assert heatmaps[0, 20, 11] == pytest.approx(np.exp(-1 / (2 * 1.5**2)), rel=1e-6)
    assert heatmaps[0, 5, 31] == pytest.approx(np.exp(-1 / (2 * 3.0**2)), rel=1e-6)
    assert heatmaps[1].max() == 0 and heatmaps[2].max() == 0 and heatmaps[3:].max() == 0
    assert heatmaps[0, 20, 10 + 5] == 0  # cut at 3 sigma (4.5 px for the first person)

    overlapping = keypoints.copy()
    overlapping[1, 0] = (12.0, 20.0, 1)
    both = render_heatmaps(overlapping, 48, 64, 2.0)
    alone = [render_heatmaps(overlapping[i:i + 1], 48, 64, 2.0) for i in range(2)]
    np.testing.assert_array_equal(both, np.maximum(*alone))


def test_render_heatmaps_subpixel_peak_is_at_the_rounded_location():
    keypoints = np.zeros((1, 17, 3))
    keypoints[0, :, :2] = (20.4, 9.6)
    keypoints[0, :, 2] = 1
    heatmaps = render_heatmaps(keypoints, 32, 32, 2.0)
    assert np.unravel_index(heatmaps[5].argmax(), (32, 32)) == (10, 20)


def test_joint_indices_flat_index_valid_flag_and_cap():
    keypoints = np.zeros((3, 17, 3))
    keypoints[0, 0] = (3.4, 2.6, 1)  # rounds to x=3, y=3
    keypoints[0, 1] = (3.0, 2.0, 0)  # unlabelled
    keypoints[1, 4] = (-0.6, 1.0, 1)  # rounds to x=-1: outside
    keypoints[1, 5] = (15.4, 7.0, 1)  # last column of a 16-wide map
    keypoints[2, 0] = (1.0, 1.0, 1)  # third person, dropped by max_people=2
    indices = joint_indices(keypoints, 8, 16, max_people=2)
    assert indices.shape == (2, 17, 2) and indices.dtype == np.int64
    assert tuple(indices[0, 0]) == (3 * 16 + 3, 1)
    assert indices[0, 1, 1] == 0 and indices[1, 4, 1] == 0
    assert tuple(indices[1, 5]) == (7 * 16 + 15, 1)
    assert indices[:, :, 1].sum() == 2
    padded = joint_indices(keypoints[:1], 8, 16, max_people=4)
    assert padded.shape == (4, 17, 2) and padded[1:].sum() == 0


def test_render_tag_maps_hold_the_strongest_person_tag():
    keypoints = np.zeros((2, 17, 3))
    keypoints[0, 0] = (10.0, 10.0, 1)
    keypoints[1, 0] = (14.0, 10.0, 1)
    tags = render_tag_maps(keypoints, np.array([[1.0, 2.0], [5.0, 6.0]]), 24, 24, 2.0, background=-1.0)
    assert tags.shape == (17, 2, 24, 24)
    np.testing.assert_array_equal(tags[0, :, 10, 11], [1.0, 2.0])
    np.testing.assert_array_equal(tags[0, :, 10, 13], [5.0, 6.0])
    np.testing.assert_array_equal(tags[0, :, 0, 0], [-1.0, -1.0])
    np.testing.assert_array_equal(tags[1], -1.0)


# ------------------------------------------------------------------------------------ decode pieces


def reference_candidates(heatmaps: np.ndarray, tags: np.ndarray, config: DecodeConfig) -> list[tuple]:
    """The decoder's candidate search as the papers write it: torch max-pool NMS, the threshold, then the
    top_k of each joint type by score (ties: row-major order). (joint, y, x, score, tag) per candidate."""
    kernel = config.nms_kernel
    pooled = torch.nn.functional.max_pool2d(torch.from_numpy(heatmaps)[None], kernel, stride=1,
                                            padding=kernel // 2)[0].numpy()
    found = []
    for joint in range(heatmaps.shape[0]):
        ys, xs = np.nonzero((heatmaps[joint] == pooled[joint]) & (heatmaps[joint] > config.detection_threshold))
        order = np.argsort(-heatmaps[joint, ys, xs], kind="stable")[:config.top_k]
        found += [(joint, ys[i], xs[i], heatmaps[joint, ys[i], xs[i]], tuple(tags[joint, :, ys[i], xs[i]]))
                  for i in order]
    return found


@pytest.mark.parametrize("kernel, top_k, threshold", [(5, 30, 0.1), (3, 4, 0.5), (1, 30, 0.9)])
def test_candidate_search_is_max_pool_nms_then_top_k(kernel, top_k, threshold):
    rng = np.random.default_rng(1)
    heatmaps = rng.random((17, 20, 30)).astype(np.float32)
    tags = rng.normal(size=(17, 2, 20, 30)).astype(np.float32)
    config = DecodeConfig(nms_kernel=kernel, top_k=top_k, detection_threshold=threshold)
    candidates = _find_candidates(heatmaps, tags, config)
    found = [(j, y, x, s, tuple(t)) for j, y, x, s, t in zip(candidates.joint, candidates.y, candidates.x,
                                                            candidates.score, candidates.tag)]
    assert found == reference_candidates(heatmaps, tags, config)
    assert list(candidates.starts) == list(np.searchsorted(candidates.joint, np.arange(18)))
    single = _find_candidates(heatmaps[:1], tags[:1], config)  # one joint type: cv2 drops the channel axis
    assert single.joint.size == sum(1 for c in reference_candidates(heatmaps[:1], tags[:1], config))


def test_pairwise_oks_is_one_for_identical_people_and_small_for_far_ones():
    keypoints = np.zeros((3, 17, 3), dtype=np.float32)
    keypoints[0, :, :2] = np.random.default_rng(0).uniform(0, 30, (17, 2))
    keypoints[0, :, 2] = 1
    keypoints[1] = keypoints[0]
    keypoints[2] = keypoints[0]
    keypoints[2, :, 0] += 100
    oks = pairwise_oks(keypoints, COCO17.sigmas_array())
    assert oks[0, 1] == pytest.approx(1.0)
    assert oks[0, 2] < 1e-3


# ------------------------------------------------------------------------------------ decode


@pytest.mark.parametrize("tag_dim, tag_noise", [(1, 0.3), (8, 0.12)])
@pytest.mark.parametrize("refine", [False, True])
def test_decode_returns_exactly_the_rendered_people(tag_dim, tag_noise, refine):
    rng = np.random.default_rng(7 + tag_dim)
    height, width = 72, 96
    truth, person_tags = synthetic_people(rng, 8, height, width, tag_dim, body_height=(18, 50), missing_fraction=0.2)
    assert (truth[:, :, 2] == 0).any(), "the scene must have missing joints"
    heatmaps, tags = synthetic_maps(truth, person_tags, height, width, tag_noise=tag_noise, rng=rng)
    # Refinement may only fill joints whose tag matches; the rendered people have none to fill.
    config = DecodeConfig(refine=refine, refine_max_tag_distance=1.0)
    poses = decode(heatmaps, tags, COCO17, config)
    assert_same_people(poses, truth, person_tags, QUARTER)
    scores = [pose.score for pose in poses]
    assert scores == sorted(scores, reverse=True)
    for pose, in zip(poses):
        found = pose.keypoints[:, 2] > 0
        assert pose.score == pytest.approx(pose.keypoints[:, 2].sum() / 17, rel=1e-5)
        np.testing.assert_allclose(pose.box, [*pose.keypoints[found, :2].min(0), *pose.keypoints[found, :2].max(0)])
        assert pose.tag.shape == (tag_dim,)


def test_people_whose_tags_differ_by_more_than_the_threshold_are_separated():
    rng = np.random.default_rng(3)
    truth, _ = synthetic_people(rng, 1, 64, 64)
    truth[:, :, 2] = 1
    tags = np.zeros((1, 1), dtype=np.float32)
    heatmaps, tag_maps = synthetic_maps(truth, tags, 64, 64)
    lower_body = [11, 12, 13, 14, 15, 16]
    tag_maps[lower_body] += 1.6  # the legs look like another person's
    config = DecodeConfig(refine=False)
    poses = decode(heatmaps, tag_maps, COCO17, config)
    assert sorted(int((pose.keypoints[:, 2] > 0).sum()) for pose in poses) == [6, 11]
    merged = decode(heatmaps, tag_maps, COCO17, DecodeConfig(refine=False, tag_threshold=2.0))
    assert len(merged) == 1 and (merged[0].keypoints[:, 2] > 0).all()


def _two_walkers_with_alternating_strength() -> tuple[np.ndarray, np.ndarray]:
    """Two people side by side; which one has the stronger peak alternates from joint type to joint type."""
    rng = np.random.default_rng(11)
    truth, _ = synthetic_people(rng, 1, 48, 40, body_height=(30, 30), missing_fraction=0.0)
    truth = np.concatenate([truth, truth])
    truth[1, :, 0] += 48  # the second person stands 48 map pixels to the right
    strength = np.where(np.arange(17) % 2 == 0, 1.0, 0.6)
    heatmaps = np.maximum(render_heatmaps(truth[:1], 48, 96) * strength[:, None, None],
                          render_heatmaps(truth[1:], 48, 96) * (1.6 - strength)[:, None, None])
    return truth, heatmaps


def test_people_with_equally_close_tags_are_grouped_by_position():
    # Weakly trained tags: both people carry almost the same tag (one rounding step), so pose-ae's cost
    # ties and the detection score decides; the spatial term gives each joint to the nearer person.
    truth, heatmaps = _two_walkers_with_alternating_strength()
    tag_maps = render_tag_maps(truth, np.array([[0.0], [0.2]], np.float32), 48, 96)
    config = DecodeConfig(refine=False)
    poses = decode(heatmaps, tag_maps, COCO17, config)
    assert_same_people(poses, truth, np.array([[0.0], [0.2]]), QUARTER)
    mixed = decode(heatmaps, tag_maps, COCO17, DecodeConfig(refine=False, spatial_weight=0.0))
    spans = [np.ptp(pose.keypoints[pose.keypoints[:, 2] > 0, 0]) for pose in mixed]
    assert max(spans) > 40, "without the spatial term the tie is broken by score and the people mix"


def test_tags_outweigh_position():
    # Each person's right-side joints (odd indices) sit nearer the other person but carry their own
    # person's tag, two rounding steps away: the tags decide.
    truth, _ = _two_walkers_with_alternating_strength()
    crossed = truth.copy()
    right_side = np.arange(1, 17, 2)
    crossed[0, right_side, 0] += 20
    crossed[1, right_side, 0] -= 20
    heatmaps = np.maximum(render_heatmaps(crossed[:1], 48, 96), render_heatmaps(crossed[1:], 48, 96))
    person_tags = np.array([[0.0], [2.0]], np.float32)
    tag_maps = render_tag_maps(crossed, person_tags, 48, 96)
    poses = decode(heatmaps, tag_maps, COCO17, DecodeConfig(refine=False))
    assert_same_people(poses, crossed, person_tags, QUARTER)


def test_refine_fills_a_weak_joint_that_carries_the_person_tag():
    rng = np.random.default_rng(4)
    truth, tags = synthetic_people(rng, 3, 64, 80, missing_fraction=0.0)
    heatmaps, tag_maps = synthetic_maps(truth, tags, 64, 80)
    heatmaps[9] *= 0.05  # left wrists below the detection threshold
    plain = decode(heatmaps, tag_maps, COCO17, DecodeConfig(refine=False))
    assert all(pose.keypoints[9, 2] == 0 for pose in plain)
    refined = decode(heatmaps, tag_maps, COCO17, DecodeConfig(refine=True))
    weak = truth.copy()
    assert_same_people(refined, weak, tags, QUARTER)
    assert all(pose.keypoints[9, 2] == pytest.approx(0.05, abs=0.01) for pose in refined)


def test_refine_without_a_tag_limit_fills_every_joint_as_in_the_papers():
    rng = np.random.default_rng(5)
    truth, tags = synthetic_people(rng, 3, 64, 80, missing_fraction=0.3)
    heatmaps, tag_maps = synthetic_maps(truth, tags, 64, 80)
    poses = decode(heatmaps, tag_maps, COCO17, DecodeConfig(refine=True, refine_max_tag_distance=None))
    assert len(poses) == 3
    limited = decode(heatmaps, tag_maps, COCO17, DecodeConfig(refine=True, refine_max_tag_distance=1.0))
    filled = sum(int((pose.keypoints[:, 2] > 0).sum()) for pose in poses)
    assert filled > sum(int((pose.keypoints[:, 2] > 0).sum()) for pose in limited)


def test_refinement_within_reach_does_not_take_a_joint_from_across_the_map():
    # Two people far apart with tags in one rounding step (a weakly trained tag space); the left
    # person's wrist peak is too weak to be a candidate. The whole-map search takes the right person's
    # wrist; within reach it takes the left person's own weak wrist.
    truth, _ = _two_walkers_with_alternating_strength()
    truth[1, :, 0] += 40  # 88 map pixels apart on a 136-wide map
    heatmaps = np.maximum(render_heatmaps(truth[:1], 48, 136), render_heatmaps(truth[1:], 48, 136))
    left_wrist = 9
    heatmaps[left_wrist] = np.maximum(render_heatmaps(truth[:1], 48, 136)[left_wrist] * 0.05,
                                      render_heatmaps(truth[1:], 48, 136)[left_wrist])
    tag_maps = render_tag_maps(truth, np.array([[0.0], [0.2]], np.float32), 48, 136)
    whole_map = decode(heatmaps, tag_maps, COCO17, DecodeConfig(refine_reach=None))
    within_reach = decode(heatmaps, tag_maps, COCO17, DecodeConfig())
    for poses in (whole_map, within_reach):
        assert len(poses) == 2
    left_person = min(whole_map, key=lambda pose: pose.keypoints[0, 0])
    np.testing.assert_allclose(left_person.keypoints[left_wrist, :2], truth[1, left_wrist, :2], atol=QUARTER)
    left_person = min(within_reach, key=lambda pose: pose.keypoints[0, 0])
    np.testing.assert_allclose(left_person.keypoints[left_wrist, :2], truth[0, left_wrist, :2], atol=QUARTER)
    assert left_person.keypoints[left_wrist, 2] == pytest.approx(0.05, abs=0.01)


def test_a_plateau_peak_does_not_make_a_duplicate_person():
    rng = np.random.default_rng(6)
    truth, tags = synthetic_people(rng, 1, 64, 64, missing_fraction=0.0)
    truth[0, 0, 0] = np.floor(truth[0, 0, 0]) + 0.5  # the nose falls between two pixels: two equal peaks
    heatmaps, tag_maps = synthetic_maps(truth, tags, 64, 64)
    candidates = _find_candidates(heatmaps, tag_maps, DecodeConfig())
    assert (candidates.joint == 0).sum() == 2
    # With the papers' whole-map refinement the one-nose fragment is completed into a copy of the
    # person, which the OKS de-duplication removes.
    kept = decode(heatmaps, tag_maps, COCO17, DecodeConfig(duplicate_oks_threshold=2.0, refine_reach=None))
    assert len(kept) == 2
    poses = decode(heatmaps, tag_maps, COCO17, DecodeConfig(refine_reach=None))
    assert len(poses) == 1 and (poses[0].keypoints[:, 2] > 0).all()


def test_cap_on_people_keeps_the_best_and_min_score_drops_weak_people():
    rng = np.random.default_rng(8)
    truth, tags = synthetic_people(rng, 6, 96, 96, missing_fraction=0.0)
    heatmaps, tag_maps = synthetic_maps(truth, tags, 96, 96)
    strength = np.linspace(1.0, 0.5, 6)
    rendered = [synthetic_maps(truth[i:i + 1], tags[i:i + 1], 96, 96)[0] * strength[i] for i in range(6)]
    heatmaps = np.max(np.stack(rendered), axis=0)
    capped = decode(heatmaps, tag_maps, COCO17, DecodeConfig(max_people=3))
    assert len(capped) == 3
    # The three strongest people, strongest first (their tags say who is who).
    np.testing.assert_allclose(np.stack([pose.tag for pose in capped]), tags[:3], atol=1e-5)
    strong = decode(heatmaps, tag_maps, COCO17, DecodeConfig(min_person_score=0.75))
    assert len(strong) == int((strength >= 0.75).sum())


def test_quarter_pixel_adjustment_moves_toward_the_true_location():
    truth = np.zeros((1, 17, 3))
    truth[0, :, :2] = np.random.default_rng(9).uniform(8, 40, (17, 2))
    truth[0, :, 2] = 1
    heatmaps, tags = synthetic_maps(truth, np.zeros((1, 1), np.float32), 48, 48)
    rounded = np.floor(truth[0, :, :2] + 0.5)
    plain = decode(heatmaps, tags, COCO17, DecodeConfig(adjust=False))[0].keypoints[:, :2]
    np.testing.assert_array_equal(plain, rounded)
    adjusted = decode(heatmaps, tags, COCO17, DecodeConfig(adjust=True))[0].keypoints[:, :2]
    np.testing.assert_array_equal(np.abs(adjusted - rounded), 0.25)
    np.testing.assert_array_equal(np.sign(adjusted - rounded), np.sign(truth[0, :, :2] - rounded))


def test_quadratic_peak_fit_finds_a_gaussians_centre_between_pixels():
    truth = np.zeros((1, 17, 3))
    truth[0, :, :2] = np.random.default_rng(9).uniform(8, 40, (17, 2))
    truth[0, :, 2] = 1
    heatmaps, tags = synthetic_maps(truth, np.zeros((1, 1), np.float32), 48, 48)
    fitted = decode(heatmaps, tags, COCO17, DecodeConfig(peak_fit="quadratic"))[0].keypoints[:, :2]
    quarter = decode(heatmaps, tags, COCO17, DecodeConfig())[0].keypoints[:, :2]
    # The renderer draws each Gaussian at the sub-pixel location, so the fit recovers it closely.
    assert np.abs(fitted - truth[0, :, :2]).max() < 0.05
    assert np.abs(quarter - truth[0, :, :2]).mean() > 2 * np.abs(fitted - truth[0, :, :2]).mean()
    # Refined (filled) joints are fitted too: a weak joint (peak 0.3, under the detection threshold) is
    # not a candidate, refinement fills it from the maps, and the fit lands near the truth.
    heatmaps[5] *= 0.3
    person = decode(heatmaps, tags, COCO17, DecodeConfig(peak_fit="quadratic", detection_threshold=0.5))[0]
    assert 0 < person.keypoints[5, 2] < 0.5  # filled by refinement: no candidate reaches 0.5 there
    assert np.abs(person.keypoints[5, :2] - truth[0, 5, :2]).max() < 0.05
    with pytest.raises(ValueError, match="peak_fit must be one of"):
        DecodeConfig(peak_fit="cubic")


def _hedged_person_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One upright person facing the camera (their left joints at larger x) whose left and right maps both
    peak on the right joint (1.0) and less on the left one (0.8): a network that cannot tell the sides."""
    truth = np.zeros((1, 17, 3))
    truth[0, :, 2] = 1
    truth[0, :, :2] = [(32, 10), (34, 9), (30, 9), (36, 10), (28, 10), (38, 18), (26, 18), (40, 26), (24, 26),
                       (41, 34), (23, 34), (36, 36), (28, 36), (36, 46), (28, 46), (32, 56), (32, 56)]
    heatmaps = render_heatmaps(truth, 64, 64, 1.5)
    for k, m in enumerate(COCO17.flip_index):
        if k != m:  # both channels of a pair: 1.0 at the right joint, 0.8 at the left one
            right, left = (k, m) if k % 2 == 0 else (m, k)
            one = np.zeros((1, 17, 3))
            one[0, k] = truth[0, right]
            strong = render_heatmaps(one, 64, 64, 1.5)[k]
            one[0, k] = truth[0, left]
            weak = render_heatmaps(one, 64, 64, 1.5)[k]
            heatmaps[k] = np.maximum(strong, 0.8 * weak)
    return truth, heatmaps, np.zeros((17, 1, 64, 64), np.float32)


def test_split_mirror_pairs_puts_hedged_left_and_right_joints_on_their_two_peaks():
    truth, heatmaps, tags = _hedged_person_maps()
    collapsed = decode(heatmaps, tags, COCO17, DecodeConfig(adjust=False))[0].keypoints
    assert np.array_equal(collapsed[5, :2], collapsed[6, :2]) and np.array_equal(collapsed[11, :2], collapsed[12, :2])
    person = decode(heatmaps, tags, COCO17, DecodeConfig(adjust=False, split_mirror_pairs=True))[0].keypoints
    # Every pair moved apart onto its two peaks, the left joint on the person's left (facing the camera);
    # the ankles were one blob (both on one spot in the truth) and stay together.
    np.testing.assert_allclose(person[:15, :2], truth[0, :15, :2], atol=0.01)
    np.testing.assert_allclose(person[15, :2], person[16, :2])
    assert person[5, 2] == pytest.approx(0.8, abs=0.01) and person[6, 2] == pytest.approx(1.0, abs=0.01)
    # A second peak too weak (below mirror_ratio of the spot) or whose tag is another person's is not taken.
    weak = decode(heatmaps, tags, COCO17, DecodeConfig(adjust=False, split_mirror_pairs=True, mirror_ratio=0.95))[0]
    assert np.array_equal(weak.keypoints[5, :2], weak.keypoints[6, :2])
    other = tags.copy()
    other[:, :, :, 33:] = 5.0  # the image's right part (every left joint's peak) carries another tag
    split = decode(heatmaps, other, COCO17, DecodeConfig(adjust=False, split_mirror_pairs=True))
    assert np.array_equal(split[0].keypoints[5, :2], split[0].keypoints[6, :2])


def test_empty_maps_decode_to_no_people_and_bad_shapes_are_refused():
    assert decode(np.zeros((17, 16, 16)), np.zeros((17, 1, 16, 16)), COCO17) == []
    with pytest.raises(ValueError):
        decode(np.zeros((5, 16, 16)), np.zeros((5, 1, 16, 16)), COCO17)
    with pytest.raises(ValueError):
        decode(np.zeros((17, 16, 16)), np.zeros((17, 1, 8, 16)), COCO17)


def test_bench_decode_command_prints_a_table(capsys):
    from tagtrack import main

    assert main.main(["bench", "decode", "--people", "0", "3", "--tag-dims", "2", "--size", "64", "--repeats", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("CPU:") and "SIMD" in lines[0] and "64x64" in lines[1]
    rows = [line.split() for line in lines[3:]]
    assert [(row[0], row[1], row[2]) for row in rows] == [("2", "0", "0"), ("2", "3", "3")]
    assert all(float(row[3]) > 0 and float(row[6]) > 0 and row[-1] == "yes" for row in rows)


@pytest.mark.parametrize("tag_dim", [1, 4, 8])
@pytest.mark.parametrize("refine_reach", [1.0, 0.3, None])
def test_decode_gives_the_same_people_as_the_decoder_before_issue_17(tag_dim, refine_reach):
    """The faster decoder (refinement per person over its window, broadcast nearest-joint gaps, boxes for all
    people at once) against the code it replaced (bench.baseline), to the bit, on crowded noisy scenes."""
    from tagtrack.bench.baseline import baseline_decode
    from tagtrack.model.pose import same_poses

    config = DecodeConfig(refine_reach=refine_reach, refine_max_tag_distance=1.0 if refine_reach == 0.3 else None)
    for seed in range(4):
        rng = np.random.default_rng(seed)
        keypoints, tags = synthetic_people(rng, 12, 64, 96, tag_dim, body_height=(8.0, 30.0), missing_fraction=0.3)
        heatmaps, tag_maps = synthetic_maps(keypoints, tags, 64, 96, tag_noise=0.5, rng=rng)
        heatmaps += rng.uniform(0.0, 0.15, heatmaps.shape).astype(np.float32)  # clutter: false candidates
        decoded = decode(heatmaps, tag_maps, COCO17, config)
        assert len(decoded) >= 12 and any(pose.keypoints[:, 2].min() < 0.2 for pose in decoded)  # refinement ran
        assert same_poses(decoded, baseline_decode(heatmaps, tag_maps, COCO17, config))
