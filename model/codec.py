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
    grouping order (Hungarian match on tag distance and detection score) -> quarter-pixel adjustment
    -> refinement of missing joints from the person's mean tag -> person score, cap, OKS de-duplication.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from model.pose import Pose
from model.schema import KeypointSchema

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
    person_tags = np.asarray(person_tags, dtype=np.float32).reshape(keypoints.shape[0], -1)
    num_people, num_joints = keypoints.shape[:2]
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
