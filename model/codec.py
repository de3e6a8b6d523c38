"""The heatmap + tag representation of associative embedding, encoded and decoded side by side.

Coordinates. Every coordinate in this module is in *output-map pixels* with the pixel-centre
convention used throughout the project: pixel ``(row i, column j)`` covers ``[j-0.5, j+0.5] x
[i-0.5, i+0.5]`` and its centre is the point ``(x=j, y=i)``. A keypoint at ``(x, y)`` therefore
peaks at pixel ``(round(y), round(x))``. ``model.transforms`` converts between map, network-input
and image pixels with the same convention.

Encode (training targets):
    ``render_heatmaps``  per-joint gaussians (peak 1, max over people), optional per-person sigma
    ``joint_indices``    flat map index + valid flag of every labelled joint, for the pull/push loss
    ``render_tag_maps``  the tags a perfect network would output (synthetic maps for tests/benches)

Decode (Newell et al. 2017, "Associative Embedding"; the pose-ae reference decoder):
    max-pool NMS -> top-k peaks per joint -> grouping joint type by joint type in the schema's
    grouping order (Hungarian match on rounded tag distance, then distance to the person's joints, then
    detection score) -> sub-pixel adjustment (quarter pixel, or a quadratic fit)
    -> refinement of missing joints from the person's mean tag -> person score, cap, OKS de-duplication.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from tagtrack.model.body_box import body_boxes
from tagtrack.model.oks import object_keypoint_similarity
from tagtrack.model.pose import Pose
from tagtrack.model.schema import KeypointSchema

GAUSSIAN_TRUNCATE = 3.0  # gaussians are cut at 3 sigma so the background is exactly 0


# ---------------------------------------------------------------------------------------- encode


def _valid_joints(keypoints: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rounded integer location and validity (labelled and inside the map) of every joint, [N,K] each."""
    xs = np.floor(keypoints[..., 0] + 0.5)
    ys = np.floor(keypoints[..., 1] + 0.5)
    finite = np.isfinite(xs) & np.isfinite(ys)
    valid = (keypoints[..., 2] > 0) & finite & (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    xs = np.where(valid, xs, 0).astype(np.int64)
    ys = np.where(valid, ys, 0).astype(np.int64)
    return xs, ys, valid


def _as_keypoints(keypoints: np.ndarray) -> np.ndarray:
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 3 or keypoints.shape[2] != 3:
        raise ValueError(f"keypoints must be [N,K,3] (x, y, visibility), got {keypoints.shape}")
    return keypoints


def _person_sigmas(sigma: float | np.ndarray, num_people: int) -> np.ndarray:
    sigmas = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (num_people,)).copy()
    if (sigmas <= 0).any():
        raise ValueError("gaussian sigma must be positive")
    return sigmas


def _person_gaussians(
    person: np.ndarray, valid: np.ndarray, sigma: float, height: int, width: int
) -> np.ndarray:
    """[K,h,w] separable gaussians of one person (0 for invalid joints, cut at GAUSSIAN_TRUNCATE sigma)."""
    dx = np.arange(width)[None, :] - person[:, 0:1]
    dy = np.arange(height)[None, :] - person[:, 1:2]
    gx = np.exp(-(dx * dx) / (2 * sigma * sigma))
    gy = np.exp(-(dy * dy) / (2 * sigma * sigma))
    gx[np.abs(dx) > GAUSSIAN_TRUNCATE * sigma] = 0.0
    gy[np.abs(dy) > GAUSSIAN_TRUNCATE * sigma] = 0.0
    gx[~valid] = 0.0
    return (gy[:, :, None] * gx[:, None, :]).astype(np.float32)


def render_heatmaps(
    keypoints: np.ndarray, height: int, width: int, sigma: float | np.ndarray = 2.0
) -> np.ndarray:
    """Target heatmaps [K,h,w] float32: an unnormalised gaussian (peak 1) per labelled joint, max over people.

    keypoints: [N,K,3] (x, y, visibility) in map pixels; visibility > 0 means labelled.
    sigma: one value, or [N] per person (the scale-adaptive sigma of Wang et al.).
    Joints whose rounded location falls outside the map are not drawn (the same rule as
    ``joint_indices``), so heatmap and tag targets agree on which joints exist.
    """
    keypoints = _as_keypoints(keypoints)
    num_people, num_joints = keypoints.shape[:2]
    sigmas = _person_sigmas(sigma, num_people)
    _, _, valid = _valid_joints(keypoints, height, width)
    heatmaps = np.zeros((num_joints, height, width), dtype=np.float32)
    for person in range(num_people):
        if valid[person].any():
            gaussians = _person_gaussians(keypoints[person], valid[person], sigmas[person], height, width)
            np.maximum(heatmaps, gaussians, out=heatmaps)
    return heatmaps


