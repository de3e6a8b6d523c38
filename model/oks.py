"""Object keypoint similarity (OKS), as COCO's keypoint evaluation defines it (cocoeval.computeOks).

The one implementation the decoder (duplicate removal), the teacher (OKS-NMS), pseudo-label and recall
checks share. The tracker's association cost uses it from the squared joint offsets it already has.
"""

from __future__ import annotations

import numpy as np


def object_keypoint_similarity(xy_a: np.ndarray, xy_b: np.ndarray, counted: np.ndarray, matched: np.ndarray,
                               area: np.ndarray | float, sigmas: np.ndarray) -> np.ndarray:
    """OKS of A against B: the mean over the `counted` joints of exp(-d^2 / (2 * area * (2 sigma)^2)), d the
    distance of the joint in A and B; a counted joint that is not `matched` (e.g. labelled in A, not found in B)
    adds 0; 0 where no joint is counted.

    Leading axes broadcast, joints last: xy_a, xy_b [..., K, 2]; counted, matched [..., K] bool; area [...]
    (the object scale, COCO's segment area or a box area); sigmas [K]. Two common choices: over the joints
    both found (counted = matched = found_a & found_b), or COCO's ground truth against a detection
    (counted = labelled_a, matched = labelled_a & found_b). Works in the inputs' precision.
    """
    return oks_from_squared_distances(((xy_a - xy_b) ** 2).sum(axis=-1), counted, matched, area, sigmas)


def oks_from_squared_distances(squared: np.ndarray, counted: np.ndarray, matched: np.ndarray,
                               area: np.ndarray | float, sigmas: np.ndarray) -> np.ndarray:
    """`object_keypoint_similarity` from the joints' squared distances [..., K] (for callers that already
    have them, such as the tracker's joint offsets)."""
    variances = (2.0 * np.asarray(sigmas)) ** 2
    similarity = np.exp(-squared / (2.0 * np.asarray(area)[..., None] * variances))
    count = counted.sum(axis=-1)
    total = np.where(counted & matched, similarity, 0.0).sum(axis=-1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)
