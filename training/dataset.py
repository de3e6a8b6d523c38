"""COCO-format keypoint data -> augmented network inputs and targets at output resolution.

A sample is one or two *views* (leading dimension V). With pairs on, the second view is either
another frame of the same clip (images carrying `video_id`/`vid_id` and `frame_id`, annotations a
`track_id`) or a second, independent augmentation of the same image standing in for the next
frame. Each view holds:

  images  float32 [3,H,W] RGB in [0,1]          heatmaps float32 [K,h,w] (model.codec.render_heatmaps)
  masks   float32 [h,w], 0 = ignore             joints   int64 [M,K,2] (model.codec.joint_indices)
  ids     int64 [M] person identity, -1 empty   scales   float32 [M] person size / map size, for the scale loss
  keypoints float32 [M,K,3] (x, y, labelled) in map pixels, for targets drawn during training (sigma_mode embedding)

Crowd regions and people without keypoints become ignore regions (mask 0), not background.
Coordinates follow the project's pixel-centre convention (model.transforms): pixel j's centre is x = j.
Augmentation randomness is a function of (seed, epoch, index, view) only, so data are identical
whatever the number of workers, and a resumed run sees the same samples.
"""

from __future__ import annotations

import contextlib
import io
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
from tagtrack.model.files import read_image, read_json
from tagtrack.model.schema import COCO17, KeypointSchema, schema_from_coco_category
from tagtrack.training.losses import REFERENCE_PERSON_SIZE
from tagtrack.training.config import AugmentConfig, TrainConfig
from tagtrack.training.distill import (dense_targets, load_teacher_maps, maps_path, suppress_mirror_peaks,
                                       warp_teacher_maps)

# pycocotools is the `train` extra: a core install imports this module only to train or evaluate.
mask_utils = import_extra("pycocotools.mask", "train", "training and evaluation on COCO-format data")
COCO = import_extra("pycocotools.coco", "train", "training and evaluation on COCO-format data").COCO

log = logging.getLogger(__name__)

EMPTY_ID = -1


def coco_schema(data: dict) -> KeypointSchema:
    """The keypoint schema a COCO keypoint file names in its first category with keypoint names; COCO17 for a
    file without one (model.schema.schema_from_coco_category)."""
    for category in data.get("categories") or []:
        if isinstance(category, dict) and category.get("keypoints"):
            return schema_from_coco_category(category)
    return COCO17


def load_coco(annotations_path: Path | str, images_dir: Path | str, schema: KeypointSchema | None = COCO17) -> COCO:
    """Read and check a COCO keypoint file; every problem is a UserFacingError naming the file.
    schema None: the file's own (coco_schema)."""
    path = Path(annotations_path)
    images_dir = Path(images_dir)
    data = read_json(path, "annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
        data.get("annotations"), list
    ):
        raise UserFacingError(f"{path} is not a COCO annotation file (needs 'images' and 'annotations' lists)")
    if not data["annotations"]:
        raise UserFacingError(f"{path} has no annotations")
    if schema is None:
        schema = coco_schema(data)
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
    rng: np.random.Generator, image_hw: tuple[int, int], input_hw: tuple[int, int], augment: AugmentConfig,
    scale_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, bool]:
    """3x3 matrix from image pixels to network-input pixels, and whether it flips left/right.

    The image is first fitted into the input (aspect kept, centred), then scaled (by augment's
    scale_min..scale_max, or `scale_range` where the image sets its own), rotated about the input centre
    and translated at random; a flip mirrors the input last.
    """
    image_h, image_w = image_hw
    input_h, input_w = input_hw
    fit = min(input_w / image_w, input_h / image_h)
    low, high = scale_range if scale_range is not None else (augment.scale_min, augment.scale_max)
    scale = fit * rng.uniform(low, high)
    angle = math.radians(rng.uniform(-augment.rotation_degrees, augment.rotation_degrees))
    shift = rng.uniform(-augment.translate, augment.translate, size=2) * (input_w, input_h)
    flip = bool(rng.random() < augment.flip_probability)
    source_centre = np.array([(image_w - 1) / 2, (image_h - 1) / 2])
    return _affine(scale, angle, source_centre, shift, flip, input_hw), flip


def image_scale_range(image: dict) -> tuple[float, float] | None:
    """An image record's optional "scale_range": [low, high], the plain views' scale (times the fit) for it.

    A wide street scene whose walkers are a few pixels tall at the usual scales can be shown larger than the
    rest, as a larger network input would see it, without enlarging every close-up sports photo too."""
    value = image.get("scale_range")
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):  # not two numbers
        low = high = math.nan
    if not 0.0 < low <= high:
        raise UserFacingError(f"image {image.get('file_name', image.get('id'))}: scale_range must be "
                              f"[low, high] with 0 < low <= high, got {value!r}")
    return low, high