def joint_indices(keypoints: np.ndarray, height: int, width: int, max_people: int) -> np.ndarray:
    """Where each labelled joint sits on the map: int64 [max_people, K, 2] = (y*w + x of the rounded location, valid).

    Joints that are unlabelled or outside the map have valid 0 (and index 0). People beyond
    ``max_people`` are dropped; missing people are rows of zeros.
    """
    keypoints = _as_keypoints(keypoints)
    num_people, num_joints = keypoints.shape[:2]
    xs, ys, valid = _valid_joints(keypoints, height, width)
    result = np.zeros((max_people, num_joints, 2), dtype=np.int64)
    kept = min(num_people, max_people)
    result[:kept, :, 0] = np.where(valid, ys * width + xs, 0)[:kept]
    result[:kept, :, 1] = valid[:kept]
    return result


def render_tag_maps(
    keypoints: np.ndarray,
    person_tags: np.ndarray,
    height: int,
    width: int,
    sigma: float | np.ndarray = 2.0,
    background: float = 0.0,
) -> np.ndarray:
    """Tag maps [K,L,h,w] float32 that an ideal network would output for these people.

    Inside each joint's gaussian the map holds that person's tag (the person whose gaussian is
    strongest wins where people overlap); elsewhere ``background``. Used to build synthetic
    inputs for the decoder's tests and benchmark.
    """
    keypoints = _as_keypoints(keypoints)
    person_tags = np.asarray(person_tags, dtype=np.float32)
    num_people, num_joints = keypoints.shape[:2]
    if person_tags.ndim != 2 or person_tags.shape[0] != num_people:
        raise ValueError(f"person_tags must be [N={num_people}, L], got {person_tags.shape}")
    tag_dim = person_tags.shape[1]
    sigmas = _person_sigmas(sigma, num_people)
    _, _, valid = _valid_joints(keypoints, height, width)
    tags = np.full((num_joints, tag_dim, height, width), background, dtype=np.float32)
    strongest = np.zeros((num_joints, height, width), dtype=np.float32)
    for person in range(num_people):
        if not valid[person].any():
            continue
        gaussians = _person_gaussians(keypoints[person], valid[person], sigmas[person], height, width)
        wins = gaussians > strongest
        strongest = np.where(wins, gaussians, strongest)
        tags = np.where(wins[:, None], person_tags[person][None, :, None, None], tags)
    return tags


# ---------------------------------------------------------------------------------------- decode


PEAK_FITS = ("quarter", "quadratic")


