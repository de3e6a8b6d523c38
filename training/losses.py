"""Training losses: masked heatmap MSE, associative-embedding pull/push, scale loss, cross-view pull/push.

Two forms of the grouping + scale terms (`LossOptions.scale_loss`, docs/training.md has the formulas):
  "ours"  per-person mean pull, and the reference tag shrunk away from a size-dependent dimension
  "wang"  Wang et al. (ECCV 2022) as written: pull averaged over all annotated joints, and a per-joint
          cosine loss between each joint's normalised tag and a unit scale ground-truth vector
The heatmap target's sigma can also be scaled per person by a factor Gamma read from the network's
own tags (`sigma_mode="embedding"`, Wang et al.'s scale-adaptive heatmap); the target is then
re-rendered here, because it depends on the prediction.

Shapes used throughout (B images, K keypoints, L tag dims, M people slots, h x w output maps):
  heatmaps [B,K,h,w], tags [B,K,L,h,w], masks [B,h,w] (1 = supervised, 0 = ignore),
  joints int64 [B,M,K,2] = (flat index y*w + x, valid) as produced by `model.codec.joint_indices`;
  joint k's tag is read from joint k's own tag channel at that index.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SCALE_LOSSES = ("ours", "wang")
SCALE_TRUTHS = ("onehot", "soft")
SIGMA_MODES = ("fixed", "size", "embedding")
GAUSSIAN_TRUNCATE = 3.0  # as model.codec.render_heatmaps: gaussians are cut at 3 sigma
REFERENCE_PERSON_SIZE = 32.0  # map pixels (sqrt of area) at which the size-adaptive sigma equals the base sigma


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
    # Extra weight of a heatmap pixel by its target: w = 1 + heatmap_foreground * target. 0 is the papers'
    # plain MSE, where the few peak pixels weigh as little as any background pixel.
    heatmap_foreground: float = 0.0
    # Extra weight of a pixel of joint k's map by the target of k's mirror joint (the same joint on the other
    # side, the schema's flip_index): w += heatmap_mirror * target[flip_index[k]]. A network that does not
    # tell left from right peaks both maps of a pair on both joints; plain MSE charges that false peak as
    # one more background pixel among thousands, this charges it like a missed joint. 0: off.
    heatmap_mirror: float = 0.0


def heatmap_loss(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                 foreground: float = 0.0, mirror: float = 0.0,
                 flip_index: tuple[int, ...] | None = None) -> torch.Tensor:
    """Mean squared error over all pixels, with ignored pixels (mask 0) contributing nothing; with foreground
    > 0 each pixel weighs 1 + foreground * target (peaks count more than background); with mirror > 0 also
    + mirror * (the mirror joint's target) (a peak on the other side's joint counts as much as a missed one)."""
    target = target.float()
    squared = (predicted.float() - target) ** 2 * mask[:, None].float()
    weight = 1.0
    if foreground > 0.0:
        weight = weight + foreground * target
    if mirror > 0.0:
        if flip_index is None or len(flip_index) != target.shape[1]:
            raise ValueError("the mirror weight needs the schema's flip_index, one entry per heatmap channel")
        weight = weight + mirror * target[:, list(flip_index)]
    return (squared * weight).mean()


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


def grouping_loss(
    joint_tags: torch.Tensor, valid: torch.Tensor, push_sigma: float = 1.0, pull_mean: str = "person"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Associative-embedding grouping loss on gathered tags (joint_tags [B,M,K,L], valid [B,M,K]).

    pull, pull_mean "person" (ours, Newell et al.): per person the mean over their joints of
      |tag - reference|^2, averaged over the image's people.
    pull, pull_mean "joint" (Wang et al. as written, 1/(NK) sum_n sum_k): the mean of |tag - reference|^2
      over all annotated joints of the image; the same as "person" when everyone has the same number of joints.
    push: mean over pairs of different people of exp(-|ref_i - ref_j|^2 / (2 sigma^2)) (both papers, sigma 1).
    Per image, then averaged over the batch; images without people (or with one, for push) contribute 0.
    Returns (pull, push, reference [B,M,L], present [B,M] bool).
    """
    if pull_mean not in ("person", "joint"):
        raise ValueError(f"pull_mean must be 'person' or 'joint', not {pull_mean!r}")
    reference, present = reference_tags(joint_tags, valid)
    squared = ((joint_tags - reference[:, :, None, :]) ** 2).sum(dim=-1) * valid  # [B,M,K]
    presentf = present.float()
    if pull_mean == "person":
        per_person = squared.sum(dim=2) / valid.sum(dim=2).clamp(min=1)
        pull = (per_person * presentf).sum(dim=1) / presentf.sum(dim=1).clamp(min=1)
    else:
        pull = squared.sum(dim=(1, 2)) / valid.sum(dim=(1, 2)).clamp(min=1)
    people = presentf.shape[1]
    different = presentf[:, :, None] * presentf[:, None, :] * (1.0 - torch.eye(people, device=joint_tags.device))
    push = _pairwise_push(reference, reference, different, push_sigma)
    return pull.mean(), push.mean(), reference, present


