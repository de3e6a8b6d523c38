"""Synthetic scenes for the decoder: random people and the maps an ideal network would output for them.

They live in ``model/``, beside the codec whose ``render_heatmaps`` and ``render_tag_maps`` draw them, because
both the decode benchmark (``bench/decode.py``) and the tests (``tests/test_codec.py``, ``tests/test_predict.py``,
``tests/test_draw.py``) use them, and neither may take them from the other.
"""

from __future__ import annotations

import numpy as np

from tagtrack.model.codec import render_heatmaps, render_tag_maps

# A standing person facing the camera, COCO-17 order, in units of body height around the body centre.
# The person's left is the image's right.
BODY_TEMPLATE = np.array([
    (0.00, -0.40), (0.03, -0.43), (-0.03, -0.43), (0.07, -0.41), (-0.07, -0.41),
    (0.14, -0.28), (-0.14, -0.28), (0.18, -0.10), (-0.18, -0.10), (0.20, 0.05), (-0.20, 0.05),
    (0.09, 0.05), (-0.09, 0.05), (0.10, 0.27), (-0.10, 0.27), (0.10, 0.48), (-0.10, 0.48),
])


def synthetic_people(
    rng: np.random.Generator,
    num_people: int,
    height: int,
    width: int,
    tag_dim: int = 1,
    body_height: tuple[float, float] = (16.0, 40.0),
    missing_fraction: float = 0.15,
    min_separation: float = 6.0,
    tag_gap: float = 3.0,
    margin: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Random people on a height x width grid: keypoints [N,K,3] (x, y, visible 0/1) and tags [N,L].

    Joints of one type belong to different people only if at least ``min_separation`` apart (so
    each is its own heatmap peak); person tags are at least ``tag_gap`` apart (L2). People may
    overlap. Raises RuntimeError if the people do not fit.
    """
    people: list[np.ndarray] = []
    attempts = 0
    while len(people) < num_people:
        attempts += 1
        if attempts > 2000 * max(num_people, 1):
            raise RuntimeError(f"cannot place {num_people} people on a {height}x{width} map")
        size = rng.uniform(*body_height)
        half_w, half_h = 0.2 * size + margin, 0.48 * size + margin
        if 2 * half_w >= width or 2 * half_h >= height:
            continue
        centre = rng.uniform([half_w, half_h], [width - half_w, height - half_h])
        xy = centre + BODY_TEMPLATE * size + rng.uniform(-0.04, 0.04, BODY_TEMPLATE.shape) * size
        if people and np.linalg.norm(np.stack(people) - xy[None], axis=2).min() < min_separation:
            continue
        people.append(xy)
    keypoints = np.zeros((num_people, len(BODY_TEMPLATE), 3))
    if num_people:
        keypoints[:, :, :2] = np.stack(people)
        visible = rng.random((num_people, len(BODY_TEMPLATE))) >= missing_fraction
        visible[np.arange(num_people), rng.integers(0, len(BODY_TEMPLATE), num_people)] = True  # never empty
        keypoints[:, :, 2] = visible
    return keypoints, separated_tags(rng, num_people, tag_dim, tag_gap)


def separated_tags(rng: np.random.Generator, num_people: int, tag_dim: int, gap: float) -> np.ndarray:
    """[N,L] float32 tag vectors at least ``gap`` apart, spread over a cube that comfortably fits them."""
    side = gap * max(2.0, 2.0 * num_people ** (1.0 / tag_dim))
    tags: list[np.ndarray] = []
    while len(tags) < num_people:
        candidate = rng.uniform(-side / 2, side / 2, tag_dim)
        if not tags or np.linalg.norm(np.stack(tags) - candidate, axis=1).min() >= gap:
            tags.append(candidate)
    return np.array(tags, dtype=np.float32).reshape(num_people, tag_dim)


def synthetic_maps(
    keypoints: np.ndarray,
    person_tags: np.ndarray,
    height: int,
    width: int,
    sigma: float = 2.0,
    tag_noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps [K,h,w] and tag maps [K,L,h,w] for these people, with optional uniform tag noise per pixel."""
    heatmaps = render_heatmaps(keypoints, height, width, sigma)
    tags = render_tag_maps(keypoints, person_tags, height, width, sigma)
    if tag_noise > 0:
        rng = rng or np.random.default_rng(0)
        tags += rng.uniform(-tag_noise, tag_noise, tags.shape).astype(np.float32)
    return heatmaps, tags
