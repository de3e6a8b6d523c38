"""One-Euro filter (Casiez et al., CHI 2012) over an array of coordinates, with per-element resets."""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Low-pass filter whose cutoff rises with speed: steady when still, little lag when moving.

    Filters an array of shape [N, D] (for a pose: [K, 2]); rows whose `valid` flag is False are
    forgotten, so a joint that reappears starts afresh instead of sliding in from where it was.
    `scale` divides the speed, so `beta` is in units of that scale (for a person: sizes per second).
    """

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float) -> None:
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._known: np.ndarray | None = None
        self._t: float | None = None

    def reset(self) -> None:
        self._x = self._dx = self._known = None
        self._t = None

    def __call__(self, x: np.ndarray, timestamp: float, valid: np.ndarray, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        valid = np.asarray(valid, dtype=bool)
        if self._x is None or self._x.shape != x.shape or self._t is None:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            self._known = valid.copy()
            self._t = timestamp
            return x.copy()
        dt = timestamp - self._t
        self._t = timestamp
        fresh = valid & ~self._known  # joints seen now but not last time: start from the measurement
        if dt <= 0.0:
            # Same instant again: nothing to filter over; take fresh joints, keep the rest.
            self._x[fresh] = x[fresh]
            self._dx[fresh] = 0.0
            self._known = valid.copy()
            return np.where(valid[:, None], self._x, x)
        dx = (x - self._x) / dt
        dx_hat = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        speed = np.linalg.norm(dx_hat, axis=1, keepdims=True) / max(scale, 1e-6)
        cutoff = self.min_cutoff + self.beta * speed
        x_hat = self._x + _alpha(cutoff, dt) * (x - self._x)
        x_hat[fresh] = x[fresh]
        dx_hat[fresh] = 0.0
        self._x = np.where(valid[:, None], x_hat, x)
        self._dx = np.where(valid[:, None], dx_hat, 0.0)
        self._known = valid.copy()
        return self._x.copy()