def pull_push_loss(
    tags: torch.Tensor, joints: torch.Tensor, push_sigma: float = 1.0, pull_mean: str = "person"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`grouping_loss` on the tags read at the annotated joints (tags [B,K,L,h,w], joints [B,M,K,2])."""
    joint_tags, valid = gather_person_tags(tags, joints)
    return grouping_loss(joint_tags, valid, push_sigma, pull_mean)


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


def scale_truth_vectors(scales: torch.Tensor, tag_dim: int, truth: str = "onehot") -> torch.Tensor:
    """Unit scale ground-truth vectors s [B,M,L] of Wang et al. from normalised person sizes [B,M] in [0, 1].

    The size picks the position c = s (L-1) among the tag dimensions (the same position as our form).
    "onehot": the unit vector of dimension round(c) (L equal-width size bins).
    "soft": exp(-(l - c)^2 / 2) over l = 0..L-1, normalised to length 1 (neighbouring bins share).
    """
    if truth not in SCALE_TRUTHS:
        raise ValueError(f"scale truth must be one of {SCALE_TRUTHS}, not {truth!r}")
    positions = torch.arange(tag_dim, device=scales.device, dtype=torch.float32)
    centre = scales.float().clamp(0, 1)[..., None] * (tag_dim - 1)
    if truth == "onehot":
        return (positions == torch.round(centre)).float()
    soft = torch.exp(-((positions - centre) ** 2) / 2.0)
    return soft / soft.norm(dim=-1, keepdim=True)


def wang_scale_loss(
    joint_tags: torch.Tensor, valid: torch.Tensor, scales: torch.Tensor, truth: str = "onehot"
) -> torch.Tensor:
    """Wang et al.'s L_s = 1/(NK) sum_n sum_k (1 - <t_hat_nk, s_n>), per joint.

    t_hat_nk = t_nk / |t_nk| (each joint's own tag, normalised), s_n = `scale_truth_vectors` of person n.
    1/(NK) is read as the mean over the image's annotated joints (as the pull of `grouping_loss` with
    pull_mean "joint"); per image, then averaged over the batch, images without people contributing 0.
    joint_tags [B,M,K,L], valid [B,M,K], scales [B,M]. 0 for L == 1 (a 1-d tag has no direction to learn).
    """
    tag_dim = joint_tags.shape[-1]
    if tag_dim == 1:
        return joint_tags.sum() * 0.0
    unit = joint_tags / joint_tags.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    truth_vectors = scale_truth_vectors(scales, tag_dim, truth)  # [B,M,L]
    cosine = (unit * truth_vectors[:, :, None, :]).sum(dim=-1)  # [B,M,K]
    per_image = ((1.0 - cosine) * valid).sum(dim=(1, 2)) / valid.sum(dim=(1, 2)).clamp(min=1)
    return per_image.mean()


# ---------------------------------------------------------------- scale-adaptive heatmap targets


def size_sigma_factor(sizes: torch.Tensor) -> torch.Tensor:
    """Our size-driven sigma factor: clip(person size / 32 map px, 0.5, 2) (sigma_mode "size")."""
    return (sizes / REFERENCE_PERSON_SIZE).clamp(0.5, 2.0)


def embedding_sigma_factor(reference: torch.Tensor, map_size: int) -> torch.Tensor:
    """Gamma [B,M] read back from each person's reference tag [B,M,L] (sigma_mode "embedding").

    Tag dimension l stands for the size bin whose centre is l/(L-1) of the map's long side (the scale
    truth's bins), with the factor gamma_l = `size_sigma_factor` of that size. With t_hat the normalised
    reference tag, Gamma = sum_l t_hat_l^2 gamma_l: the squares of a unit vector sum to 1, so Gamma is a
    weighted mean of the bins' factors, and equals gamma_b when the tag points along bin b (the
    truth the scale loss pulls it to). A zero tag (no direction, e.g. an empty person slot) weighs all
    bins equally.
    """
    tag_dim = reference.shape[-1]
    bin_sizes = torch.linspace(0.0, 1.0, tag_dim, device=reference.device) * map_size
    gammas = size_sigma_factor(bin_sizes)
    squared = reference.float() ** 2
    length = squared.sum(dim=-1, keepdim=True)
    weights = torch.where(length > 1e-12, squared / length.clamp(min=1e-12), torch.full_like(squared, 1.0 / tag_dim))
    return (weights * gammas).sum(dim=-1)


def render_heatmaps_torch(
    keypoints: torch.Tensor, valid: torch.Tensor, sigmas: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Heatmap targets [B,K,h,w] as model.codec.render_heatmaps draws them, with a sigma per person.

    keypoints [B,M,K,3] (x, y, visibility) in map pixels, valid [B,M,K] (the joints `joint_indices`
    keeps), sigmas [B,M]. Gaussians of peak 1 at the exact location, cut at 3 sigma, max over people.
    """
    sigma = sigmas.float()[:, :, None, None]
    dx = torch.arange(width, device=keypoints.device, dtype=torch.float32) - keypoints[..., 0:1].float()
    dy = torch.arange(height, device=keypoints.device, dtype=torch.float32) - keypoints[..., 1:2].float()
    gx = torch.exp(-(dx * dx) / (2 * sigma * sigma)) * (dx.abs() <= GAUSSIAN_TRUNCATE * sigma)
    gy = torch.exp(-(dy * dy) / (2 * sigma * sigma)) * (dy.abs() <= GAUSSIAN_TRUNCATE * sigma)
    gx = gx * valid.float()[..., None]
    gaussians = gy[..., :, None] * gx[..., None, :]  # [B,M,K,h,w]
    if gaussians.shape[1] == 0:
        return gaussians.new_zeros(gaussians.shape[0], gaussians.shape[2], height, width)
    return gaussians.amax(dim=1)


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


