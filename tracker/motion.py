"""Constant-velocity Kalman filter (filterpy) on a person's box: centre, size and aspect."""

from __future__ import annotations

import math

import numpy as np
from filterpy.common import Q_continuous_white_noise
from filterpy.kalman import KalmanFilter

MIN_BOX_SIDE = 4.0  # pixels; a box from one or two joints is thin, not empty
_H = np.eye(4, 7)
_R_ASPECT = np.diag([0.0, 0.0, 0.0, 0.1])  # measurement noise of the log aspect; the rest set per update


def box_to_measurement(box: np.ndarray) -> np.ndarray:
    """x1, y1, x2, y2 -> centre x, centre y, size sqrt(w h), log aspect log(w / h)."""
    w = max(float(box[2] - box[0]), MIN_BOX_SIDE)
    h = max(float(box[3] - box[1]), MIN_BOX_SIDE)
    return np.array([(box[0] + box[2]) * 0.5, (box[1] + box[3]) * 0.5, math.sqrt(w * h), math.log(w / h)])


def measurement_to_box(z: np.ndarray) -> np.ndarray:
    size = max(float(z[2]), 1.0)
    half_w = 0.5 * size * math.exp(0.5 * float(z[3]))
    half_h = 0.5 * size * math.exp(-0.5 * float(z[3]))
    return np.array([z[0] - half_w, z[1] - half_h, z[0] + half_w, z[1] + half_h])


def _unit_noise() -> tuple[np.ndarray, np.ndarray]:
    block = Q_continuous_white_noise(dim=2, dt=1.0, spectral_density=1.0)
    q = np.zeros((7, 7))
    powers = np.zeros((7, 7), dtype=np.int64)
    for position, velocity in ((0, 4), (1, 5), (2, 6)):
        q[np.ix_((position, velocity), (position, velocity))] = block
        powers[np.ix_((position, velocity), (position, velocity))] = [[3, 2], [2, 1]]
    return q, powers


_Q_ONE_SECOND, _Q_POWERS = _unit_noise()


class MotionStep:
    """Transition and unit process noise for one time step, shared by every track of a frame."""

    def __init__(self, dt: float) -> None:
        self.dt = dt
        self.F = np.eye(7)
        self.F[0, 4] = self.F[1, 5] = self.F[2, 6] = dt
        # Continuous white-noise acceleration: predicting over dt1 then dt2 equals predicting over
        # dt1 + dt2, so irregular frame spacing and gaps give the same answer as steady frames.
        # Each entry of that noise is a power of dt (dt^3/3, dt^2/2, dt): scale filterpy's dt = 1 matrix.
        self.Q_unit = _Q_ONE_SECOND * np.array([1.0, dt, dt * dt, dt * dt * dt])[_Q_POWERS]
        self.aspect_var = 0.05 * dt  # the log aspect is a slow random walk (arms and legs swing)


class BoxMotion:
    """One person's box in a filterpy KalmanFilter; state [cx, cy, size, log aspect, vx, vy, vsize]."""

    def __init__(self, box: np.ndarray, measurement_noise: float, acceleration_noise: float) -> None:
        self.measurement_noise = measurement_noise
        self.acceleration_noise = acceleration_noise
        z = box_to_measurement(box)
        size = z[2]
        self.kf = KalmanFilter(dim_x=7, dim_z=4)
        self.kf.H = _H.copy()
        self.kf.x[:4, 0] = z
        pos = (measurement_noise * size) ** 2
        vel = (1.0 * size) ** 2  # unknown velocity at birth: about one person size per second
        self.kf.P = np.diag([pos, pos, pos, 0.1, vel, vel, vel * 0.25])

    @property
    def size(self) -> float:
        return max(float(self.kf.x[2, 0]), 1.0)

    @property
    def centre(self) -> np.ndarray:
        return self.kf.x[:2, 0]

    @property
    def velocity_x(self) -> float:
        """The centre's horizontal speed, px/s."""
        return float(self.kf.x[4, 0])

    def box(self) -> np.ndarray:
        return measurement_to_box(self.kf.x[:4, 0])

    def position_variance(self) -> float:
        """The centre's variance per axis (pixels^2, the mean of x and y): how sure the filter is of where the person is."""
        return 0.5 * float(self.kf.P[0, 0] + self.kf.P[1, 1])

    def predict(self, step: MotionStep) -> None:
        if step.dt <= 0.0:
            return
        size = self.size
        Q = step.Q_unit * (self.acceleration_noise * size * size)
        Q[3, 3] = step.aspect_var
        self.kf.predict(F=step.F, Q=Q)
        if self.kf.x[2, 0] < MIN_BOX_SIDE:  # a long-lost person must not shrink through zero
            self.kf.x[2, 0] = MIN_BOX_SIDE
            self.kf.x[6, 0] = 0.0

    def hold_size(self) -> None:
        """Stop the size changing while the person is unseen: a size trend fitted on a partly hidden
        person would otherwise shrink or blow up the box over a second of prediction."""
        self.kf.x[6, 0] = 0.0

    def update(self, box: np.ndarray) -> None:
        z = box_to_measurement(box)
        sd = self.measurement_noise * max(self.size, z[2])
        R = _R_ASPECT.copy()
        R[0, 0] = R[1, 1] = R[2, 2] = sd * sd
        self.kf.update(z, R=R)