def closeup_affine(
    rng: np.random.Generator, region: tuple[float, float, float, float], input_hw: tuple[int, int],
    augment: AugmentConfig
) -> tuple[np.ndarray, bool]:
    """Like random_affine, but framed on region (x, y, w, h in image pixels: a person, or their upper body):
    its height fills closeup_min..closeup_max of the input height, its centre near the input's centre."""
    x, y, w, h = region
    input_h, input_w = input_hw
    scale = rng.uniform(augment.closeup_min, augment.closeup_max) * input_h / max(h, 1.0)
    angle = math.radians(rng.uniform(-augment.rotation_degrees, augment.rotation_degrees))
    shift = rng.uniform(-0.15, 0.15, size=2) * (input_w, input_h)
    flip = bool(rng.random() < augment.flip_probability)
    return _affine(scale, angle, np.array([x + w / 2, y + h / 2]), shift, flip, input_hw), flip


def _affine(scale: float, angle: float, source_centre: np.ndarray, shift: np.ndarray, flip: bool,
            input_hw: tuple[int, int]) -> np.ndarray:
    """Image -> input: source_centre to the input centre + shift, scaled and rotated about it, mirrored last."""
    input_h, input_w = input_hw
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    linear = np.array([[cos, -sin], [sin, cos]])
    target_centre = np.array([(input_w - 1) / 2, (input_h - 1) / 2]) + shift
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = target_centre - linear @ source_centre
    if flip:
        mirror = np.array([[-1.0, 0.0, input_w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        matrix = mirror @ matrix
    return matrix


def upper_body(annotation: dict, num_keypoints: int, schema: KeypointSchema) -> tuple[float, float, float, float] | None:
    """Head to hips of a labelled person (x, y, w, h), or None without labelled hips and shoulders."""
    keypoints = np.asarray(annotation["keypoints"], dtype=np.float64).reshape(num_keypoints, 3)
    names = schema.keypoint_names
    hips = [names.index(n) for n in ("left_hip", "right_hip") if n in names]
    shoulders = [names.index(n) for n in ("left_shoulder", "right_shoulder") if n in names]
    hips = [k for k in hips if keypoints[k, 2] > 0]
    if not hips or not any(keypoints[k, 2] > 0 for k in shoulders):
        return None
    x, y, w, _ = annotation["bbox"]
    bottom = float(keypoints[hips, 1].mean())
    if bottom <= y:
        return None
    return float(x), float(y), float(w), bottom - float(y)


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
    """How targets are made: input size, heatmap sigma (map pixels), sigma mode (training.config), people cap, and
    the network's output stride (input pixels per map pixel)."""

    input_height: int
    input_width: int
    sigma: float = 2.0
    sigma_mode: str = "fixed"
    max_people: int = 30
    stride: int = OUTPUT_STRIDE

    @classmethod
    def of_training(cls, config: TrainConfig) -> "TargetConfig":
        """The targets a training config trains toward (its network's input size and output stride)."""
        model = config.model
        return cls(model.input_height, model.input_width, config.sigma, config.sigma_mode, config.max_people,
                   model.output_stride)

    @property
    def output_hw(self) -> tuple[int, int]:
        return self.input_height // self.stride, self.input_width // self.stride


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
        schema: KeypointSchema | None = None,
        seed: int = 0,
        teacher_maps: Path | str | None = None,
        suppress_mirror_peaks: bool = False,
    ) -> None:
        if views not in (1, 2):
            raise ValueError("views must be 1 or 2")
        self.annotations_path = Path(annotations_path)
        self.images_dir = Path(images_dir)
        self.coco = load_coco(annotations_path, images_dir, schema)
        # None: the file's own keypoints (COCO-17 for a file that names none), what the checkpoints store.
        schema = schema if schema is not None else coco_schema(self.coco.dataset)
        self.targets = targets
        self.augment = augment
        self.views = views
        self.max_frame_gap = max_frame_gap
        self.schema = schema
        self.seed = seed
        self.epoch = 0
        self.teacher_maps = Path(teacher_maps) if teacher_maps else None
        self.suppress_mirror_peaks = suppress_mirror_peaks
        if self.teacher_maps is not None and not self.teacher_maps.is_dir():
            raise UserFacingError(f"teacher maps folder not found: {self.teacher_maps}")
        # Images with at least one person with keypoints; the rest carry no training signal for grouping.
        # An image's optional "repeat" (a whole number, default 1) samples it that many times per epoch,
        # which balances domains of very different sizes.
        self.image_ids = [
            image_id for image_id in sorted(self.coco.getImgIds())
            if any(_has_keypoints(a) for a in self.coco.imgToAnns.get(image_id, []))
            for _ in range(max(1, int(self.coco.imgs[image_id].get("repeat", 1))))
        ]
        # Read (and checked) once: a bad "scale_range" is refused now, not in a loader worker mid-run.
        self.scale_ranges = {image["id"]: image_scale_range(image) for image in self.coco.dataset["images"]}
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
        try:
            return read_image(self.images_dir / info["file_name"])
        except UserFacingError as error:
            raise UserFacingError(f"{error} (listed in {self.annotations_path})") from None

    def make_view(self, image_id: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One augmented view of an image with all its targets (numpy; see the module docstring)."""
        image_bgr = self.read_image(image_id)
        image_h, image_w = image_bgr.shape[:2]
        annotations = self.coco.imgToAnns.get(image_id, [])
        input_hw = (self.targets.input_height, self.targets.input_width)
        out_h, out_w = self.targets.output_hw
        to_input, flip = self._view_affine(rng, annotations, (image_h, image_w), input_hw,
                                           self.scale_ranges[image_id])
        to_map = input_to_map_matrix(self.targets.stride) @ to_input

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
        teacher = self._teacher_heatmaps(image_id, (image_h, image_w), to_map, flip)
        if teacher is not None and self.suppress_mirror_peaks:
            teacher = suppress_mirror_peaks(teacher, keypoints, sigma, self.schema)
        heatmaps = dense_targets(render_heatmaps(keypoints, out_h, out_w, sigma), teacher)
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
            "keypoints": padded_keypoints(keypoints, self.targets.max_people),
        }

    def _view_affine(self, rng: np.random.Generator, annotations: list[dict], image_hw: tuple[int, int],
                     input_hw: tuple[int, int], scale_range: tuple[float, float] | None = None,
                     ) -> tuple[np.ndarray, bool]:
        """A plain random view (at the image's own scale range where it sets one), or (closeup_probability)
        one framed on a labelled person or their upper body."""
        people = [a for a in annotations if _has_keypoints(a) and a.get("bbox")]
        # No extra draw when close-ups are off, so such runs see exactly the views they always did.
        if not people or self.augment.closeup_probability <= 0 or rng.random() >= self.augment.closeup_probability:
            return random_affine(rng, image_hw, input_hw, self.augment, scale_range)
        person = people[int(rng.integers(len(people)))]
        region = tuple(float(v) for v in person["bbox"])
        if rng.random() < self.augment.upper_body_probability:
            region = upper_body(person, self.schema.num_keypoints, self.schema) or region
        return closeup_affine(rng, region, input_hw, self.augment)

    def _teacher_heatmaps(self, image_id: int, image_hw: tuple[int, int], to_map: np.ndarray,
                          flip: bool) -> np.ndarray | None:
        if self.teacher_maps is None:
            return None
        maps = load_teacher_maps(maps_path(self.teacher_maps, self.coco.imgs[image_id]["file_name"]),
                                 self.schema.num_keypoints)
        if maps is None:
            return None
        return warp_teacher_maps(maps, image_hw, to_map, self.targets.output_hw, flip, self.schema)

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
        return target_sigmas(self.targets, sizes)


def target_sigmas(targets: TargetConfig, sizes: np.ndarray) -> float | np.ndarray:
    """Heatmap sigma per person (map pixels) for the mode in `targets`.

    "size" (or its old name "adaptive"): sigma grows with the person's size, within [0.5, 2] x the base
    sigma (training.losses.size_sigma_factor). "fixed", and "embedding" whose targets are redrawn during
    training from the network's tags (training.losses.total_loss): the base sigma.
    """
    if targets.sigma_mode not in ("size", "adaptive") or len(sizes) == 0:
        return targets.sigma
    return targets.sigma * np.clip(sizes / REFERENCE_PERSON_SIZE, 0.5, 2.0)


def padded_keypoints(keypoints: np.ndarray, max_people: int) -> np.ndarray:
    """Keypoints [N,K,3] -> float32 [max_people,K,3], missing people as rows of zeros (as joint_indices)."""
    result = np.zeros((max_people, *keypoints.shape[1:]), dtype=np.float32)
    kept = min(len(keypoints), max_people)
    result[:kept] = keypoints[:kept]
    return result


def flatten_views(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """[B,V,...] -> [B*V,...], the views of one sample adjacent (as training.losses.total_loss expects)."""
    return {key: value.reshape(value.shape[0] * value.shape[1], *value.shape[2:]) for key, value in batch.items()}
