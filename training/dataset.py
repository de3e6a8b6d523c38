"""COCO-format keypoint data -> augmented network inputs and targets at output resolution.

A sample is one or two *views* (leading dimension V). With pairs on, the second view is either
another frame of the same clip (images carrying `video_id`/`vid_id` and `frame_id`, annotations a
`track_id`) or a second, independent augmentation of the same image standing in for the next
frame. Each view holds:

  images  float32 [3,H,W] RGB in [0,1]          heatmaps float32 [K,h,w] (model.codec.render_heatmaps)
  masks   float32 [h,w], 0 = ignore             joints   int64 [M,K,2] (model.codec.joint_indices)
  ids     int64 [M] person identity, -1 empty   scales   float32 [M] person size / map size, for the scale loss

Crowd regions and people without keypoints become ignore regions (mask 0), not background.
Coordinates follow the project's pixel-centre convention (model.transforms): pixel j's centre is x = j.
Augmentation randomness is a function of (seed, epoch, index, view) only, so data are identical
whatever the number of workers, and a resumed run sees the same samples.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from tagtrack.model.codec import joint_indices, render_heatmaps
from tagtrack.model.config import OUTPUT_STRIDE
from tagtrack.model.errors import UserFacingError, import_extra
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.training.config import AugmentConfig

# pycocotools is the `train` extra: a core install imports this module only to train or evaluate.
mask_utils = import_extra("pycocotools.mask", "train", "training and evaluation on COCO-format data")
COCO = import_extra("pycocotools.coco", "train", "training and evaluation on COCO-format data").COCO

log = logging.getLogger(__name__)

REFERENCE_PERSON_SIZE = 32.0  # map pixels (sqrt of area) at which the adaptive sigma equals the base sigma
EMPTY_ID = -1


def load_coco(annotations_path: Path | str, images_dir: Path | str, schema: KeypointSchema = COCO17) -> COCO:
    """Read and check a COCO keypoint file; every problem is a UserFacingError naming the file."""
    path = Path(annotations_path)
    images_dir = Path(images_dir)
    if not path.is_file():
        raise UserFacingError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserFacingError(f"malformed JSON in {path}: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
        data.get("annotations"), list
    ):
        raise UserFacingError(f"{path} is not a COCO annotation file (needs 'images' and 'annotations' lists)")
    if not data["annotations"]:
        raise UserFacingError(f"{path} has no annotations")
    expected = 3 * schema.num_keypoints
    for annotation in data["annotations"]:
        try:
            keypoints = annotation.get("keypoints", [0] * expected)
            if len(keypoints) != expected or "image_id" not in annotation or "id" not in annotation:
                raise ValueError
        except (AttributeError, TypeError, ValueError):
            raise UserFacingError(
                f"{path}: annotation {annotation.get('id', '?') if isinstance(annotation, dict) else annotation!r} "
                f"needs 'id', 'image_id' and {expected} keypoint values"
            ) from None
    if not any(_has_keypoints(a) for a in data["annotations"]):
        raise UserFacingError(f"{path} has no annotated people with keypoints")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        try:
            coco.createIndex()
        except (KeyError, TypeError) as error:
            raise UserFacingError(f"{path}: malformed COCO structure ({error})") from None
    if not images_dir.is_dir():
        raise UserFacingError(f"image folder not found: {images_dir} (for {path})")
    missing = [image["file_name"] for image in data["images"] if not (images_dir / image["file_name"]).is_file()]
    if missing:
        raise UserFacingError(
            f"{len(missing)} image(s) listed in {path} are missing from {images_dir}, e.g. {missing[0]}"
        )
    return coco


def _has_keypoints(annotation: dict) -> bool:
    return not annotation.get("iscrowd", 0) and annotation.get("num_keypoints", 0) > 0


def ignore_mask(annotations: list[dict], height: int, width: int) -> np.ndarray:
    """uint8 [H,W], 1 where the loss is ignored: crowd regions and people annotated without keypoints.

    Regions are decoded at the image's real size (the JSON's width/height entries may be absent).
    """
    mask = np.zeros((height, width), dtype=np.uint8)
    for annotation in annotations:
        if _has_keypoints(annotation):
            continue
        segmentation = annotation.get("segmentation")
        if segmentation:
            if isinstance(segmentation, list):  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
            elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(segmentation, height, width)
            else:
                rle = segmentation
            region = mask_utils.decode(rle)
            if region.shape[:2] == (height, width):
                mask |= region.astype(np.uint8)
                continue
        if annotation.get("bbox"):
            x, y, w, h = annotation["bbox"]
            mask[max(0, int(y)):int(math.ceil(y + h)), max(0, int(x)):int(math.ceil(x + w))] = 1
    return mask


def random_affine(
    rng: np.random.Generator, image_hw: tuple[int, int], input_hw: tuple[int, int], augment: AugmentConfig
) -> tuple[np.ndarray, bool]:
    """3x3 matrix from image pixels to network-input pixels, and whether it flips left/right.

    The image is first fitted into the input (aspect kept, centred), then scaled, rotated about the
    input centre and translated at random; a flip mirrors the input last.
    """
    image_h, image_w = image_hw
    input_h, input_w = input_hw
    fit = min(input_w / image_w, input_h / image_h)
    scale = fit * rng.uniform(augment.scale_min, augment.scale_max)
    angle = math.radians(rng.uniform(-augment.rotation_degrees, augment.rotation_degrees))
    shift = rng.uniform(-augment.translate, augment.translate, size=2) * (input_w, input_h)
    flip = bool(rng.random() < augment.flip_probability)
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    linear = np.array([[cos, -sin], [sin, cos]])
    source_centre = np.array([(image_w - 1) / 2, (image_h - 1) / 2])
    target_centre = np.array([(input_w - 1) / 2, (input_h - 1) / 2]) + shift
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = target_centre - linear @ source_centre
    if flip:
        mirror = np.array([[-1.0, 0.0, input_w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        matrix = mirror @ matrix
    return matrix, flip


def input_to_map_matrix(stride: int = OUTPUT_STRIDE) -> np.ndarray:
    """3x3 matrix of x_map = (x_input + 0.5) / stride - 0.5 (model.transforms.input_to_map)."""
    return np.array([[1 / stride, 0, 0.5 / stride - 0.5], [0, 1 / stride, 0.5 / stride - 0.5], [0, 0, 1.0]])


def colour_jitter(rng: np.random.Generator, image: np.ndarray, amount: float) -> np.ndarray:
    """Random brightness, contrast and saturation on float RGB [H,W,3] in [0,1]."""
    if amount <= 0:
        return image
    brightness, contrast, saturation = rng.uniform(1 - amount, 1 + amount, size=3)
    image = image * brightness
    image = (image - image.mean()) * contrast + image.mean()
    grey = image.mean(axis=2, keepdims=True)
    image = (image - grey) * saturation + grey
    return np.clip(image, 0.0, 1.0)


@dataclass(frozen=True)
class TargetConfig:
    """How targets are made: input size, heatmap sigma (map pixels), fixed or scale-adaptive, people cap."""

    input_height: int
    input_width: int
    sigma: float = 2.0
    sigma_mode: str = "fixed"
    max_people: int = 30

    @property
    def output_hw(self) -> tuple[int, int]:
        return self.input_height // OUTPUT_STRIDE, self.input_width // OUTPUT_STRIDE


class CocoKeypointDataset(Dataset):
    """Training samples from a COCO-format keypoint file; `views` is 1, or 2 for pairs of views."""

    def __init__(
        self,
        annotations_path: Path | str,
        images_dir: Path | str,
        targets: TargetConfig,
        augment: AugmentConfig = AugmentConfig(),
        views: int = 1,
        max_frame_gap: int = 3,
        schema: KeypointSchema = COCO17,
        seed: int = 0,
    ) -> None:
        if views not in (1, 2):
            raise ValueError("views must be 1 or 2")
        self.annotations_path = Path(annotations_path)
        self.images_dir = Path(images_dir)
        self.coco = load_coco(annotations_path, images_dir, schema)
        self.targets = targets
        self.augment = augment
        self.views = views
        self.max_frame_gap = max_frame_gap
        self.schema = schema
        self.seed = seed
        self.epoch = 0
        # Images with at least one person with keypoints; the rest carry no training signal for grouping.
        self.image_ids = sorted(
            image_id for image_id in self.coco.getImgIds()
            if any(_has_keypoints(a) for a in self.coco.imgToAnns.get(image_id, []))
        )
        self._clips = self._index_clips()

    def _index_clips(self) -> dict[int, list[tuple[int, int]]]:
        clips: dict[int, list[tuple[int, int]]] = {}
        for image in self.coco.dataset["images"]:
            video = image.get("video_id", image.get("vid_id"))
            if video is not None and "frame_id" in image:
                clips.setdefault(video, []).append((int(image["frame_id"]), image["id"]))
        for frames in clips.values():
            frames.sort()
        return clips

    def set_epoch(self, epoch: int) -> None:
        """Changes the augmentation draws each epoch (call before iterating, like DistributedSampler.set_epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image_id = self.image_ids[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        view_ids = [image_id]
        if self.views == 2:
            view_ids.append(self._partner_frame(rng, image_id))
        views = [self.make_view(vid, np.random.default_rng([self.seed, self.epoch, index, v]))
                 for v, vid in enumerate(view_ids)]
        return {key: torch.from_numpy(np.stack([view[key] for view in views])) for key in views[0]}

    def _partner_frame(self, rng: np.random.Generator, image_id: int) -> int:
        """Another frame of the same clip within max_frame_gap, or the same image (second augmentation)."""
        image = self.coco.imgs[image_id]
        video = image.get("video_id", image.get("vid_id"))
        if video is None or video not in self._clips:
            return image_id
        frame = int(image["frame_id"])
        candidates = [other for f, other in self._clips[video]
                      if other != image_id and abs(f - frame) <= self.max_frame_gap and other in self.coco.imgToAnns]
        if not candidates:
            return image_id
        return int(candidates[int(rng.integers(len(candidates)))])

    def read_image(self, image_id: int) -> np.ndarray:
        info = self.coco.imgs[image_id]
        path = self.images_dir / info["file_name"]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise UserFacingError(f"cannot read image {path} (listed in {self.annotations_path})")
        return image

    def make_view(self, image_id: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One augmented view of an image with all its targets (numpy; see the module docstring)."""
        image_bgr = self.read_image(image_id)
        image_h, image_w = image_bgr.shape[:2]
        annotations = self.coco.imgToAnns.get(image_id, [])
        input_hw = (self.targets.input_height, self.targets.input_width)
        out_h, out_w = self.targets.output_hw
        to_input, flip = random_affine(rng, (image_h, image_w), input_hw, self.augment)
        to_map = input_to_map_matrix() @ to_input

        warped = cv2.warpAffine(image_bgr, to_input[:2], (input_hw[1], input_hw[0]), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        rgb = cv2.cvtColor(warped, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        rgb = colour_jitter(rng, rgb, self.augment.colour_jitter).astype(np.float32)

        ignore = ignore_mask(annotations, image_h, image_w).astype(np.float32)
        ignore_map = cv2.warpAffine(ignore, to_map[:2], (out_w, out_h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        mask = (ignore_map < 0.5).astype(np.float32)

        people = [a for a in annotations if _has_keypoints(a)][: self.targets.max_people]
        keypoints, ids, sizes = self._people_in_map(people, to_map, flip)
        sigma = self._sigmas(sizes)
        heatmaps = render_heatmaps(keypoints, out_h, out_w, sigma)
        joints = joint_indices(keypoints, out_h, out_w, self.targets.max_people)
        id_row = np.full(self.targets.max_people, EMPTY_ID, dtype=np.int64)
        id_row[: len(ids)] = ids
        scale_row = np.zeros(self.targets.max_people, dtype=np.float32)
        scale_row[: len(sizes)] = np.clip(sizes / max(out_h, out_w), 0.0, 1.0)
        return {
            "images": np.ascontiguousarray(rgb.transpose(2, 0, 1)),
            "heatmaps": heatmaps.astype(np.float32),
            "masks": mask,
            "joints": joints,
            "ids": id_row,
            "scales": scale_row,
        }

    def _people_in_map(
        self, people: list[dict], to_map: np.ndarray, flip: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keypoints [N,K,3] in map pixels (flipped joints swapped), identities [N], sizes [N] in map pixels."""
        num_keypoints = self.schema.num_keypoints
        keypoints = np.zeros((len(people), num_keypoints, 3), dtype=np.float64)
        ids = np.zeros(len(people), dtype=np.int64)
        sizes = np.zeros(len(people), dtype=np.float64)
        map_scale = math.sqrt(abs(np.linalg.det(to_map[:2, :2])))
        for n, annotation in enumerate(people):
            raw = np.asarray(annotation["keypoints"], dtype=np.float64).reshape(num_keypoints, 3)
            xy1 = np.concatenate([raw[:, :2], np.ones((num_keypoints, 1))], axis=1)
            keypoints[n, :, :2] = (xy1 @ to_map.T)[:, :2]
            keypoints[n, :, 2] = raw[:, 2] > 0
            if flip:
                keypoints[n] = keypoints[n, list(self.schema.flip_index)]
            # Tracks keep their identity across frames; untracked people are unique per annotation.
            # Even/odd keeps the two id spaces apart.
            track = annotation.get("track_id")
            ids[n] = 2 * int(track) if track is not None else 2 * int(annotation["id"]) + 1
            area = float(annotation.get("area") or annotation["bbox"][2] * annotation["bbox"][3])
            sizes[n] = math.sqrt(max(area, 1.0)) * map_scale
        return keypoints, ids, sizes

    def _sigmas(self, sizes: np.ndarray) -> float | np.ndarray:
        if self.targets.sigma_mode == "fixed" or len(sizes) == 0:
            return self.targets.sigma
        # Scale-adaptive: sigma grows with the person's size, within [0.5, 2] x the base sigma.
        return self.targets.sigma * np.clip(sizes / REFERENCE_PERSON_SIZE, 0.5, 2.0)


def flatten_views(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """[B,V,...] -> [B*V,...], the views of one sample adjacent (as training.losses.total_loss expects)."""
    return {key: value.reshape(value.shape[0] * value.shape[1], *value.shape[2:]) for key, value in batch.items()}