@dataclass(frozen=True)
class LossOptions:
    """Which form of the terms `total_loss` computes (TrainConfig's scale_loss, scale_truth, sigma_mode, sigma)."""

    scale_loss: str = "ours"  # "ours" or "wang" (also selects the pull normalisation; see grouping_loss)
    scale_truth: str = "onehot"  # "wang" only: "onehot" or "soft" scale ground truth
    sigma_mode: str = "fixed"  # "embedding": heatmap targets re-rendered with sigma * Gamma from the tags
    sigma: float = 2.0  # base heatmap sigma in map pixels ("embedding" only; the others come from the data)

    def __post_init__(self) -> None:
        if self.scale_loss not in SCALE_LOSSES:
            raise ValueError(f"scale loss must be one of {SCALE_LOSSES}, not {self.scale_loss!r}")
        if self.scale_truth not in SCALE_TRUTHS:
            raise ValueError(f"scale truth must be one of {SCALE_TRUTHS}, not {self.scale_truth!r}")
        if self.sigma_mode not in SIGMA_MODES:
            raise ValueError(f"sigma mode must be one of {SIGMA_MODES}, not {self.sigma_mode!r}")


@dataclass
class LossTerms:
    """The total loss and its parts (detached floats for logging)."""

    total: torch.Tensor
    parts: dict[str, float]


