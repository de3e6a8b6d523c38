"""Synthetic multi-person sequences with known identities: the tracker's benchmark and test scenes.

People (COCO-17 skeletons with swinging arms and legs) walk back and forth between the left and
the right of the picture, so their paths cross; nearer people hide the joints of farther ones, a
pillar hides everyone walking behind it, people leave the picture and come back. Detections get
keypoint noise, missed joints, weak (low-score) people, false people, and tags: a consistent
per-person tag that drifts slowly, or a random tag per detection (a model whose tags carry no
temporal meaning). Frames come at an irregular rate with occasional gaps. Everything is seeded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tagtrack.model.pose import Pose

# COCO-17 standing pose, facing the camera, in person heights, relative to the mid-hip point
# (x to the image right, y down). The person's left is on the image right.
_TEMPLATE = np.array([
    [0.00, -0.44], [0.025, -0.46], [-0.025, -0.46], [0.05, -0.45], [-0.05, -0.45],
    [0.11, -0.32], [-0.11, -0.32], [0.14, -0.17], [-0.14, -0.17], [0.15, -0.03], [-0.15, -0.03],
    [0.07, 0.0], [-0.07, 0.0], [0.075, 0.23], [-0.075, 0.23], [0.075, 0.46], [-0.075, 0.46],
])
_LEFT_LEG, _RIGHT_LEG = (13, 15), (14, 16)
_LEFT_ARM, _RIGHT_ARM = (7, 9), (8, 10)
HIP_TO_FEET = 0.48  # person heights from the mid-hip point down to the soles


@dataclass
class SceneConfig:
    """What a synthetic sequence looks like. Sizes in pixels, times in seconds."""

    width: int = 1280
    height: int = 720
    num_people: int = 6
    duration: float = 12.0
    fps: float = 30.0
    frame_jitter: float = 0.3        # each interval varies by up to this fraction
    frame_drop: float = 0.03         # probability that a frame is missing (a gap in time)
    person_height: tuple[float, float] = (170.0, 330.0)  # far (top of the floor) .. near (bottom)
    speed: tuple[float, float] = (0.4, 1.1)  # person heights per second
    keypoint_noise: float = 0.012    # std of joint positions, in person heights
    missed_joint: float = 0.08       # probability that a visible joint is not found
    weak_person: float = 0.08        # probability that a person is found with low scores
    false_people: float = 0.3        # mean number of false people per frame
    occluders: int = 1               # vertical pillars in front of everyone
    occluder_width: float = 80.0
    min_visible_joints: int = 4      # fewer found joints: the person is not detected
    tag_mode: str = "consistent"     # "consistent": per-person tag with drift; "random": meaningless tags
    tag_dim: int = 4
    tag_spread: float = 1.0          # std of the people's tags around 0
    tag_drift: float = 0.05          # random walk of a person's tag, per sqrt(second)
    tag_noise: float = 0.08          # std of the tag of one detection around the person's tag

    def __post_init__(self) -> None:
        if self.tag_mode not in ("consistent", "random"):
            raise ValueError(f"tag_mode must be 'consistent' or 'random', got {self.tag_mode!r}")


@dataclass
class SyntheticFrame:
    """One frame: the detections a pose model would give, and the truth behind them.

    poses: detections (true and false people, shuffled); truth_ids: per pose, the person's id or -1
    for a false person. gt_ids / gt_boxes / gt_keypoints: the detected true people, with the box and
    joints of their noise-free positions (joint score 1 where the detection found the joint).
    """

    timestamp: float
    poses: list[Pose]
    truth_ids: list[int]
    gt_ids: list[int]
    gt_boxes: np.ndarray
    gt_keypoints: np.ndarray


@dataclass
class SyntheticSequence:
    config: SceneConfig
    seed: int
    frames: list[SyntheticFrame] = field(default_factory=list)


@dataclass
class _Walker:
    x: float
    feet_y: float
    speed: float       # px / s at the reference height
    target: np.ndarray
    going_right: bool
    phase: float
    tag: np.ndarray


def person_height_at(feet_y: float, config: SceneConfig) -> float:
    """Perspective: people whose feet are lower in the picture are nearer, hence taller."""
    floor_top = 0.45 * config.height
    t = (feet_y - floor_top) / (config.height - floor_top)
    far, near = config.person_height
    return far + (near - far) * float(np.clip(t, 0.0, 1.0))


def skeleton(x: float, feet_y: float, height: float, phase: float, facing_right: bool) -> np.ndarray:
    """True joint positions [17, 2] of a walking person whose feet are at (x, feet_y)."""
    joints = _TEMPLATE.copy()
    swing = math.sin(phase)
    direction = 1.0 if facing_right else -1.0
    for knee, ankle in (_LEFT_LEG, _RIGHT_LEG):
        sign = 1.0 if knee == _LEFT_LEG[0] else -1.0
        joints[knee, 0] += direction * sign * 0.06 * swing
        joints[ankle, 0] += direction * sign * 0.13 * swing
    for elbow, wrist in (_LEFT_ARM, _RIGHT_ARM):
        sign = -1.0 if elbow == _LEFT_ARM[0] else 1.0  # arms swing against the legs
        joints[elbow, 0] += direction * sign * 0.03 * swing
        joints[wrist, 0] += direction * sign * 0.07 * swing
    return joints * height + np.array([x, feet_y - HIP_TO_FEET * height])


def _box(points: np.ndarray) -> np.ndarray:
    return np.array([points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()],
                    dtype=np.float32)


def _new_target(rng: np.random.Generator, going_right: bool, config: SceneConfig) -> np.ndarray:
    w, h = config.width, config.height
    x = rng.uniform(0.72 * w, 1.1 * w) if going_right else rng.uniform(-0.1 * w, 0.28 * w)
    return np.array([x, rng.uniform(0.5 * h, 0.98 * h)])


def _timestamps(rng: np.random.Generator, config: SceneConfig) -> list[float]:
    interval = 1.0 / config.fps
    times, t = [], 0.0
    while t <= config.duration:
        if rng.random() >= config.frame_drop or not times:
            times.append(t)
        t += interval * (1.0 + rng.uniform(-config.frame_jitter, config.frame_jitter))
    return times


def _make_tag(rng: np.random.Generator, config: SceneConfig) -> np.ndarray:
    return rng.normal(0.0, config.tag_spread, config.tag_dim)


def generate_sequence(config: SceneConfig, seed: int) -> SyntheticSequence:
    """A seeded synthetic sequence; the same (config, seed) always gives the same frames."""
    rng = np.random.default_rng(seed)
    walkers = []
    for _ in range(config.num_people):
        going_right = bool(rng.random() < 0.5)
        walkers.append(_Walker(
            x=rng.uniform(0.05, 0.95) * config.width, feet_y=rng.uniform(0.5, 0.98) * config.height,
            speed=rng.uniform(*config.speed) * float(np.mean(config.person_height)),
            target=_new_target(rng, going_right, config), going_right=going_right,
            phase=rng.uniform(0, 2 * math.pi), tag=_make_tag(rng, config),
        ))
    pillars = [rng.uniform(0.25, 0.75) * config.width for _ in range(config.occluders)]
    sequence = SyntheticSequence(config=config, seed=seed)
    previous = None
    for timestamp in _timestamps(rng, config):
        dt = 0.0 if previous is None else timestamp - previous
        previous = timestamp
        for walker in walkers:
            _walk(walker, dt, rng, config)
        sequence.frames.append(_render_frame(walkers, pillars, timestamp, rng, config))
    return sequence


def _walk(walker: _Walker, dt: float, rng: np.random.Generator, config: SceneConfig) -> None:
    position = np.array([walker.x, walker.feet_y])
    offset = walker.target - position
    distance = float(np.linalg.norm(offset))
    height = person_height_at(walker.feet_y, config)
    step = walker.speed * height / float(np.mean(config.person_height)) * dt
    if distance <= step:
        walker.going_right = not walker.going_right
        walker.target = _new_target(rng, walker.going_right, config)
    else:
        position += offset / distance * step
        walker.x, walker.feet_y = float(position[0]), float(position[1])
    walker.phase += 2.0 * math.pi * step / (0.9 * height)
    walker.tag = walker.tag + rng.normal(0.0, config.tag_drift * math.sqrt(max(dt, 0.0)), config.tag_dim)


def _render_frame(walkers: list[_Walker], pillars: list[float], timestamp: float, rng: np.random.Generator,
                  config: SceneConfig) -> SyntheticFrame:
    people = []
    for walker in walkers:
        height = person_height_at(walker.feet_y, config)
        facing_right = walker.target[0] > walker.x
        people.append((walker, height, skeleton(walker.x, walker.feet_y, height, walker.phase, facing_right)))
    poses, truth_ids, gt_ids, gt_boxes, gt_keypoints = [], [], [], [], []
    for person_id, (walker, height, joints) in enumerate(people):
        visible = ((joints[:, 0] >= 0) & (joints[:, 0] < config.width)
                   & (joints[:, 1] >= 0) & (joints[:, 1] < config.height))
        for pillar in pillars:
            visible &= np.abs(joints[:, 0] - pillar) > 0.5 * config.occluder_width
        for other, other_height, other_joints in people:
            if other is walker or other.feet_y <= walker.feet_y:
                continue  # only nearer people (feet lower in the picture) hide this one
            box = _box(other_joints)
            margin = 0.04 * other_height
            inside = ((joints[:, 0] > box[0] + margin) & (joints[:, 0] < box[2] - margin)
                      & (joints[:, 1] > box[1]) & (joints[:, 1] < box[3]))
            visible &= ~inside
        seen_fraction = visible.mean()
        found = visible & (rng.random(17) >= config.missed_joint)
        if found.sum() < config.min_visible_joints:
            continue
        weak = rng.random() < config.weak_person or (seen_fraction < 0.6 and rng.random() < 0.5)
        scores = rng.uniform(0.12, 0.48, 17) if weak else rng.uniform(0.55, 1.0, 17)
        noisy = joints + rng.normal(0.0, config.keypoint_noise * height, joints.shape)
        tag = (walker.tag + rng.normal(0.0, config.tag_noise, config.tag_dim) if config.tag_mode == "consistent"
               else _make_tag(rng, config))
        poses.append(_pose(noisy, found, scores, tag))
        truth_ids.append(person_id)
        gt_ids.append(person_id)
        gt_boxes.append(_box(joints[found]))
        truth = np.zeros((17, 3), dtype=np.float32)
        truth[:, :2] = joints
        truth[:, 2] = found
        gt_keypoints.append(truth)
    for _ in range(rng.poisson(config.false_people)):
        poses.append(_false_person(rng, config))
        truth_ids.append(-1)
    order = rng.permutation(len(poses))
    return SyntheticFrame(
        timestamp=timestamp,
        poses=[poses[i] for i in order],
        truth_ids=[truth_ids[i] for i in order],
        gt_ids=gt_ids,
        gt_boxes=np.array(gt_boxes, dtype=np.float32).reshape(-1, 4),
        gt_keypoints=np.array(gt_keypoints, dtype=np.float32).reshape(-1, 17, 3),
    )


def _pose(joints: np.ndarray, found: np.ndarray, scores: np.ndarray, tag: np.ndarray) -> Pose:
    keypoints = np.zeros((17, 3), dtype=np.float32)
    keypoints[found, :2] = joints[found]
    keypoints[found, 2] = scores[found]
    return Pose(keypoints=keypoints, score=float(scores[found].mean()), box=Pose.box_from_keypoints(keypoints),
                tag=np.asarray(tag, dtype=np.float32))


def _false_person(rng: np.random.Generator, config: SceneConfig) -> Pose:
    """A few joints where nobody is: what a pose model finds in clutter."""
    height = rng.uniform(*config.person_height)
    centre = rng.uniform([0, 0], [config.width, config.height])
    joints = _TEMPLATE * height + centre + rng.normal(0.0, 0.08 * height, _TEMPLATE.shape)
    found = np.zeros(17, dtype=bool)
    found[rng.choice(17, size=int(rng.integers(config.min_visible_joints, 9)), replace=False)] = True
    return _pose(joints, found, rng.uniform(0.2, 0.75, 17), _make_tag(rng, config))
