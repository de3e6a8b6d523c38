"""Synthetic COCO-format keypoint data: stick-figure people on textured backgrounds.

Used by the tests (a dataset small enough to overfit on a CPU) and for smoke-testing a training
setup. Each person is a COCO-17 skeleton built from a few pose parameters (centre, height, joint
angles); limbs are drawn in a fixed colour per limb so that left and right differ, as in real
images where context tells them apart. Scenes may contain occluders (joints marked visibility 1),
people partly out of frame (those joints unlabelled), people without keypoints (ignore regions)
and crowd regions (`iscrowd` 1). Clips move people smoothly over frames and carry a `track_id`
per annotation and `video_id` / `frame_id` per image, the format `training.dataset` reads for
pairs of frames. Everything is a function of the seed.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from tagtrack.model.errors import import_extra
from tagtrack.model.schema import COCO17

log = logging.getLogger(__name__)

# BGR colour per skeleton edge of COCO17 (left side warm, right side cool, head/torso neutral).
_LEFT = {(15, 13), (13, 11), (5, 11), (5, 7), (7, 9), (1, 3), (3, 5), (0, 1)}
_RIGHT = {(16, 14), (14, 12), (6, 12), (6, 8), (8, 10), (2, 4), (4, 6), (0, 2)}


def _edge_colour(edge: tuple[int, int], index: int) -> tuple[int, int, int]:
    shade = 90 + (index * 37) % 150
    if edge in _LEFT:
        return (40, 60 + shade // 2, 255 - shade // 3)
    if edge in _RIGHT:
        return (255 - shade // 3, 60 + shade // 2, 40)
    return (60 + shade // 2, 230, 60 + shade // 2)


EDGE_COLOURS = [_edge_colour(edge, i) for i, edge in enumerate(COCO17.skeleton)]


@dataclass(frozen=True)
class SceneConfig:
    """What a generated scene may contain. Sizes are fractions of the image height."""

    width: int = 256
    height: int = 256
    min_people: int = 1
    max_people: int = 4
    min_person_height: float = 0.35
    max_person_height: float = 0.9
    pose_variation: float = 1.0  # 0: everyone in the same rest pose; 1: full random limbs
    occluder_probability: float = 0.25
    out_of_frame_probability: float = 0.15
    unlabelled_probability: float = 0.15  # a small person annotated without keypoints (ignore region)
    crowd_probability: float = 0.15


# Config for data a tiny model can overfit: big people fully in frame, nothing ignored.
OVERFIT_SCENE = SceneConfig(
    width=128, height=128, min_people=1, max_people=2, min_person_height=0.7, max_person_height=0.85,
    pose_variation=0.5, occluder_probability=0.0, out_of_frame_probability=0.0,
    unlabelled_probability=0.0, crowd_probability=0.0,
)


@dataclass
class StickPose:
    """Parameters of one stick figure; `keypoints()` turns them into COCO-17 pixel positions."""

    centre_x: float  # pelvis centre, image pixels
    centre_y: float
    height: float  # pixels, top of head to feet
    torso_angle: float  # radians from vertical
    limb_angles: np.ndarray  # 8 angles: l/r upper arm, l/r forearm, l/r thigh, l/r shin (from hanging down)
    head_turn: float  # -1..1, shifts the face sideways

    def keypoints(self) -> np.ndarray:
        """[17, 2] x, y in pixels. Left joints are on the image's right (person faces the camera)."""
        h = self.height
        up = np.array([math.sin(self.torso_angle), -math.cos(self.torso_angle)])
        side = np.array([-up[1], up[0]])  # the person's left, i.e. image right when upright
        pelvis = np.array([self.centre_x, self.centre_y])
        neck = pelvis + 0.30 * h * up
        points = np.zeros((17, 2))
        nose = neck + 0.13 * h * up + 0.02 * h * self.head_turn * side
        points[0] = nose
        points[1] = nose + 0.03 * h * up + 0.03 * h * side
        points[2] = nose + 0.03 * h * up - 0.03 * h * side
        points[3] = nose + 0.01 * h * up + 0.065 * h * side - 0.02 * h * self.head_turn * side
        points[4] = nose + 0.01 * h * up - 0.065 * h * side - 0.02 * h * self.head_turn * side
        points[5] = neck + 0.12 * h * side
        points[6] = neck - 0.12 * h * side
        points[11] = pelvis + 0.08 * h * side
        points[12] = pelvis - 0.08 * h * side
        a = self.limb_angles

        def limb(start: np.ndarray, angle: float, length: float, outward: float) -> np.ndarray:
            # angle 0 hangs along -up; positive angles swing outward to the person's side.
            direction = -up * math.cos(angle) + outward * side * math.sin(angle)
            return start + length * h * direction

        points[7] = limb(points[5], a[0], 0.17, 1.0)
        points[8] = limb(points[6], a[1], 0.17, -1.0)
        points[9] = limb(points[7], a[0] + a[2], 0.15, 1.0)
        points[10] = limb(points[8], a[1] + a[3], 0.15, -1.0)
        points[13] = limb(points[11], a[4], 0.24, 1.0)
        points[14] = limb(points[12], a[5], 0.24, -1.0)
        points[15] = limb(points[13], a[4] + a[6], 0.23, 1.0)
        points[16] = limb(points[14], a[5] + a[7], 0.23, -1.0)
        return points


