"""The tracker's matching costs and gates, and what it learns about tags, as pure functions.

`PoseTracker.update` computes the cues of a round (OKS, motion, tag distances; `tracker.association`),
then asks these functions for the round's cost matrix, where a gated pair costs `FORBIDDEN`; every
number comes from `TrackerConfig`. Tag distances are judged against `TagStatistics`, what the tracker
has measured of the model's tags on this video: how far a track's running tag lies from its own next
detection (`same`) and from the other people of that frame (`other`). So a model with another tag scale
needs no retuning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tagtrack.tracker.association import FORBIDDEN
from tagtrack.tracker.config import TrackerConfig

# Tag gates (and the running tag's refusal of a far tag) apply from this trust on: the unit they are measured in
# must be learned first.
GATES_FROM_TRUST = 0.5


@dataclass(frozen=True)
class TagStatistics:
    """Running means of tag distances over unambiguous pairs (geometry alone says who is who)."""

    same: float = 0.0   # a track's running tag to its own next detection
    other: float = 0.0  # a track's running tag to the other people of that frame
    samples: int = 0    # unambiguous pairs seen


def learn_tag_statistics(stats: TagStatistics, oks: np.ndarray, distance: np.ndarray,
                         config: TrackerConfig) -> TagStatistics:
    """Update the statistics from one round's [tracks, detections] OKS and tag distances.

    A pair is unambiguous when its OKS is high (> trust_clear_oks) and every other OKS in its row and
    column is low (< trust_ambiguous_oks); its own distance feeds `same`, the mean over the rest of its
    row feeds `other`. Running means over about the last `trust_memory` pairs.
    """
    rows, cols = oks.shape
    if rows < 2 or cols < 2:
        return stats
    best_col = oks.argmax(1)
    best_row = oks.argmax(0)
    by_row = np.sort(oks, axis=1)
    by_col = np.sort(oks, axis=0)
    clear = ((by_row[:, -1] > config.trust_clear_oks) & (by_row[:, -2] < config.trust_ambiguous_oks)
             & (by_col[-2, best_col] < config.trust_ambiguous_oks) & (best_row[best_col] == np.arange(rows)))
    if not clear.any():
        return stats
    r = np.flatnonzero(clear)
    c = best_col[r]
    same = distance[r, c]
    others = (distance[r].sum(1) - same) / (cols - 1)
    if stats.samples == 0:
        return TagStatistics(float(same.mean()), float(others.mean()), len(r))
    rate = 1.0 - (1.0 - 1.0 / config.trust_memory) ** len(r)
    return TagStatistics(stats.same + rate * (float(same.mean()) - stats.same),
                         stats.other + rate * (float(others.mean()) - stats.other), stats.samples + len(r))


def tag_trust(stats: TagStatistics, config: TrackerConfig) -> float:
    """0..1: how far the tags separate the same person from others across frames.

    1: a track's tag lies much nearer its own next detection than the other people's; 0: no nearer
    (random tags, or a model trained without the cross-view loss), and the tracker runs on geometry
    alone. 0 until `tag_trust_samples` unambiguous pairs have been seen.
    """
    if stats.samples < config.tag_trust_samples or stats.other <= 0.0:
        return 0.0
    ratio = stats.same / stats.other
    return float(np.clip((config.tag_trust_ratio - ratio) / (0.5 * config.tag_trust_ratio), 0.0, 1.0))


def tag_unit(stats: TagStatistics) -> float:
    """The tag distance the tag settings are measured in: the learned same-person distance.

    Models put their tags on their own scales (the push loss sets it): the synthetic benchmark's tags
    move about 0.1 a frame with other people 1.4-2.6 away, the default model's on vtest.avi about 0.5
    with other people about 3.7 away. Before anything is learned the gates do not apply (trust 0), so
    the unit is then only a placeholder. Never below 0.04 of the learned different-person distance, so
    tags that never move (a test, a perfect model) do not shrink the gates to nothing.
    """
    if not stats.samples:
        return 1.0
    return max(stats.same, 0.04 * stats.other, 1e-6)


def running_tags(old: np.ndarray, new: np.ndarray, trust: float, stats: TagStatistics,
                 config: TrackerConfig) -> np.ndarray:
    """[N,L] running tags of matched tracks after their new detections' tags [N,L]: momentum * old + (1 -
    momentum) * new, except where the new tag lies over tag_update_gate learned units from the old (from
    GATES_FROM_TRUST): most likely a blend of two people (merged or half hidden), which would carry the track
    toward the other person; that track keeps its tag and tells the two apart again when they separate."""
    blended = config.tag_momentum * old + (1.0 - config.tag_momentum) * new
    if trust < GATES_FROM_TRUST:
        return blended
    far = np.linalg.norm(new - old, axis=1) > config.tag_update_gate * tag_unit(stats)
    return np.where(far[:, None], old, blended)


def tag_cost(distance: np.ndarray, stats: TagStatistics, config: TrackerConfig) -> np.ndarray:
    """1 - tag similarity, exp(-d^2 / 2 s^2) with s = tag_scale learned units."""
    scale = config.tag_scale * tag_unit(stats)
    return 1.0 - np.exp(-0.5 * (distance / scale) ** 2)


def match_gate_units(missed_for: np.ndarray, config: TrackerConfig) -> np.ndarray:
    """[tracks] round-1/2 tag gate in learned units: tag_gate_fresh for a track found in the previous frame,
    widening linearly to tag_gate over tag_gate_ramp seconds missed (a tag drifts while its person is
    unseen, but from one frame to the next it barely moves)."""
    if config.tag_gate_ramp <= 0.0:
        return np.full(missed_for.shape, config.tag_gate)
    widen = np.clip(missed_for / config.tag_gate_ramp, 0.0, 1.0)
    return config.tag_gate_fresh + (config.tag_gate - config.tag_gate_fresh) * widen


def match_cost(oks: np.ndarray, iou: np.ndarray, motion: np.ndarray, distance: np.ndarray | None,
               trust: float, stats: TagStatistics, config: TrackerConfig,
               missed_for: np.ndarray | None = None) -> np.ndarray:
    """Rounds 1 and 2: [tracks, detections] cost, the weighted mean of (1 - similarity) per cue.

    oks: against the predicted pose; iou: box IoU (only used when weighted); motion: Mahalanobis length
    of the joints' mean shift; distance: tag distances (None without tags). Gates, each of which can
    forbid a pair and none force one: motion > motion_gate; OKS (or IoU when weighted) < min_overlap;
    tag distance > `match_gate_units(missed_for)` learned units (once tags are half trusted; missed_for
    [tracks]: seconds each track went unseen before this frame, None: long enough for the full tag_gate);
    cost > max_cost.
    """
    cost = config.oks_weight * (1.0 - oks) + config.iou_weight * (1.0 - iou)
    weight = config.oks_weight + config.iou_weight
    gated = (motion > config.motion_gate) | (np.maximum(oks, iou) < config.min_overlap)
    if distance is not None and trust > 0.0:
        cost = cost + trust * config.tag_weight * tag_cost(distance, stats, config)
        weight += trust * config.tag_weight
    if distance is not None and trust >= GATES_FROM_TRUST:
        if missed_for is None:
            missed_for = np.full(distance.shape[0], np.inf)
        gated |= distance > (match_gate_units(missed_for, config) * tag_unit(stats))[:, None]
    cost = cost / weight
    gated |= cost > config.max_cost
    return np.where(gated, FORBIDDEN, cost)


def reid_cost(near: np.ndarray, log_size_ratio: np.ndarray, distance: np.ndarray | None, confident: np.ndarray,
              stats: TagStatistics, config: TrackerConfig) -> np.ndarray:
    """Round 3, re-identification: [lost tracks, detections] cost.

    near: distance from the track's prediction over its reach (1 = at the edge); log_size_ratio: of
    the detection's size to the track's; distance: tag distances (NaN: a track without a tag), or None
    when the tags are off or not trusted; confident: [detections] score >= high_score. By tag: a tag
    within reid_tag_gate units takes anyone back, a confident person also on a looser tag (tag_gate
    units), as on real video a person's tag after a gap is often further from the track's running tag;
    nearness only breaks ties (reid_near_weight). Without tags: by nearness and size, confident people
    only. Always: within reach and a size within a factor reid_max_size_ratio.
    """
    size_ratio = np.abs(log_size_ratio)
    gated = size_ratio > np.log(config.reid_max_size_ratio)
    if distance is not None:
        distance = np.where(np.isnan(distance), np.inf, distance)
        unit = tag_unit(stats)
        tag = distance / (config.reid_tag_gate * unit)
        cost = tag + config.reid_near_weight * near
        gated |= (tag > 1.0) & ~(confident[None, :] & (distance <= config.tag_gate * unit))
        gated |= near > 1.0
    else:
        cost = near + size_ratio
        gated |= (near > 1.0) | ~confident[None, :]
    return np.where(gated, FORBIDDEN, cost)
