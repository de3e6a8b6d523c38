"""Loss terms against values worked out by hand on two or three people."""

from __future__ import annotations

import math

import pytest
import torch

from tagtrack.training.losses import (
    LossWeights,
    cross_view_loss,
    heatmap_loss,
    pull_push_loss,
    scale_loss,
    total_loss,
)


def _tags_1x3() -> torch.Tensor:
    """K=2 keypoints, L=1, maps 1x3: channel of joint 0 = [1, 0, 3], joint 1 = [0, 2, 0]."""
    return torch.tensor([[[[[1.0, 0.0, 3.0]]], [[[0.0, 2.0, 0.0]]]]])  # [1,2,1,1,3]


def _joints(rows: list[list[tuple[int, int]]]) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.int64)  # [1,M,K,2]


def test_pull_push_two_people_hand_computed() -> None:
    # Person A: joint 0 at x=0 (flat 0, tag 1), joint 1 at x=1 (flat 1, tag 2) -> ref 1.5.
    # Person B: joint 0 at x=2 (flat 2, tag 3), joint 1 missing -> ref 3. Third slot empty.
    joints = _joints([[(0, 1), (1, 1)], [(2, 1), (0, 0)], [(0, 0), (0, 0)]])
    pull, push, reference, present = pull_push_loss(_tags_1x3(), joints, push_sigma=1.0)
    assert present.tolist() == [[True, True, False]]
    assert reference[0, :2, 0].tolist() == pytest.approx([1.5, 3.0])
    assert float(pull) == pytest.approx((0.25 + 0.0) / 2)  # A: (0.5^2 + 0.5^2)/2, B: 0
    assert float(push) == pytest.approx(math.exp(-(1.5**2) / 2))
    # A different sigma changes only push: exp(-d^2 / (2 * 0.5^2)).
    _, push_narrow, _, _ = pull_push_loss(_tags_1x3(), joints, push_sigma=0.5)
    assert float(push_narrow) == pytest.approx(math.exp(-(1.5**2) / 0.5))


def test_pull_push_three_people_vector_tags() -> None:
    # K=1, L=2, map 1x3: tags at x = (0,0), (3,4), (0,1); three people, one joint each.
    tags = torch.tensor([[0.0, 3.0, 0.0], [0.0, 4.0, 1.0]]).reshape(1, 1, 2, 1, 3)
    joints = _joints([[(0, 1)], [(1, 1)], [(2, 1)]])
    pull, push, _, _ = pull_push_loss(tags, joints)
    assert float(pull) == pytest.approx(0.0)
    squared = [25.0, 1.0, 18.0]  # |p0-p1|^2, |p0-p2|^2, |p1-p2|^2
    expected = sum(2 * math.exp(-d / 2) for d in squared) / 6
    assert float(push) == pytest.approx(expected)


def test_batch_average_counts_empty_images_as_zero() -> None:
    tags = torch.cat([_tags_1x3(), _tags_1x3()])
    joints = torch.cat([_joints([[(0, 1), (1, 1)], [(2, 1), (0, 0)]]), _joints([[(0, 0), (0, 0)]] * 2)])
    pull, push, _, _ = pull_push_loss(tags, joints)
    assert float(pull) == pytest.approx(0.125 / 2)
    assert float(push) == pytest.approx(math.exp(-1.125) / 2)


def test_heatmap_loss_respects_mask() -> None:
    predicted = torch.zeros(1, 2, 2, 2)
    target = torch.zeros(1, 2, 2, 2)
    target[0, 0, 0, 0] = 1.0  # error of 1 at pixel (0, 0) of joint 0
    target[0, 1, 1, 1] = 2.0  # error of 2 at pixel (1, 1) of joint 1
    mask = torch.ones(1, 2, 2)
    assert float(heatmap_loss(predicted, target, mask)) == pytest.approx((1 + 4) / 8)
    mask[0, 1, 1] = 0.0  # an ignore region over the second error
    assert float(heatmap_loss(predicted, target, mask)) == pytest.approx(1 / 8)