def random_pose(rng: np.random.Generator, config: SceneConfig, height: float) -> StickPose:
    v = config.pose_variation
    arms = rng.uniform([0.1, 0.1, -0.3, -0.3], [0.25 + 2.2 * v, 0.25 + 2.2 * v, 0.3 + 1.5 * v, 0.3 + 1.5 * v])
    legs = rng.uniform([0.0, 0.0, -0.1 - 0.8 * v, -0.1 - 0.8 * v], [0.1 + 0.6 * v, 0.1 + 0.6 * v, 0.1, 0.1])
    return StickPose(
        centre_x=float(rng.uniform(0.15, 0.85) * config.width),
        centre_y=float(rng.uniform(0.45, 0.6) * config.height),
        height=height,
        torso_angle=float(rng.normal(0, 0.12 * v)),
        limb_angles=np.concatenate([arms, legs]),
        head_turn=float(rng.uniform(-v, v)),
    )


def textured_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour noise with a few random shapes, so the network cannot find people by flat colour."""
    coarse = rng.uniform(40, 200, size=(4, 4, 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.normal(0, 18, size=(height // 4 + 1, width // 4 + 1, 3)).astype(np.float32),
                      (width, height), interpolation=cv2.INTER_LINEAR)
    image = np.clip(image + fine, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        x1, y1 = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            cv2.line(image, (x1, y1), (int(rng.integers(0, width)), int(rng.integers(0, height))), colour,
                     int(rng.integers(1, 4)))
        else:
            cv2.rectangle(image, (x1, y1), (x1 + int(rng.integers(5, 40)), y1 + int(rng.integers(5, 40))), colour, -1)
    return image


def draw_person(image: np.ndarray, points: np.ndarray) -> None:
    """Limbs as thick coloured lines, the head as a filled circle with the eyes marked."""
    scale = float(np.linalg.norm(points[5] - points[6])) + 1e-6
    thickness = max(2, int(round(scale * 0.18)))
    shift = 4  # sub-pixel drawing so joints sit where the annotation says
    fixed = np.round(points * (1 << shift)).astype(np.int64)
    head_radius = max(2, int(round(scale * 0.45)))
    cv2.circle(image, tuple(int(v) for v in fixed[0]), head_radius << shift, (200, 200, 230), -1, cv2.LINE_AA, shift)
    for edge, colour in zip(COCO17.skeleton, EDGE_COLOURS):
        a, b = fixed[edge[0]], fixed[edge[1]]
        cv2.line(image, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), colour, thickness, cv2.LINE_AA, shift)
    for k, colour in ((1, (20, 20, 250)), (2, (250, 20, 20)), (0, (20, 20, 20))):
        cv2.circle(image, tuple(int(v) for v in fixed[k]), max(1, thickness // 2) << shift, colour, -1, cv2.LINE_AA,
                   shift)


def _box_of(points: np.ndarray, height: float, width: int, image_height: int) -> list[float]:
    pad = 0.06 * height
    x1 = max(0.0, float(points[:, 0].min() - pad))
    y1 = max(0.0, float(points[:, 1].min() - pad))
    x2 = min(float(width), float(points[:, 0].max() + pad))
    y2 = min(float(image_height), float(points[:, 1].max() + pad))
    return [x1, y1, max(1.0, x2 - x1), max(1.0, y2 - y1)]


def _person_annotation(points: np.ndarray, visibility: np.ndarray, box: list[float]) -> dict:
    keypoints = []
    for (x, y), v in zip(points, visibility):
        keypoints += [round(float(x), 2), round(float(y), 2), int(v)] if v > 0 else [0, 0, 0]
    x, y, w, h = box
    return {
        "category_id": 1,
        "iscrowd": 0,
        "keypoints": keypoints,
        "num_keypoints": int((visibility > 0).sum()),
        "bbox": [round(v, 2) for v in box],
        "area": round(w * h, 2),
        "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
    }


def render_scene(
    rng: np.random.Generator, config: SceneConfig, poses: list[StickPose] | None = None
) -> tuple[np.ndarray, list[dict], list[StickPose]]:
    """One image (BGR) and its annotations (without ids). Pass `poses` to redraw given people (clips)."""
    image = textured_background(rng, config.height, config.width)
    annotations: list[dict] = []
    if poses is None:
        count = int(rng.integers(config.min_people, config.max_people + 1))
        poses = []
        for _ in range(count):
            height = float(rng.uniform(config.min_person_height, config.max_person_height) * config.height)
            pose = random_pose(rng, config, height)
            if rng.random() < config.out_of_frame_probability:
                pose.centre_x += float(rng.choice([-1, 1]) * 0.4 * config.width)
            poses.append(pose)
    if rng.random() < config.crowd_probability:
        annotations.append(_draw_crowd(rng, image, config))
    if rng.random() < config.unlabelled_probability:
        annotations.append(_draw_unlabelled(rng, image, config))
    # Far people first, so nearer (lower) people overlap them as in a real scene.
    for pose in sorted(poses, key=lambda p: p.centre_y):
        points = pose.keypoints()
        draw_person(image, points)
        inside = (points[:, 0] >= 0) & (points[:, 0] < config.width) & (points[:, 1] >= 0) & (points[:, 1] < config.height)
        visibility = np.where(inside, 2, 0)
        if inside.sum() == 0:
            continue
        box = _box_of(points[inside], pose.height, config.width, config.height)
        annotations.append(_person_annotation(points, visibility, box))
    # Occluders go on top and turn the joints under them into visibility 1 (labelled, not seen).
    if rng.random() < config.occluder_probability:
        x1, y1 = int(rng.integers(0, config.width * 3 // 4)), int(rng.integers(0, config.height * 3 // 4))
        w, h = int(rng.integers(config.width // 10, config.width // 4)), int(rng.integers(config.height // 10, config.height // 3))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.rectangle(image, (x1, y1), (x1 + w, y1 + h), colour, -1)
        for annotation in annotations:
            if annotation["iscrowd"] or annotation["num_keypoints"] == 0:
                continue
            kp = annotation["keypoints"]
            for k in range(17):
                x, y, v = kp[3 * k:3 * k + 3]
                if v == 2 and x1 <= x <= x1 + w and y1 <= y <= y1 + h:
                    kp[3 * k + 2] = 1
    return image, annotations, poses


def _draw_unlabelled(rng: np.random.Generator, image: np.ndarray, config: SceneConfig) -> dict:
    height = float(rng.uniform(0.12, 0.2) * config.height)
    pose = random_pose(rng, config, height)
    pose.centre_y = float(rng.uniform(0.2, 0.35) * config.height)
    points = pose.keypoints()
    draw_person(image, points)
    box = _box_of(points, height, config.width, config.height)
    annotation = _person_annotation(points, np.zeros(17, dtype=int), box)
    return annotation


def _draw_crowd(rng: np.random.Generator, image: np.ndarray, config: SceneConfig) -> dict:
    """A cluster of small people in a band, annotated as one crowd region (RLE, iscrowd 1)."""
    mask_utils = import_extra("pycocotools.mask", "train", "synthetic crowd regions")
    x1 = int(rng.uniform(0, 0.5) * config.width)
    w = int(rng.uniform(0.3, 0.5) * config.width)
    y1 = int(rng.uniform(0.05, 0.2) * config.height)
    h = int(0.2 * config.height)
    region = np.zeros((config.height, config.width), dtype=np.uint8)
    region[y1:y1 + h, x1:x1 + w] = 1
    for _ in range(int(rng.integers(4, 9))):
        pose = random_pose(rng, config, 0.8 * h)
        pose.centre_x = float(rng.uniform(x1 + 0.1 * w, x1 + 0.9 * w))
        pose.centre_y = float(y1 + 0.55 * h)
        draw_person(image, pose.keypoints())
    rle = mask_utils.encode(np.asfortranarray(region))
    rle["counts"] = rle["counts"].decode("ascii")
    box = [float(v) for v in mask_utils.toBbox(rle)]
    return {
        "category_id": 1, "iscrowd": 1, "keypoints": [0] * 51, "num_keypoints": 0,
        "bbox": box, "area": float(mask_utils.area(rle)), "segmentation": rle,
    }


def _coco_header() -> dict:
    return {
        "info": {"description": "tagtrack synthetic stick-figure people"},
        "licenses": [],
        "categories": [{
            "id": 1, "name": "person", "supercategory": "person",
            "keypoints": list(COCO17.keypoint_names),
            "skeleton": [[a + 1, b + 1] for a, b in COCO17.skeleton],
        }],
        "images": [],
        "annotations": [],
    }


def generate_dataset(out_dir: Path | str, num_images: int, config: SceneConfig = SceneConfig(), seed: int = 0) -> Path:
    """Write `num_images` scenes to OUT/images/*.png and OUT/annotations.json; returns the JSON path."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coco = _coco_header()
    for image_id in tqdm(range(1, num_images + 1), desc="synthetic images", disable=num_images < 200):
        image, annotations, _ = render_scene(rng, config)
        name = f"{image_id:06d}.png"
        cv2.imwrite(str(out_dir / "images" / name), image)
        coco["images"].append({"id": image_id, "file_name": name, "width": config.width, "height": config.height})
        for annotation in annotations:
            annotation.update(id=len(coco["annotations"]) + 1, image_id=image_id)
            coco["annotations"].append(annotation)
    path = out_dir / "annotations.json"
    path.write_text(json.dumps(coco))
    log.info("wrote %d images, %d annotations to %s", num_images, len(coco["annotations"]), out_dir)
    return path


def _step_pose(rng: np.random.Generator, pose: StickPose, velocity: np.ndarray, config: SceneConfig) -> StickPose:
    angles = np.clip(pose.limb_angles + rng.normal(0, 0.08, size=8), -1.2, 2.6)
    x = pose.centre_x + velocity[0]
    if not 0.05 * config.width < x < 0.95 * config.width:
        velocity[0] = -velocity[0]
    return replace(pose, centre_x=x, centre_y=pose.centre_y + velocity[1], limb_angles=angles,
                   torso_angle=float(np.clip(pose.torso_angle + rng.normal(0, 0.02), -0.4, 0.4)))


def generate_clips(
    out_dir: Path | str, num_clips: int, frames_per_clip: int, config: SceneConfig = SceneConfig(), seed: int = 0
) -> Path:
    """Clips of people walking about: images carry video_id/frame_id, annotations a track_id."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    still = replace(config, crowd_probability=0.0, unlabelled_probability=0.0, out_of_frame_probability=0.0)
    coco = _coco_header()
    next_track = 1
    for video_id in range(1, num_clips + 1):
        count = int(rng.integers(config.min_people, config.max_people + 1))
        poses = [random_pose(rng, config, float(rng.uniform(config.min_person_height, config.max_person_height)
                                                 * config.height)) for _ in range(count)]
        tracks = list(range(next_track, next_track + count))
        next_track += count
        velocities = [rng.normal(0, 0.01 * config.width, size=2) * np.array([1.0, 0.2]) for _ in poses]
        for frame_id in range(frames_per_clip):
            if frame_id:
                poses = [_step_pose(rng, p, v, config) for p, v in zip(poses, velocities)]
            image, annotations, _ = _render_tracked(rng, still, poses, tracks)
            image_id = len(coco["images"]) + 1
            name = f"clip{video_id:04d}_{frame_id:04d}.png"
            cv2.imwrite(str(out_dir / "images" / name), image)
            coco["images"].append({"id": image_id, "file_name": name, "width": config.width,
                                   "height": config.height, "video_id": video_id, "frame_id": frame_id})
            for annotation in annotations:
                annotation.update(id=len(coco["annotations"]) + 1, image_id=image_id)
                coco["annotations"].append(annotation)
    path = out_dir / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


def _render_tracked(
    rng: np.random.Generator, config: SceneConfig, poses: list[StickPose], tracks: list[int]
) -> tuple[np.ndarray, list[dict], list[StickPose]]:
    # Draw people one at a time so each annotation keeps its track id (render_scene drops people out of frame).
    image = textured_background(np.random.default_rng(tracks[0] if tracks else 0), config.height, config.width)
    annotations = []
    for pose, track in sorted(zip(poses, tracks), key=lambda pt: pt[0].centre_y):
        points = pose.keypoints()
        draw_person(image, points)
        inside = (points[:, 0] >= 0) & (points[:, 0] < config.width) & (points[:, 1] >= 0) & (points[:, 1] < config.height)
        if inside.sum() == 0:
            continue
        annotation = _person_annotation(points, np.where(inside, 2, 0),
                                        _box_of(points[inside], pose.height, config.width, config.height))
        annotation["track_id"] = track
        annotations.append(annotation)
    return image, annotations, poses
