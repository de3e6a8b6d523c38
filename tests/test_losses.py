"""Loss terms against values worked out by hand on two or three people."""

from __future__ import annotations

import math

import pytest
import torch

from tagtrack.training.losses import (
    LossOptions,
    LossWeights,
    cross_view_loss,
    embedding_sigma_factor,
    gather_person_tags,
    grouping_loss,
    heatmap_loss,
    pull_push_loss,
    render_heatmaps_torch,
    scale_loss,
    scale_truth_vectors,
    total_loss,
    wang_scale_loss,
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


def test_foreground_weight_counts_peak_pixels_more() -> None:
    target = torch.zeros(1, 1, 2, 2)
    target[0, 0, 0, 0] = 1.0
    target[0, 0, 0, 1] = 0.5
    predicted = torch.full((1, 1, 2, 2), 0.25)
    mask = torch.ones(1, 2, 2)
    plain = heatmap_loss(predicted, target, mask)
    assert float(plain) == pytest.approx((0.75 ** 2 + 0.25 ** 2 + 2 * 0.25 ** 2) / 4)
    weighted = heatmap_loss(predicted, target, mask, foreground=9.0)
    assert float(weighted) == pytest.approx((10 * 0.75 ** 2 + 5.5 * 0.25 ** 2 + 2 * 0.25 ** 2) / 4)
    assert float(heatmap_loss(target, target, mask, foreground=9.0)) == 0.0


def test_mirror_weight_charges_a_peak_on_the_other_sides_joint() -> None:
    # Two channels, a left/right pair: the left joint at pixel (0, 0), the right one at (1, 1).
    target = torch.zeros(1, 2, 2, 2)
    target[0, 0, 0, 0] = 1.0
    target[0, 1, 1, 1] = 1.0
    mask = torch.ones(1, 2, 2)
    confused = target.clone()
    confused[0, 0, 1, 1] = 0.5  # the left map also peaks on the right joint
    elsewhere = target.clone()
    elsewhere[0, 0, 1, 0] = 0.5  # the same error on a background pixel
    plain = float(heatmap_loss(confused, target, mask))
    assert plain == pytest.approx(float(heatmap_loss(elsewhere, target, mask)))
    mirrored = float(heatmap_loss(confused, target, mask, mirror=4.0, flip_index=(1, 0)))
    assert mirrored == pytest.approx(5 * plain)
    # A background error is charged as before, and a perfect prediction costs nothing.
    assert float(heatmap_loss(elsewhere, target, mask, mirror=4.0, flip_index=(1, 0))) == pytest.approx(plain)
    assert float(heatmap_loss(target, target, mask, mirror=4.0, flip_index=(1, 0))) == 0.0
    # Without the pair order (or a wrong one) the weight cannot be drawn.
    with pytest.raises(ValueError, match="flip_index"):
        heatmap_loss(confused, target, mask, mirror=4.0)
    with pytest.raises(ValueError, match="flip_index"):
        heatmap_loss(confused, target, mask, mirror=4.0, flip_index=(0, 2, 1))


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


# ---------------------------------------------------------------- Wang et al.'s form


def _two_people_l2() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """joint_tags [1,2,2,2], valid [1,2,2], scales [1,2]: person 0 small with tags (3,4), (1,0);
    person 1 large with one joint, tag (0,-2)."""
    joint_tags = torch.tensor([[[[3.0, 4.0], [1.0, 0.0]], [[0.0, -2.0], [9.0, 9.0]]]])
    valid = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    scales = torch.tensor([[0.0, 1.0]])
    return joint_tags, valid, scales


def test_scale_truth_one_hot_and_soft_bins() -> None:
    scales = torch.tensor([[0.0, 0.4, 1.0]])
    # L = 4: positions s*(L-1) = 0, 1.2, 3 -> bins 0, 1, 3.
    assert scale_truth_vectors(scales, 4, "onehot")[0].tolist() == [
        [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]
    soft = scale_truth_vectors(scales, 4, "soft")[0]
    assert soft.norm(dim=-1).tolist() == pytest.approx([1.0, 1.0, 1.0])
    raw = [math.exp(-((l - 1.2) ** 2) / 2) for l in range(4)]
    assert soft[1].tolist() == pytest.approx([v / math.sqrt(sum(r * r for r in raw)) for v in raw])
    with pytest.raises(ValueError, match="scale truth"):
        scale_truth_vectors(scales, 4, "gaussian")


def test_wang_scale_loss_hand_computed() -> None:
    joint_tags, valid, scales = _two_people_l2()
    # One-hot truth: person 0 -> (1,0), person 1 -> (0,1). Cosines: 3/5, 1, -1 (the (9,9) joint is not annotated).
    expected = ((1 - 0.6) + (1 - 1.0) + (1 - (-1.0))) / 3
    assert float(wang_scale_loss(joint_tags, valid, scales, "onehot")) == pytest.approx(expected)
    # Soft truth with L = 2: person 0 at position 0 -> (1, e^-0.5) / norm, person 1 -> (e^-0.5, 1) / norm.
    e = math.exp(-0.5)
    norm = math.sqrt(1 + e * e)
    cosines = [(0.6 + 0.8 * e) / norm, 1 / norm, -1 / norm]
    assert float(wang_scale_loss(joint_tags, valid, scales, "soft")) == pytest.approx(sum(1 - c for c in cosines) / 3)
    assert float(wang_scale_loss(joint_tags[..., :1], valid, scales)) == 0.0  # L = 1: no direction


def test_wang_scale_loss_is_zero_for_tags_along_their_truth() -> None:
    torch.manual_seed(0)
    scales = torch.rand(3, 5)
    valid = (torch.rand(3, 5, 17) > 0.3).float()
    for truth in ("onehot", "soft"):
        target = scale_truth_vectors(scales, 4, truth)
        lengths = torch.rand(3, 5, 17, 1) * 5 + 0.1  # any positive length: the loss sees directions only
        joint_tags = target[:, :, None, :] * lengths
        assert float(wang_scale_loss(joint_tags, valid, scales, truth)) == pytest.approx(0.0, abs=1e-6)
        # ... and positive for tags pointing elsewhere.
        assert float(wang_scale_loss(-joint_tags, valid, scales, truth)) > 1.0


def test_gradients_reach_every_annotated_joints_tag() -> None:
    """Each joint's own tag (its channel, at its location) gets a gradient from L_s; nothing else does."""
    torch.manual_seed(1)
    batch, keypoints, tag_dim, height, width, people = 2, 5, 4, 6, 7, 3
    tags = torch.randn(batch, keypoints, tag_dim, height, width, requires_grad=True)
    flat = torch.randperm(height * width)[: batch * people * keypoints].reshape(batch, people, keypoints)
    valid = torch.ones(batch, people, keypoints, dtype=torch.int64)
    valid[0, 2] = 0  # an empty slot
    valid[1, 0, 3] = 0  # a missing joint
    joints = torch.stack([flat, valid], dim=-1)
    joint_tags, validf = gather_person_tags(tags, joints)
    wang_scale_loss(joint_tags, validf, torch.rand(batch, people), "onehot").backward()
    grad = tags.grad.reshape(batch, keypoints, tag_dim, height * width).norm(dim=2)  # [B,K,hw]
    touched = torch.zeros_like(grad, dtype=torch.bool)
    for b in range(batch):
        for m in range(people):
            for k in range(keypoints):
                if valid[b, m, k]:
                    assert grad[b, k, flat[b, m, k]] > 0, (b, m, k)
                    touched[b, k, flat[b, m, k]] = True
    assert float(grad[~touched].abs().max()) == 0.0


def test_wang_grouping_pull_is_a_mean_over_joints_and_push_is_ours() -> None:
    # L=1. Person 0: joints 0, 2 (ref 1, squared deviations 1, 1); person 1: joints 1, 3, 5 (ref 4; 4, 0, 4).
    joint_tags = torch.tensor([[[[0.0], [0.0], [2.0]], [[2.0], [4.0], [6.0]]]])  # [1,2,3,1]
    valid = torch.tensor([[[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]])
    pull_person, push_person, _, _ = grouping_loss(joint_tags, valid, pull_mean="person")
    pull_joint, push_joint, _, _ = grouping_loss(joint_tags, valid, pull_mean="joint")
    assert float(pull_person) == pytest.approx((2 / 2 + 8 / 3) / 2)  # ours: mean of per-person means
    assert float(pull_joint) == pytest.approx((2 + 8) / 5)  # Wang et al.: 1/(NK) sum_n sum_k over the 5 joints
    assert float(push_joint) == float(push_person) == pytest.approx(math.exp(-9 / 2))
    # Everyone with all joints: the two readings agree.
    full = torch.ones_like(valid)
    assert float(grouping_loss(joint_tags, full, pull_mean="joint")[0]) == pytest.approx(
        float(grouping_loss(joint_tags, full, pull_mean="person")[0]))


def test_embedding_sigma_factor_reads_the_tag_direction() -> None:
    # L = 4, map long side 64: bins at sizes 0, 21.3, 42.7, 64 px -> factors 0.5, 0.667, 1.333, 2.
    gammas = [0.5, 64 / 3 / 32, 128 / 3 / 32, 2.0]
    reference = torch.tensor([[[3.0, 0, 0, 0], [0, 0, -2.0, 0], [1.0, 0, 0, 1.0], [0, 1.0, 1.0, 1.0], [0, 0, 0, 0]]])
    expected = [gammas[0], gammas[2], (gammas[0] + gammas[3]) / 2, sum(gammas[1:]) / 3, sum(gammas) / 4]
    assert embedding_sigma_factor(reference, 64)[0].tolist() == pytest.approx(expected)


def test_torch_heatmaps_match_the_codec() -> None:
    import numpy as np

    from tagtrack.model.codec import joint_indices, render_heatmaps

    rng = np.random.default_rng(3)
    keypoints = np.concatenate([rng.uniform(-2, 20, size=(3, 17, 2)), rng.integers(0, 2, size=(3, 17, 1))], axis=2)
    sigmas = np.array([0.7, 1.5, 3.0])
    expected = render_heatmaps(keypoints, 18, 22, sigmas)
    valid = torch.from_numpy(joint_indices(keypoints, 18, 22, max_people=4)[None, ..., 1])
    padded = torch.zeros(1, 4, 17, 3)
    padded[0, :3] = torch.from_numpy(keypoints)
    drawn = render_heatmaps_torch(padded, valid, torch.tensor([[0.7, 1.5, 3.0, 1.0]]), 18, 22)
    assert drawn[0].numpy() == pytest.approx(expected, abs=1e-6)


def test_total_loss_embedding_mode_draws_targets_with_gamma() -> None:
    """sigma_mode embedding: targets drawn with sigma * Gamma of the last stack's tags, for every stack."""
    size = 64  # L = 2 on a 64 px map: bin 0 (size 0) -> factor 0.5, bin 1 (size 64) -> 2
    keypoints = torch.zeros(1, 2, 2, 3)
    keypoints[0, 0] = torch.tensor([[13.0, 14.0, 1.0], [20.0, 16.0, 1.0]])  # person 0: both joints
    keypoints[0, 1, 0] = torch.tensor([42.0, 42.0, 1.0])  # person 1: joint 0 only
    valid = (keypoints[..., 2] > 0).long()
    joints = torch.stack([(keypoints[..., 1] * size + keypoints[..., 0]).long() * valid, valid], dim=-1)
    tags = torch.zeros(1, 2, 2, size, size)
    tags[:, :, 0] = 3.0  # every tag along bin 0 -> Gamma 0.5 ...
    tags[0, 0, :, 42, 42] = torch.tensor([1.0, 1.0])  # ... except person 1's: half and half -> 1.25
    first_stack_tags = torch.randn_like(tags)  # only the last stack's tags set the target
    heatmaps = torch.zeros(1, 2, size, size)
    masks = torch.ones(1, size, size)
    options = LossOptions(sigma_mode="embedding", sigma=2.0)
    predicted = torch.zeros(1, 2, size, size)
    terms = total_loss([(predicted, first_stack_tags), (predicted, tags)], heatmaps, masks, joints, LossWeights(),
                       options=options, keypoints=keypoints)
    target = render_heatmaps_torch(keypoints, valid, torch.tensor([[2.0 * 0.5, 2.0 * 1.25]]), size, size)
    assert terms.parts["heatmap"] == pytest.approx(2 * float((target**2).mean()))
    assert terms.parts["gamma"] == pytest.approx((0.5 + 1.25) / 2)
    with pytest.raises(ValueError, match="keypoints"):
        total_loss([(predicted, tags)], heatmaps, masks, joints, LossWeights(), options=options)


def test_total_loss_wang_form_uses_cosine_scale_and_joint_mean_pull() -> None:
    joint_tags, valid, scales = _two_people_l2()
    # Put the gathered tags on a 2x2 map, K=2, L=2: person 0 joints at flat 0 and 1, person 1 joint 0 at flat 2.
    tags = torch.zeros(1, 2, 2, 2, 2)
    tags[0, 0, :, 0, 0] = joint_tags[0, 0, 0]
    tags[0, 1, :, 0, 1] = joint_tags[0, 0, 1]
    tags[0, 0, :, 1, 0] = joint_tags[0, 1, 0]
    joints = torch.tensor([[[[0, 1], [1, 1]], [[2, 1], [0, 0]]]])
    weights = LossWeights(heatmap=0.0, pull=1.0, push=0.0, scale=1.0)
    zeros = torch.zeros(1, 2, 2, 2)
    ours = total_loss([(zeros, tags)], zeros, torch.ones(1, 2, 2), joints, weights, scales=scales)
    wang = total_loss([(zeros, tags)], zeros, torch.ones(1, 2, 2), joints, weights, scales=scales,
                      options=LossOptions(scale_loss="wang"))
    assert wang.parts["scale"] == pytest.approx(float(wang_scale_loss(joint_tags, valid, scales)))
    # Person 0's reference is (2,2): both joints deviate by |(1,2)|^2 = 5; person 1 has one joint (0).
    assert wang.parts["pull"] == pytest.approx((5.0 + 5.0 + 0.0) / 3)
    assert ours.parts["pull"] == pytest.approx((5.0 + 0.0) / 2)
    # Ours: person 0 (size 0) keeps dimension 0; its reference's dimension 1 (2^2) is penalised.
    assert ours.parts["scale"] == pytest.approx(4 * (1 - math.exp(-0.5)) / 2)
    assert ours.parts["push"] == wang.parts["push"]
