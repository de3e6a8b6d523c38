"""Similarity matrices between tracks and detections, and the gated Hungarian assignment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from tagtrack.model.oks import oks_from_squared_distances

FORBIDDEN = 1e6  # cost of a gated pair; finite so that linear_sum_assignment always has a solution


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Box IoU, [A, 4] x [B, 4] (x1, y1, x2, y2) -> [A, B]."""
    a = boxes_a[:, None, :]
    b = boxes_b[None, :, :]
    iw = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0)
    ih = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


@dataclass
class PoseOffsets:
    """How each detection sits against each track's predicted pose, on the joints both have.

    common [A, B, K]: joint found in the detection and known to the track; count [A, B];
    diff [A, B, K, 2]: detection joint minus predicted joint; squared [A, B, K]: its squared length;
    shift [A, B, 2]: mean displacement over the common joints (the detection's position relative to
    the track's prediction, unaffected by which part of the person is hidden).
    """

    common: np.ndarray
    count: np.ndarray
    diff: np.ndarray
    squared: np.ndarray
    shift: np.ndarray


def pose_offsets(keypoints_a: np.ndarray, known_a: np.ndarray, keypoints_b: np.ndarray,
                 visible_b: np.ndarray) -> PoseOffsets:
    """Joint-wise comparison of predicted poses [A, K, 2] (known_a [A, K]) with detections [B, K, 2] (visible_b)."""
    common = known_a[:, None, :] & visible_b[None, :, :]
    count = common.sum(-1).astype(np.float64)
    diff = keypoints_b[None, :, :, :] - keypoints_a[:, None, :, :]
    squared = (diff * diff).sum(-1)
    shift = (diff * common[..., None]).sum(2) / np.maximum(count, 1.0)[..., None]
    return PoseOffsets(common=common, count=count, diff=diff, squared=squared, shift=shift)


def spread_ratio(offsets: PoseOffsets, keypoints_a: np.ndarray, keypoints_b: np.ndarray) -> np.ndarray:
    """[A, B] log of B's size over A's, from the spread of their common joints about their means."""
    weight = offsets.common.astype(np.float64)
    safe = np.maximum(offsets.count, 1.0)
    a = keypoints_a[:, None, :, :]
    b = keypoints_b[None, :, :, :]
    mean_a = (a * weight[..., None]).sum(2) / safe[..., None]
    mean_b = (b * weight[..., None]).sum(2) / safe[..., None]
    spread_a = (((a - mean_a[:, :, None, :]) ** 2).sum(-1) * weight).sum(-1)
    spread_b = (((b - mean_b[:, :, None, :]) ** 2).sum(-1) * weight).sum(-1)
    return 0.5 * np.log((spread_b + 1.0) / (spread_a + 1.0))


def oks_from_offsets(offsets: PoseOffsets, areas_a: np.ndarray, sigmas: np.ndarray,
                     spread_a: np.ndarray | None = None) -> np.ndarray:
    """OKS as in COCO evaluation (scale: the area of A) over the common joints; 0 where none.

    spread_a [A]: a variance (pixels^2 per axis) by which A's joints are less sure than COCO's scale says, such
    as a predicted pose's uncertainty; each joint's Gaussian exp(-d^2 / (2 area (2 sigma)^2)) then widens to
    exp(-d^2 / (2 (area (2 sigma)^2 + spread))), the joint's own spread convolved with the prediction's.
    """
    squared = offsets.squared
    if spread_a is not None:
        # Written as shorter distances under COCO's own formula, so the one OKS implementation stays in use.
        joint_variance = areas_a[:, None, None] * (2.0 * np.asarray(sigmas)) ** 2
        squared = squared * joint_variance / (joint_variance + spread_a[:, None, None] + 1e-9)
    return oks_from_squared_distances(squared, offsets.common, offsets.common, areas_a[:, None] + 1e-9, sigmas)


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
    return oks_from_offsets(pose_offsets(keypoints_a, visible_a, keypoints_b, visible_b), areas_a, sigmas)


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
