"""One-Euro filter (Casiez et al., CHI 2012) for many poses at once, with per-joint restarts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class OneEuroState:
    """What the filter remembers of one pose: filtered joints [K, D], their speed, which were found, when."""

    x: np.ndarray
    dx: np.ndarray
    known: np.ndarray
    timestamp: float


@dataclass(frozen=True)
class OneEuroParams:
    min_cutoff: float  # Hz: the cutoff when still; lower is steadier
    beta: float        # cutoff rise per unit of speed (speed in `scale` units per second)
    d_cutoff: float    # Hz, for the speed estimate


def _alpha(cutoff: np.ndarray, dt: np.ndarray) -> np.ndarray:
    # tau = 1 / (2 pi cutoff); alpha = 1 / (1 + tau / dt)
    return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff * dt))


def one_euro_step(states: list[OneEuroState | None], x: np.ndarray, valid: np.ndarray, timestamp: float,
                  scale: np.ndarray, params: OneEuroParams) -> tuple[np.ndarray, list[OneEuroState]]:
    """Filter M poses x [M, K, D] (valid [M, K]) taken at `timestamp`, each against its own state.

    A state of None (a new pose) starts from the measurement. A joint not found now, or found now but
    not last time, restarts from the measurement rather than sliding in from where it was; `scale` [M]
    divides the speed so that `beta` does not depend on how big the person is in the picture.
    Returns the filtered [M, K, D] and the new states.
    """
    count = x.shape[0]
    if count == 0:
        return x.copy(), []
    started = np.array([s is not None for s in states])
    previous = np.array([s.x if s is not None else x[i] for i, s in enumerate(states)])
    previous_dx = np.array([s.dx if s is not None else np.zeros_like(x[i]) for i, s in enumerate(states)])
    known = np.array([s.known if s is not None else np.zeros_like(valid[i]) for i, s in enumerate(states)])
    dt = np.array([timestamp - s.timestamp if s is not None else 0.0 for s in states])
    moving = dt > 0.0
    safe_dt = np.where(moving, dt, 1.0)[:, None, None]
    alpha_d = _alpha(np.float64(params.d_cutoff), safe_dt)
    dx_hat = previous_dx + alpha_d * ((x - previous) / safe_dt - previous_dx)
    speed = np.sqrt((dx_hat * dx_hat).sum(-1))
    cutoff = params.min_cutoff + (params.beta / np.maximum(scale, 1e-6))[:, None] * speed
    x_hat = previous + _alpha(cutoff, safe_dt[..., 0])[..., None] * (x - previous)
    restart = ~(valid & known & started[:, None])
    same_instant = ~moving
    if same_instant.any():  # the same instant again: nothing to filter over, keep what was there
        x_hat[same_instant] = previous[same_instant]
        dx_hat[same_instant] = previous_dx[same_instant]
    x_hat[restart] = x[restart]
    dx_hat[restart] = 0.0
    new_states = [OneEuroState(x_hat[i], dx_hat[i], valid[i].copy(), timestamp) for i in range(count)]
    return x_hat, new_states