@dataclass
class DecodeConfig:
    """Every threshold of the decoder, with the defaults of the AE papers / pose-ae reference code.

    detection_threshold: a peak below this is not a joint candidate (0.1).
    tag_threshold: a candidate joins a person only if its tag is closer than this to the person's
        mean tag (L2 distance; 1.0).
    top_k: candidates kept per joint type (30). max_people: people kept, best score first (30).
    nms_kernel: max-pool window of the peak search (5).
    use_detection_val: the matching cost is round(tag distance) * 100 - detection score, so among
        equally close tags the stronger detection wins (pose-ae); otherwise the raw distance.
    spatial_weight: with use_detection_val, the cost also adds spatial_weight x (the candidate's distance
        to the person's nearest joint so far / the map's longer side, at most 1). It never outweighs one
        step of rounded tag distance (100), so tags still decide; among people whose tags are equally
        close it picks the nearer person before the stronger detection. 0 gives pose-ae's cost.
    adjust: move each joint off its pixel centre toward the heatmap's true peak, by `peak_fit`.
    peak_fit: "quarter" (the papers: a quarter pixel toward the higher neighbour in x and in y) or
        "quadratic" (the vertex of a parabola through the log heatmap at the joint and its two neighbours,
        per axis: the exact centre of a Gaussian peak, within half a pixel).
    refine: fill a person's missing joints at the best location of that joint's heatmap minus the
        rounded tag distance to the person's mean tag.
    refine_max_tag_distance: when set, refinement fills a joint only where its tag is closer than
        this to the person's mean tag; None (the papers) fills the best location whatever its tag.
    refine_reach: when set, refinement looks for a missing joint only inside the box of the person's
        found joints grown on every side by refine_reach x its longer side (at least 5 % of the map's
        longer side); None (the papers) searches the whole map, where with weak tags the best location
        is often another person's joint across the image.
    split_mirror_pairs: where a person's left and right joint of a pair land on one spot (closer than
        mirror_gap map pixels) and the two channels together show a second peak near the person (at least
        mirror_ratio of the spot's value, 2+ pixels away, a tag within tag_threshold), put one joint on each
        peak, the person taken to face the camera (see ``_split_mirror_pairs``). For networks whose left and
        right maps hedge between the sides; off in the papers.
    min_person_score: people scoring below this are dropped (the papers keep all: 0).
    duplicate_oks_threshold: of two people whose OKS exceeds this, the lower-scoring one is
        dropped (set above 1 to keep duplicates).
    """

    detection_threshold: float = 0.1
    tag_threshold: float = 1.0
    top_k: int = 30
    max_people: int = 30
    nms_kernel: int = 5
    use_detection_val: bool = True
    # Why: with weak tags (all within one rounding step) pose-ae's cost joins joints of people far apart
    # by detection score alone; on held-out PETS frames this term raised the share of the teacher's people
    # found from 49 % to 79 % with the same network (docs/decoder.md).
    spatial_weight: float = 10.0
    adjust: bool = True
    peak_fit: str = "quarter"
    refine: bool = True
    refine_max_tag_distance: float | None = None
    refine_reach: float | None = 1.0
    split_mirror_pairs: bool = False
    mirror_gap: float = 1.0
    mirror_ratio: float = 0.5
    min_person_score: float = 0.0
    duplicate_oks_threshold: float = 0.9

    def __post_init__(self) -> None:
        # Only what would break the decoder; the ranges where a value means something (a detection
        # threshold within 0..1) are model/settings.py's check_ranges.
        if not self.tag_threshold > 0:
            raise ValueError(f"tag_threshold must be a positive tag distance, got {self.tag_threshold}")
        for name in ("top_k", "max_people", "nms_kernel"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("spatial_weight", "duplicate_oks_threshold", "mirror_gap", "mirror_ratio"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.peak_fit not in PEAK_FITS:
            raise ValueError(f"peak_fit must be one of {', '.join(PEAK_FITS)}, got {self.peak_fit!r}")
        if self.refine_reach is not None and not self.refine_reach >= 0:
            raise ValueError(f"refine_reach must be None or not negative, got {self.refine_reach}")
        if self.refine_max_tag_distance is not None and not self.refine_max_tag_distance > 0:
            raise ValueError(f"refine_max_tag_distance must be None or positive, got {self.refine_max_tag_distance}")


@dataclass
class _Candidates:
    """Joint candidates after NMS and top-k, sorted by joint type then descending score."""

    joint: np.ndarray  # [C] int64
    x: np.ndarray  # [C] int64
    y: np.ndarray  # [C] int64
    score: np.ndarray  # [C] float32
    tag: np.ndarray  # [C, L] float32
    starts: np.ndarray  # [K+1] candidate slice of each joint type


def _find_candidates(heatmaps: np.ndarray, tags: np.ndarray, config: DecodeConfig) -> _Candidates:
    """NMS peaks above the detection threshold, the top_k best of each joint type.

    Each joint's map is dilated on its own (cv2.dilate of a contiguous [h,w] slice, into one reused
    buffer): a 17-channel dilation needs a channels-last copy of the maps first, which cost as much as the
    dilation itself. Flat indices over [K,h,w] come out sorted by joint type, then row-major.
    """
    num_joints, height, width = heatmaps.shape
    mask = heatmaps > config.detection_threshold
    if config.nms_kernel > 1:
        kernel = np.ones((config.nms_kernel, config.nms_kernel), np.uint8)
        pooled = np.empty_like(heatmaps)
        for joint in range(num_joints):
            cv2.dilate(heatmaps[joint], kernel, dst=pooled[joint])
        mask &= heatmaps == pooled
    flat = np.flatnonzero(mask)
    joint, pixel = np.divmod(flat, height * width)
    return top_k_candidates(joint, pixel, heatmaps.reshape(-1)[flat], tags, config.top_k)


def top_k_candidates(
    joint: np.ndarray, pixel: np.ndarray, score: np.ndarray, tags: np.ndarray, top_k: int
) -> _Candidates:
    """The candidates record from peaks given as joint type, flat pixel index (y * w + x) and score: sorted by
    joint type, then descending score (ties: in the order given), at most top_k per joint type."""
    num_joints, _, _, width = tags.shape
    order = np.lexsort((-score, joint))
    pixel, joint, score = pixel[order], joint[order], score[order]
    starts = np.searchsorted(joint, np.arange(num_joints + 1))
    keep = np.arange(joint.size) - starts[joint] < top_k
    if not keep.all():
        pixel, joint, score = pixel[keep], joint[keep], score[keep]
        starts = np.searchsorted(joint, np.arange(num_joints + 1))
    y, x = np.divmod(pixel, width)
    return _Candidates(joint, x, y, score, tags[joint, :, y, x], starts)


def _group(
    candidates: _Candidates, schema: KeypointSchema, config: DecodeConfig, map_long_side: int
) -> tuple[np.ndarray, np.ndarray]:
    """Assign candidates to people joint type by joint type. Returns person of each candidate [C], people count."""
    count = candidates.joint.size
    starts = candidates.starts.tolist()
    person_of = np.full(count, -1, dtype=np.int64)
    all_tags = candidates.tag.astype(np.float64)
    tag_sum = np.zeros((count, all_tags.shape[1]), dtype=np.float64)
    tag_count = np.zeros(count, dtype=np.int64)
    spatial = config.use_detection_val and config.spatial_weight > 0
    if spatial:
        # Squared distances between candidates are integers (pixel positions), exact in float64, so the
        # nearest-joint minimum is the same in whatever order it is taken: kept up to date per person as
        # joints join (nearest[c, p]: candidate c to person p's nearest joint so far) instead of recomputed.
        x, y = candidates.x.astype(np.float64), candidates.y.astype(np.float64)
        dx, dy = x[:, None] - x[None, :], y[:, None] - y[None, :]
        squared = dx * dx + dy * dy
        nearest = np.empty((count, count), dtype=np.float64)
    num_people = 0
    for joint in schema.grouping_order:
        start, stop = starts[joint], starts[joint + 1]
        if start == stop:
            continue
        joint_tags = all_tags[start:stop]
        if num_people == 0:
            new_rows = np.arange(start, stop)
        else:
            mean_tags = tag_sum[:num_people] / tag_count[:num_people, None]
            distance = np.sqrt(np.add.reduce(np.square(joint_tags[:, None, :] - mean_tags[None, :, :]), axis=2))
            if config.use_detection_val:
                # np.rint is what np.round does with 0 decimals (half to even), without its wrapper's cost.
                cost = np.rint(distance) * 100.0 - candidates.score[start:stop, None]
                if spatial:
                    gap = np.sqrt(nearest[start:stop, :num_people]) / map_long_side  # [n, P]
                    cost += config.spatial_weight * np.minimum(gap, 1.0)
            else:
                cost = distance
            matched_rows, matched_people = linear_sum_assignment(cost)
            close = distance[matched_rows, matched_people] < config.tag_threshold
            matched_rows, matched_people = matched_rows[close], matched_people[close]
            matched = start + matched_rows
            person_of[matched] = matched_people
            tag_sum[matched_people] += joint_tags[matched_rows]
            tag_count[matched_people] += 1
            if spatial:
                nearest[:, matched_people] = np.minimum(nearest[:, matched_people], squared[:, matched])
            # nonzero() of a 1-D mask: flatnonzero's result without its wrappers' cost
            new_rows = start + (person_of[start:stop] < 0).nonzero()[0]
        new_people = slice(num_people, num_people + new_rows.size)
        person_of[new_rows] = np.arange(num_people, num_people + new_rows.size)
        tag_sum[new_people] = all_tags[new_rows]
        tag_count[new_people] = 1
        if spatial:
            nearest[:, new_people] = squared[:, new_rows]
        num_people += new_rows.size
    return person_of, num_people


def _peak_offsets(
    heatmaps: np.ndarray, joint: np.ndarray, x: np.ndarray, y: np.ndarray, peak_fit: str
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel offsets in x and in y, per point (see ``DecodeConfig.peak_fit``).

    quarter: -0.25, 0 or +0.25 toward the higher neighbour; equal neighbours give no offset, so a peak
    exactly on a pixel centre stays there. quadratic: where the log heatmap curves down along an axis,
    the vertex of the parabola through it at the point and its two neighbours, clipped to half a pixel;
    elsewhere (a point that is not a maximum along the axis, or at the map's edge) the quarter offset.
    """
    _, height, width = heatmaps.shape
    centre = heatmaps[joint, y, x]
    right = heatmaps[joint, y, np.minimum(x + 1, width - 1)]
    left = heatmaps[joint, y, np.maximum(x - 1, 0)]
    down = heatmaps[joint, np.minimum(y + 1, height - 1), x]
    up = heatmaps[joint, np.maximum(y - 1, 0), x]
    dx, dy = 0.25 * np.sign(right - left), 0.25 * np.sign(down - up)
    if peak_fit == "quadratic":
        dx = np.where((x > 0) & (x < width - 1), _log_parabola_vertex(left, centre, right, dx), dx)
        dy = np.where((y > 0) & (y < height - 1), _log_parabola_vertex(up, centre, down, dy), dy)
    return dx.astype(np.float32), dy.astype(np.float32)


def _log_parabola_vertex(before: np.ndarray, centre: np.ndarray, after: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Vertex of the parabola through (-1, log before), (0, log centre), (1, log after), within +-0.5; FALLBACK
    where it has no maximum. A Gaussian's log is a parabola, so for a Gaussian peak this is its centre."""
    tiny = np.float32(1e-6)  # heatmaps are network outputs: clamp so that zero or negative values have a log
    low, mid, high = (np.log(np.maximum(value, tiny)) for value in (before, centre, after))
    curvature = low - 2 * mid + high
    peaked = curvature < -1e-6
    vertex = 0.5 * (low - high) / np.where(peaked, curvature, -1.0)
    return np.where(peaked, np.clip(vertex, -0.5, 0.5), fallback)


def _refine(
    heatmaps: np.ndarray,
    tags: np.ndarray,
    keypoints: np.ndarray,
    person_tags: np.ndarray,
    peak_fit: str | None,
    max_tag_distance: float | None,
    reach: float | None = None,
) -> None:
    """Fill missing joints (score 0) in place: argmax of heatmap - round(|tag - person tag|) over the whole map,
    or with ``reach`` over the person's window (see ``DecodeConfig.refine_reach``).

    Person by person, all of its missing joint types at once, and only over its window: the window
    is a small part of the map, so reading just that part of the tags is what makes this cheap.
    Among equal objective values the first in row-major order wins, as an argmax over the whole
    map would pick. The tag distance is taken directly, sqrt(sum((t - m)^2)) (see docs/decoder.md for
    how that may round differently from the expanded form used before).
    """
    _, height, width = heatmaps.shape
    missing = keypoints[:, :, 2] <= 0
    if reach is None:
        rows = np.tile([0, height], (len(keypoints), 1))
        columns = np.tile([0, width], (len(keypoints), 1))
    else:
        rows, columns = _reach_windows(keypoints, reach, height, width)
    people = np.flatnonzero(missing.any(axis=1))
    if people.size == 0:
        return
    person_tags = np.asarray(person_tags, dtype=np.float32)[:, :, None, None]
    refined = []  # per person: joints, y, x of its missing joints' best locations (filled or not)
    for person, (top, bottom), (left, right) in zip(people.tolist(), rows[people].tolist(), columns[people].tolist()):
        joints = missing[person].nonzero()[0]
        difference = tags[joints, :, top:bottom, left:right]  # [J, L, h', w'], a copy: subtract in place
        np.subtract(difference, person_tags[person], out=difference)
        distance = np.einsum("jlyx,jlyx->jyx", difference, difference)
        np.sqrt(distance, out=distance)
        objective = np.rint(distance)
        np.subtract(heatmaps[joints, top:bottom, left:right], objective, out=objective)
        y, x = np.divmod(objective.reshape(joints.size, -1).argmax(axis=1), right - left)
        if max_tag_distance is not None:
            far = distance[np.arange(joints.size), y, x] >= max_tag_distance
            y, x = np.where(far, -1, y + top), np.where(far, -1, x + left)  # -1: not filled
        else:
            y, x = y + top, x + left
        refined.append((np.full(joints.size, person), joints, y, x))
    person, joint, y, x = (np.concatenate(parts) for parts in zip(*refined))
    keep = y >= 0
    keep[keep] = heatmaps[joint[keep], y[keep], x[keep]] > 0
    person, joint, y, x = person[keep], joint[keep], y[keep], x[keep]
    if person.size == 0:
        return
    xf, yf = x.astype(np.float32), y.astype(np.float32)
    if peak_fit is not None:
        dx, dy = _peak_offsets(heatmaps, joint, x, y, peak_fit)
        xf, yf = xf + dx, yf + dy
    keypoints[person, joint, 0] = xf
    keypoints[person, joint, 1] = yf
    keypoints[person, joint, 2] = heatmaps[joint, y, x]


def _split_mirror_pairs(heatmaps: np.ndarray, tags: np.ndarray, keypoints: np.ndarray, person_tags: np.ndarray,
                        schema: KeypointSchema, config: DecodeConfig) -> None:
    """In place: a person's left and right joint of a pair found on one spot move onto two peaks (see
    ``DecodeConfig.split_mirror_pairs``).

    Why: a network that cannot tell a person's left side from their right draws each side's map with a peak on
    both joints, and the decoder puts both joints on the stronger one: skeletons drawn as lines (the bundled
    `general` model: left and right argmax on one pixel for 97 % of the shoulder, wrist, hip, knee and ankle
    pairs on held-out close-up video, pose2sim cam02). The two peaks are there; only which side is which is unknown. The person is taken to face the
    camera: their left joint is the peak further along their left, the direction 90 degrees clockwise (in image
    coordinates) from their body axis, hips to shoulders (image up when those are not found). On labelled
    photos that holds for about two pairs in three (docs/decoder.md).
    """
    pairs = np.array([(k, m) for k, m in enumerate(schema.flip_index) if k < m], dtype=np.int64).reshape(-1, 2)
    if pairs.size == 0 or len(keypoints) == 0:
        return
    _, height, width = heatmaps.shape
    rows, columns = _reach_windows(keypoints, 0.25, height, width)
    axis_joints = [schema.keypoint_names.index(name) if name in schema.keypoint_names else -1
                   for name in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]
    for person in range(len(keypoints)):
        joints = keypoints[person]
        left, right = pairs[:, 0], pairs[:, 1]
        gap = np.hypot(*(joints[left, :2] - joints[right, :2]).T)
        collapsed = (joints[left, 2] > 0) & (joints[right, 2] > 0) & (gap < config.mirror_gap)
        if not collapsed.any():
            continue
        left, right = left[collapsed], right[collapsed]
        (top, bottom), (first, last) = rows[person], columns[person]
        combined = heatmaps[left, top:bottom, first:last] + heatmaps[right, top:bottom, first:last]  # [C,h,w]
        local_max = np.stack([combined[c] >= cv2.dilate(combined[c], np.ones((3, 3), np.uint8))
                              for c in range(len(left))])
        spot = (joints[left, :2] + joints[right, :2]) / 2
        spot_x = np.clip(np.rint(spot[:, 0]).astype(np.int64), 0, width - 1)
        spot_y = np.clip(np.rint(spot[:, 1]).astype(np.int64), 0, height - 1)
        spot_value = heatmaps[left, spot_y, spot_x] + heatmaps[right, spot_y, spot_x]
        y, x = np.mgrid[top:bottom, first:last]
        far = np.hypot(x[None] - spot[:, 0, None, None], y[None] - spot[:, 1, None, None]) >= 2.0
        person_tag = person_tags[person][None, :, None, None]
        tag_distance = np.minimum(
            np.sqrt(np.square(tags[left, :, top:bottom, first:last] - person_tag).sum(axis=1)),
            np.sqrt(np.square(tags[right, :, top:bottom, first:last] - person_tag).sum(axis=1)))
        eligible = (local_max & far & (combined >= config.mirror_ratio * spot_value[:, None, None])
                    & (tag_distance < config.tag_threshold))
        flat = np.where(eligible, combined, -np.inf).reshape(len(left), -1)
        best = flat.argmax(axis=1)
        split = np.isfinite(flat[np.arange(len(left)), best])
        if not split.any():
            continue
        left, right, best = left[split], right[split], best[split]
        peak_y, peak_x = np.divmod(best, last - first)
        peak_y, peak_x = peak_y + top, peak_x + first
        # The person's left: 90 degrees clockwise from the body axis (image x right, y down).
        up = np.array([0.0, -1.0])
        if min(axis_joints) >= 0 and (joints[axis_joints, 2] > 0).all():
            shoulders, hips = joints[axis_joints[:2], :2].mean(axis=0), joints[axis_joints[2:], :2].mean(axis=0)
            if np.hypot(*(shoulders - hips)) > 0:
                up = (shoulders - hips) / np.hypot(*(shoulders - hips))
        leftward = np.array([-up[1], up[0]])
        peak_is_left = (np.stack([peak_x, peak_y], axis=1) - spot[split]) @ leftward > 0
        moved = np.where(peak_is_left, left, right)
        xf, yf = peak_x.astype(np.float32), peak_y.astype(np.float32)
        if config.adjust:
            dx, dy = _peak_offsets(heatmaps, moved, peak_x, peak_y, config.peak_fit)
            xf, yf = xf + dx, yf + dy
        keypoints[person, moved, 0] = xf
        keypoints[person, moved, 1] = yf
        keypoints[person, moved, 2] = heatmaps[moved, peak_y, peak_x]


def _reach_windows(keypoints: np.ndarray, reach: float, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per person, [P,2] row and [P,2] column ranges (start, stop) of the box of found joints grown on every side.

    Every person reaching refinement has at least one found joint (people are made of candidates).
    A range that holds no whole pixel (only with a reach near 0) becomes the whole axis.
    """
    found = keypoints[:, :, 2] > 0
    x = np.where(found, keypoints[:, :, 0], np.nan)
    y = np.where(found, keypoints[:, :, 1], np.nan)
    x0, x1, y0, y1 = np.nanmin(x, 1), np.nanmax(x, 1), np.nanmin(y, 1), np.nanmax(y, 1)
    grow = reach * np.maximum(np.maximum(x1 - x0, y1 - y0), 0.05 * max(height, width))
    return _inside_range(y0 - grow, y1 + grow, height), _inside_range(x0 - grow, x1 + grow, width)


def _inside_range(low: np.ndarray, high: np.ndarray, size: int) -> np.ndarray:
    """[P,2] start, stop of the pixel indices i with low <= i <= high (float32 compares), or (0, size) if none."""
    pixels = np.arange(size, dtype=np.float32)
    inside = (pixels >= low[:, None]) & (pixels <= high[:, None])
    any_inside = inside.any(axis=1)
    start = np.where(any_inside, inside.argmax(axis=1), 0)
    stop = np.where(any_inside, size - inside[:, ::-1].argmax(axis=1), size)
    return np.stack([start, stop], axis=1)


def keypoint_boxes(keypoints: np.ndarray) -> np.ndarray:
    """[P,4] float32 boxes (x1, y1, x2, y2) around each person's found joints (score > 0); zeros for none.

    ``Pose.box_from_keypoints`` for many people at once.
    """
    found = keypoints[:, :, 2] > 0
    x, y = keypoints[:, :, 0], keypoints[:, :, 1]
    boxes = np.stack([np.where(found, x, np.inf).min(axis=1, initial=np.inf),
                      np.where(found, y, np.inf).min(axis=1, initial=np.inf),
                      np.where(found, x, -np.inf).max(axis=1, initial=-np.inf),
                      np.where(found, y, -np.inf).max(axis=1, initial=-np.inf)], axis=1)
    return np.where(found.any(axis=1)[:, None], boxes, 0.0).astype(np.float32)


def pairwise_oks(keypoints: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """OKS [P,P] of person i's keypoints against person j's, over joints found (score > 0) in both.

    The scale is person i's box area (COCO's object area stand-in), so the matrix is not symmetric.
    """
    found = keypoints[:, :, 2] > 0
    xy = keypoints[:, :, :2]
    boxes = keypoint_boxes(keypoints)
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1.0)
    both = found[:, None, :] & found[None, :, :]  # [P,P,K]
    return object_keypoint_similarity(xy[:, None], xy[None, :], both, both, area[:, None], sigmas)


@dataclass
class People:
    """The decoder's people as arrays, best score first: keypoints [P,K,3] (x, y, score), scores [P], tags [P,L]."""

    keypoints: np.ndarray
    scores: np.ndarray
    tags: np.ndarray

    def poses(self, schema: KeypointSchema | None = None, image_hw: tuple[int, int] | None = None) -> list[Pose]:
        """The people as Poses. With the schema, each box is the whole body estimated from the joints
        (`model.body_box`, clipped to image_hw when given); without it, the box around the found joints."""
        if schema is None:
            boxes = keypoint_boxes(self.keypoints)
        else:
            boxes = body_boxes(self.keypoints, schema.keypoint_names, image_hw)
        return [Pose(keypoints=self.keypoints[i], score=float(self.scores[i]), box=boxes[i], tag=self.tags[i])
                for i in range(len(self.keypoints))]


def decode(
    heatmaps: np.ndarray, tags: np.ndarray, schema: KeypointSchema, config: DecodeConfig | None = None
) -> list[Pose]:
    """Group the joints in one image's maps into people. Returns poses in map pixels, best score first.

    heatmaps: [K,h,w]; tags: [K,L,h,w] (a [K,h,w] array is taken as L=1).
    """
    return decode_people(heatmaps, tags, schema, config).poses()


def decode_people(
    heatmaps: np.ndarray, tags: np.ndarray, schema: KeypointSchema, config: DecodeConfig | None = None
) -> People:
    """``decode`` without making Pose records: the people as arrays, in map pixels."""
    config = config or DecodeConfig()
    heatmaps = np.ascontiguousarray(heatmaps, dtype=np.float32)
    tags = np.asarray(tags, dtype=np.float32)
    if tags.ndim == 3:
        tags = tags[:, None]
    num_joints, height, width = heatmaps.shape
    if num_joints != schema.num_keypoints or tags.shape[0] != num_joints or tags.shape[2:] != (height, width):
        raise ValueError(
            f"maps do not match: heatmaps {heatmaps.shape}, tags {tags.shape}, schema of {schema.num_keypoints} joints"
        )
    tag_dim = tags.shape[1]
    nobody = People(np.zeros((0, num_joints, 3), np.float32), np.zeros(0, np.float32), np.zeros((0, tag_dim), np.float32))

    candidates = _find_candidates(heatmaps, tags, config)
    person_of, num_people = _group(candidates, schema, config, max(height, width))
    if num_people == 0:
        return nobody

    keypoints = np.zeros((num_people, num_joints, 3), dtype=np.float32)
    x = candidates.x.astype(np.float32)
    y = candidates.y.astype(np.float32)
    if config.adjust:
        dx, dy = _peak_offsets(heatmaps, candidates.joint, candidates.x, candidates.y, config.peak_fit)
        x, y = x + dx, y + dy
    keypoints[person_of, candidates.joint] = np.stack([x, y, candidates.score], axis=1)
    # Each person's tags summed in candidate order (as np.add.at would, at a third of its cost): reduceat adds
    # a segment's rows one after another; every person has at least one candidate.
    by_person = np.argsort(person_of, kind="stable")
    segments = np.searchsorted(person_of[by_person], np.arange(num_people))
    tag_sum = np.add.reduceat(candidates.tag[by_person].astype(np.float64), segments, axis=0)
    person_tags = (tag_sum / np.diff(segments, append=person_of.size)[:, None]).astype(np.float32)

    # Person score as in pose-ae: mean detection score over all K joints, before refinement.
    scores = keypoints[:, :, 2].mean(axis=1)
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] >= config.min_person_score][: config.max_people]
    keypoints, person_tags, scores = keypoints[order], person_tags[order], scores[order]

    if config.refine and len(keypoints):
        _refine(heatmaps, tags, keypoints, person_tags, config.peak_fit if config.adjust else None,
                config.refine_max_tag_distance, config.refine_reach)

    if config.split_mirror_pairs and len(keypoints):
        _split_mirror_pairs(heatmaps, tags, keypoints, person_tags, schema, config)

    if config.duplicate_oks_threshold <= 1.0 and len(keypoints) > 1:
        oks = pairwise_oks(keypoints, schema.sigmas_array())
        keep = np.ones(len(keypoints), dtype=bool)
        for person in range(len(keypoints)):
            if keep[person]:
                later = np.arange(person + 1, len(keypoints))
                keep[later[oks[person, later] > config.duplicate_oks_threshold]] = False
        keypoints, person_tags, scores = keypoints[keep], person_tags[keep], scores[keep]

    return People(keypoints, scores, person_tags)