def test_scale_loss_hand_computed() -> None:
    reference = torch.tensor([[[1.0, 2.0], [1.0, 2.0], [5.0, 5.0]]])
    present = torch.tensor([[True, True, False]])
    scales = torch.tensor([[0.0, 1.0, 0.5]])
    off = 1 - math.exp(-0.5)
    # Person 0 (small): dimension 1 is off-scale -> 4 * off. Person 1 (large): dimension 0 -> 1 * off.
    assert float(scale_loss(reference, present, scales)) == pytest.approx((4 * off + 1 * off) / 2)
    assert float(scale_loss(reference[..., :1], present, scales)) == 0.0


def test_cross_view_pull_push_hand_computed() -> None:
    ref_a = torch.tensor([[[1.0], [3.0], [9.0]]])
    ref_b = torch.tensor([[[2.0], [5.0], [9.0]]])
    present_a = torch.tensor([[True, True, False]])
    present_b = torch.tensor([[True, True, False]])
    ids_a = torch.tensor([[10, 11, -1]])
    ids_b = torch.tensor([[11, 10, -1]])
    pull, push = cross_view_loss(ref_a, present_a, ids_a, ref_b, present_b, ids_b, push_sigma=1.0)
    # Same people: (a0, b1) = (1 - 5)^2 = 16, (a1, b0) = (3 - 2)^2 = 1.
    assert float(pull) == pytest.approx((16 + 1) / 2)
    # Different people: (a0, b0) d = 1, (a1, b1) d = 2.
    assert float(push) == pytest.approx((math.exp(-0.5) + math.exp(-2.0)) / 2)
    # A person missing from view b drops out of both terms.
    present_b = torch.tensor([[True, False, False]])
    pull, push = cross_view_loss(ref_a, present_a, ids_a, ref_b, present_b, ids_b)
    assert float(pull) == pytest.approx(1.0)
    assert float(push) == pytest.approx(math.exp(-0.5))


def test_total_loss_sums_stacks_and_applies_weights() -> None:
    tags = torch.cat([_tags_1x3(), _tags_1x3()])  # two views of one sample
    joints = torch.cat([_joints([[(0, 1), (1, 1)], [(2, 1), (0, 0)]])] * 2)
    ids = torch.tensor([[7, 8], [8, 7]])  # view b lists the same two people in swapped slots
    heatmaps = torch.zeros(2, 2, 1, 3)
    predicted = torch.full((2, 2, 1, 3), 0.5)
    masks = torch.ones(2, 1, 3)
    weights = LossWeights(heatmap=2.0, pull=0.1, push=0.01, cross_pull=1.0, cross_push=3.0)
    terms = total_loss([(predicted, tags), (predicted, tags)], heatmaps, masks, joints, weights, ids=ids, num_views=2)
    cross_pull = (1.5**2 + 1.5**2) / 2  # slots swap ids, so id 7's ref 1.5 in view a meets 3 in view b
    cross_push = 1.0  # different ids land on equal references: exp(0)
    per_stack = 2.0 * 0.25 + 0.1 * 0.125 + 0.01 * math.exp(-1.125) + 1.0 * cross_pull + 3.0 * cross_push
    assert float(terms.total) == pytest.approx(2 * per_stack)
    assert terms.parts["heatmap"] == pytest.approx(0.5)
    assert terms.parts["cross_pull"] == pytest.approx(2 * cross_pull)


def test_ideal_tag_maps_from_codec_give_zero_pull() -> None:
    """Indices from model.codec.joint_indices read back the tags an ideal network outputs."""
    import numpy as np

    from tagtrack.model.codec import joint_indices, render_tag_maps

    rng = np.random.default_rng(0)
    keypoints = np.concatenate([rng.uniform(2, 14, size=(2, 17, 2)), np.full((2, 17, 1), 2.0)], axis=2)
    keypoints[1, :, 0] += 16  # second person on the right half, no overlap
    person_tags = np.array([[0.0, 1.0], [3.0, -2.0]], dtype=np.float32)
    tags = torch.from_numpy(render_tag_maps(keypoints, person_tags, 16, 32, sigma=1.0))[None]
    joints = torch.from_numpy(joint_indices(keypoints, 16, 32, max_people=3))[None]
    pull, push, reference, present = pull_push_loss(tags, joints)
    assert float(pull) == pytest.approx(0.0, abs=1e-10)
    assert reference[0, :2].numpy() == pytest.approx(person_tags)
    assert float(push) == pytest.approx(math.exp(-18 / 2))  # |(0,1)-(3,-2)|^2 = 18
