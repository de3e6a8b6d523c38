"""Similarity matrices between tracks and detections, and the gated Hungarian assignment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

FORBIDDEN = 1e6  # cost of a gated pair; finite so that linear_sum_assignment always has a solution


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Box IoU, [A, 4] x [B, 4] (x1, y1, x2, y2) -> [A, B]."""
    a = boxes_a[:, None, :]
    b = boxes_b[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


@dataclass
class PoseOffsets:
    """How each detection sits against each track's predicted pose, on the joints both have.

    common [A, B, K]: joint found in the detection and known to the track; count [A, B];
    squared [A, B, K]: squared joint distances; shift [A, B, 2]: mean displacement of the common
    joints (the detection's centre relative to the track's, immune to half-hidden people);
    spread_ratio [A, B]: log of the detection's spread of the common joints over the track's (a size ratio).
    """

    common: np.ndarray
    count: np.ndarray
    squared: np.ndarray
    shift: np.ndarray
    spread_ratio: np.ndarray


def pose_offsets(keypoints_a: np.ndarray, known_a: np.ndarray, keypoints_b: np.ndarray,
                 visible_b: np.ndarray) -> PoseOffsets:
    """Joint-wise comparison of predicted poses [A, K, 2] (known_a [A, K]) with detections [B, K, 2] (visible_b)."""
    common = known_a[:, None, :] & visible_b[None, :, :]
    weight = common.astype(np.float64)
    count = weight.sum(-1)
    safe = np.maximum(count, 1.0)[..., None]
    a = np.broadcast_to(keypoints_a[:, None, :, :], common.shape + (2,))
    b = np.broadcast_to(keypoints_b[None, :, :, :], common.shape + (2,))
    mean_a = (a * weight[..., None]).sum(2) / safe
    mean_b = (b * weight[..., None]).sum(2) / safe
    diff = b - a
    squared = (diff * diff).sum(-1)
    shift = mean_b - mean_a
    spread_a = ((((a - mean_a[:, :, None, :]) ** 2).sum(-1)) * weight).sum(-1)
    spread_b = ((((b - mean_b[:, :, None, :]) ** 2).sum(-1)) * weight).sum(-1)
    spread_ratio = 0.5 * np.log((spread_b + 1.0) / (spread_a + 1.0))
    return PoseOffsets(common=common, count=count, squared=squared, shift=shift, spread_ratio=spread_ratio)


def oks_from_offsets(offsets: PoseOffsets, areas_a: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """OKS as in COCO evaluation (scale: the area of A) over the common joints; 0 where none."""
    variances = (2.0 * sigmas) ** 2
    e = offsets.squared / (2.0 * variances[None, None, :] * (areas_a[:, None, None] + 1e-9))
    total = (np.exp(-e) * offsets.common).sum(-1)
    return np.where(offsets.count > 0, total / np.maximum(offsets.count, 1.0), 0.0)


def oks_matrix(
    keypoints_a: np.ndarray,
    visible_a: np.ndarray,
    areas_a: np.ndarray,
    keypoints_b: np.ndarray,
    visible_b: np.ndarray,
    sigmas: np.ndarray,
) -> np.ndarray:
    """Object keypoint similarity as in COCO evaluation, over the joints found in both.

    keypoints_a [A, K, 2] with visible_a [A, K] and areas_a [A] (the scale of A); keypoints_b [B, K, 2],
    visible_b [B, K]. Returns [A, B]; 0 where the two share no joint.
    """
    d2 = ((keypoints_a[:, None, :, :] - keypoints_b[None, :, :, :]) ** 2).sum(-1)  # [A, B, K]
    variances = (2.0 * sigmas) ** 2
    e = d2 / (2.0 * variances[None, None, :] * (areas_a[:, None, None] + 1e-9))
    both = visible_a[:, None, :] & visible_b[None, :, :]
    count = both.sum(-1)
    total = (np.exp(-e) * both).sum(-1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def tag_distance_matrix(tags_a: np.ndarray, tags_b: np.ndarray) -> np.ndarray:
    """Euclidean distance between tag vectors, [A, L] x [B, L] -> [A, B] (any L)."""
    return np.sqrt(((tags_a[:, None, :] - tags_b[None, :, :]) ** 2).sum(-1))


def mahalanobis_matrix(shifts: np.ndarray, covariances: np.ndarray) -> np.ndarray:
    """Mahalanobis length of displacements [A, B, 2] under covariances [A, 2, 2] -> [A, B]."""
    a, b, d = covariances[:, 0, 0], covariances[:, 0, 1], covariances[:, 1, 1]
    det = np.maximum(a * d - b * b, 1e-9)
    dx, dy = shifts[..., 0], shifts[..., 1]
    m2 = (d[:, None] * dx * dx - 2.0 * b[:, None] * dx * dy + a[:, None] * dy * dy) / det[:, None]
    return np.sqrt(np.maximum(m2, 0.0))


def assign(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost matching (Hungarian); pairs at FORBIDDEN cost are left unmatched."""
    if cost.size == 0:
        return []
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if cost[r, c] < FORBIDDEN]