def embedding_heatmap_targets(
    final_tags: torch.Tensor, joints: torch.Tensor, keypoints: torch.Tensor, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmap targets with per-person sigma * Gamma, Gamma from the last stack's tags (detached: a target).

    Returns (heatmaps [B,K,h,w], Gamma [B,M]). keypoints [B,M,K,3] in map pixels, joints [B,M,K,2].
    """
    height, width = final_tags.shape[-2:]
    joint_tags, valid = gather_person_tags(final_tags.detach(), joints)
    reference, _ = reference_tags(joint_tags, valid)
    gamma = embedding_sigma_factor(reference, max(height, width))
    return render_heatmaps_torch(keypoints, valid, sigma * gamma, height, width), gamma


def total_loss(
    stacks: list[tuple[torch.Tensor, torch.Tensor]],
    heatmaps: torch.Tensor,
    masks: torch.Tensor,
    joints: torch.Tensor,
    weights: LossWeights,
    scales: torch.Tensor | None = None,
    ids: torch.Tensor | None = None,
    num_views: int = 1,
    options: LossOptions = LossOptions(),
    keypoints: torch.Tensor | None = None,
    flip_index: tuple[int, ...] | None = None,
) -> LossTerms:
    """All terms over every stack (intermediate supervision), summed over stacks.

    The batch holds B*V items, views of one sample adjacent (item b*V + v); with num_views == 2 the
    cross-view terms pair item 2b with 2b+1 using ids [B*V,M]. With options.sigma_mode "embedding" the
    given heatmaps are replaced by targets drawn from `keypoints` [B*V,M,K,3] (map pixels) with sigma
    times the Gamma of the last stack's tags, one target for every stack. flip_index (the schema's left/right
    permutation) is needed when weights.heatmap_mirror > 0.
    """
    parts = {"heatmap": 0.0, "pull": 0.0, "push": 0.0, "scale": 0.0, "cross_pull": 0.0, "cross_push": 0.0}
    if options.sigma_mode == "embedding":
        if keypoints is None:
            raise ValueError("sigma mode 'embedding' needs the keypoints to draw the heatmap targets")
        heatmaps, gamma = embedding_heatmap_targets(stacks[-1][1], joints, keypoints, options.sigma)
        present = (joints[..., 1] > 0).any(dim=2)
        parts["gamma"] = float(gamma[present].mean()) if present.any() else 1.0
    pull_mean = "joint" if options.scale_loss == "wang" else "person"
    total = heatmaps.new_zeros((), dtype=torch.float32)
    for predicted_heatmaps, predicted_tags in stacks:
        terms: dict[str, torch.Tensor] = {}
        terms["heatmap"] = heatmap_loss(predicted_heatmaps, heatmaps, masks, weights.heatmap_foreground,
                                         weights.heatmap_mirror, flip_index)
        joint_tags, valid = gather_person_tags(predicted_tags, joints)
        pull, push, reference, present = grouping_loss(joint_tags, valid, weights.push_sigma, pull_mean)
        terms["pull"], terms["push"] = pull, push
        if weights.scale > 0 and scales is not None:
            if options.scale_loss == "wang":
                terms["scale"] = wang_scale_loss(joint_tags, valid, scales, options.scale_truth)
            else:
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
