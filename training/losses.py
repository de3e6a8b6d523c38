"""Training losses: masked heatmap MSE, associative-embedding pull/push, scale loss, cross-view pull/push.

Shapes used throughout (B images, K keypoints, L tag dims, M people slots, h x w output maps):
  heatmaps [B,K,h,w], tags [B,K,L,h,w], masks [B,h,w] (1 = supervised, 0 = ignore),
  joints int64 [B,M,K,2] = (flat index y*w + x, valid) as produced by `model.codec.joint_indices`;
  joint k's tag is read from joint k's own tag channel at that index.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossWeights:
    """Weights of each term in the total loss. Papers (Newell et al., pose-ae-train): 1, 1e-3, 1e-3."""

    heatmap: float = 1.0
    pull: float = 1e-3
    push: float = 1e-3
    scale: float = 0.0  # Wang et al. scale regularisation; 0 switches it off
    cross_pull: float = 1e-3
    cross_push: float = 1e-3
    push_sigma: float = 1.0  # push = exp(-d^2 / (2 sigma^2))


def heatmap_loss(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all pixels, with ignored pixels (mask 0) contributing nothing."""
    squared = (predicted.float() - target.float()) ** 2 * mask[:, None].float()
    return squared.mean()


def gather_person_tags(tags: torch.Tensor, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tags at each annotated joint: returns (joint_tags [B,M,K,L], valid [B,M,K] float)."""
    batch, num_keypoints, tag_dim, height, width = tags.shape
    flat = tags.float().reshape(batch, num_keypoints, tag_dim, height * width)
    index = joints[..., 0].clamp(0, height * width - 1).transpose(1, 2)  # [B,K,M]
    people = index.shape[2]
    gathered = torch.gather(flat, 3, index[:, :, None, :].expand(batch, num_keypoints, tag_dim, people))
    joint_tags = gathered.permute(0, 3, 1, 2)  # [B,M,K,L]
    valid = (joints[..., 1] > 0).float()
    return joint_tags, valid


def reference_tags(joint_tags: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each person's reference tag (mean of their joints' tags) [B,M,L] and presence [B,M] (bool)."""
    count = valid.sum(dim=2)  # [B,M]
    present = count > 0
    reference = (joint_tags * valid[..., None]).sum(dim=2) / count.clamp(min=1)[..., None]
    return reference, present


def _pairwise_push(a: torch.Tensor, b: torch.Tensor, pair_mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per image mean of exp(-|a_i - b_j|^2 / (2 sigma^2)) over the masked pairs; 0 where none. a,b [B,M,L]."""
    squared = ((a[:, :, None, :] - b[:, None, :, :]) ** 2).sum(dim=-1)  # [B,M,M]
    values = torch.exp(-squared / (2.0 * sigma * sigma)) * pair_mask
    return values.sum(dim=(1, 2)) / pair_mask.sum(dim=(1, 2)).clamp(min=1)


def pull_push_loss(
    tags: torch.Tensor, joints: torch.Tensor, push_sigma: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Associative-embedding grouping loss, averaged over the batch.

    pull: per person the mean over their joints of |tag - reference|^2, averaged over the image's people.
    push: mean over ordered pairs of different people of exp(-|ref_i - ref_j|^2 / (2 sigma^2)).
    Images without people (or with one, for push) contribute 0. Returns (pull, push, reference, present).
    """
    joint_tags, valid = gather_person_tags(tags, joints)
    reference, present = reference_tags(joint_tags, valid)
    squared = ((joint_tags - reference[:, :, None, :]) ** 2).sum(dim=-1)  # [B,M,K]
    per_person = (squared * valid).sum(dim=2) / valid.sum(dim=2).clamp(min=1)
    presentf = present.float()
    pull = (per_person * presentf).sum(dim=1) / presentf.sum(dim=1).clamp(min=1)
    people = presentf.shape[1]
    different = presentf[:, :, None] * presentf[:, None, :] * (1.0 - torch.eye(people, device=tags.device))
    push = _pairwise_push(reference, reference, different, push_sigma)
    return pull.mean(), push.mean(), reference, present


def scale_loss(reference: torch.Tensor, present: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Scale regularisation of multi-dimensional tags (after Wang et al., ECCV 2022).

    A person's normalised size s in [0, 1] picks a position s*(L-1) along the tag dimensions; the
    person's reference tag is pushed to be small away from it (weight 1 - exp(-(l - s(L-1))^2 / 2)).
    This makes tags sparse and decorrelates their dimensions by instance scale. reference [B,M,L],
    present [B,M] bool, scales [B,M]. Mean over present people; 0 for L == 1 or no people.
    """
    tag_dim = reference.shape[-1]
    presentf = present.float()
    if tag_dim == 1 or presentf.sum() == 0:
        return reference.sum() * 0.0
    positions = torch.arange(tag_dim, device=reference.device, dtype=reference.dtype)
    centre = scales.clamp(0, 1)[..., None] * (tag_dim - 1)
    off_scale = 1.0 - torch.exp(-((positions - centre) ** 2) / 2.0)  # [B,M,L]
    per_person = (reference**2 * off_scale).sum(dim=-1)
    return (per_person * presentf).sum() / presentf.sum()


def cross_view_loss(
    reference_a: torch.Tensor,
    present_a: torch.Tensor,
    ids_a: torch.Tensor,
    reference_b: torch.Tensor,
    present_b: torch.Tensor,
    ids_b: torch.Tensor,
    push_sigma: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporal pull/push between two views of one scene, averaged over the batch.

    pull: mean over people seen in both views of |ref_a - ref_b|^2 (same identity).
    push: mean over pairs (i in view a, j in view b) with different identities of exp(-d^2 / (2 sigma^2)).
    reference_* [B,M,L], present_* [B,M] bool, ids_* [B,M] int (identity: annotation or track id).
    """
    both = present_a.float()[:, :, None] * present_b.float()[:, None, :]
    same_id = (ids_a[:, :, None] == ids_b[:, None, :]).float()
    same = both * same_id
    different = both * (1.0 - same_id)
    squared = ((reference_a[:, :, None, :] - reference_b[:, None, :, :]) ** 2).sum(dim=-1)
    pull = (squared * same).sum(dim=(1, 2)) / same.sum(dim=(1, 2)).clamp(min=1)
    push = _pairwise_push(reference_a, reference_b, different, push_sigma)
    return pull.mean(), push.mean()


@dataclass
class LossTerms:
    """The total loss and its parts (detached floats for logging)."""

    total: torch.Tensor
    parts: dict[str, float]


def total_loss(
    stacks: list[tuple[torch.Tensor, torch.Tensor]],
    heatmaps: torch.Tensor,
    masks: torch.Tensor,
    joints: torch.Tensor,
    weights: LossWeights,
    scales: torch.Tensor | None = None,
    ids: torch.Tensor | None = None,
    num_views: int = 1,
) -> LossTerms:
    """All terms over every stack (intermediate supervision), summed over stacks.

    The batch holds B*V items, views of one sample adjacent (item b*V + v); with num_views == 2 the
    cross-view terms pair item 2b with 2b+1 using ids [B*V,M].
    """
    parts = {"heatmap": 0.0, "pull": 0.0, "push": 0.0, "scale": 0.0, "cross_pull": 0.0, "cross_push": 0.0}
    total = heatmaps.new_zeros((), dtype=torch.float32)
    for predicted_heatmaps, predicted_tags in stacks:
        terms: dict[str, torch.Tensor] = {}
        terms["heatmap"] = heatmap_loss(predicted_heatmaps, heatmaps, masks)
        pull, push, reference, present = pull_push_loss(predicted_tags, joints, weights.push_sigma)
        terms["pull"], terms["push"] = pull, push
        if weights.scale > 0 and scales is not None:
            terms["scale"] = scale_loss(reference, present, scales)
        if num_views == 2 and ids is not None:
            terms["cross_pull"], terms["cross_push"] = cross_view_loss(
                reference[0::2], present[0::2], ids[0::2], reference[1::2], present[1::2], ids[1::2],
                weights.push_sigma,
            )
        for name, value in terms.items():
            total = total + getattr(weights, name) * value
            parts[name] += float(value.detach())
    parts["total"] = float(total.detach())
    return LossTerms(total=total, parts=parts)
