"""One image in, poses in image pixels out: letterbox, inference, flip / multi-scale aggregation, decode.

Test-time augmentation follows the AE papers: with ``flip`` the heatmaps of the mirrored input are
flipped back (joints swapped by the schema) and averaged with the plain ones, and their tags are
concatenated (L -> 2L); with several ``scales`` every scale's maps are warped onto the largest
scale's map grid, heatmaps averaged and tags concatenated (L -> L * number of scales).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from tagtrack.model.codec import DecodeConfig, decode_people
from tagtrack.model.config import INPUT_MULTIPLE
from tagtrack.model.errors import UserFacingError
from tagtrack.model.files import read_image  # noqa: F401 - the reader `predict` and the API use, named here too
from tagtrack.model.pose import Pose
from tagtrack.model.schema import KeypointSchema
from tagtrack.model.transforms import Letterbox, to_network_input

log = logging.getLogger(__name__)

InferFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""batch float32 [B,3,H,W] RGB 0..1 -> (heatmaps [B,K,H/s,W/s], tags [B,K,L,H/s,W/s]), numpy float32; s the
network's output stride (4, or 2)."""

_WARP_CHANNELS = 64  # cv2.warpAffine refuses arrays with more than 128 channels


def torch_infer_fn(model, device: str = "cpu") -> InferFn:
    """An InferFn running a torch module (``HourglassNet``) in eval mode without gradients."""
    import torch

    model = model.to(device).eval()

    def infer(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            heatmaps, tags = model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device))
        return heatmaps.float().cpu().numpy(), tags.float().cpu().numpy()

    return infer


@dataclass
class PredictConfig:
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)


def check_scales(scales, name: str = "scales") -> tuple[float, ...]:
    """Test scales as floats, refused with one message naming NAME (the flag or keyword) unless all are positive."""
    checked = tuple(float(scale) for scale in scales)
    if not checked or min(checked) <= 0:
        raise UserFacingError(f"{name} must be positive, got {list(checked)}")
    return checked


def scaled_input_hw(input_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """The network input size for one test scale: input_hw * scale rounded to a multiple of 64 (at least 64)."""
    return tuple(max(INPUT_MULTIPLE, int(round(side * scale / INPUT_MULTIPLE)) * INPUT_MULTIPLE) for side in input_hw)


def poses_from_maps(
    heatmaps: np.ndarray,
    tags: np.ndarray,
    letterbox: Letterbox,
    schema: KeypointSchema,
    decode_config: DecodeConfig,
) -> list[Pose]:
    """Decode one batch item's maps ([K,h,w], [K,L,h,w]) and map the poses back to image pixels."""
    letterbox = letterbox.for_maps(heatmaps.shape[-2:])
    people = decode_people(heatmaps, tags, schema, decode_config)
    keypoints = people.keypoints
    found = keypoints[:, :, 2:] > 0
    image_xy = letterbox.map_to_image(keypoints[:, :, :2].astype(np.float64))  # all people at once
    keypoints[:, :, :2] = np.where(found, image_xy, 0.0)
    return people.poses(schema, letterbox.image_hw)


def _flip_back(heatmaps: np.ndarray, tags: np.ndarray, schema: KeypointSchema) -> tuple[np.ndarray, np.ndarray]:
    """Maps of a mirrored input -> maps of the original: mirror the columns, swap left/right joints."""
    flip_index = list(schema.flip_index)
    return heatmaps[flip_index, :, ::-1], tags[flip_index][..., ::-1]


def _warp_maps(maps: np.ndarray, matrix: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Warp [C,h,w] maps with a 2x3 affine matrix (source map px -> target map px) onto an out_hw grid."""
    channels = maps.shape[0]
    channels_last = np.ascontiguousarray(maps.reshape(channels, *maps.shape[-2:]).transpose(1, 2, 0))
    chunks = []
    for start in range(0, channels, _WARP_CHANNELS):
        warped = cv2.warpAffine(
            np.ascontiguousarray(channels_last[:, :, start:start + _WARP_CHANNELS]),
            matrix,
            (out_hw[1], out_hw[0]),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        chunks.append(warped.reshape(out_hw[0], out_hw[1], -1))
    return np.concatenate(chunks, axis=2).transpose(2, 0, 1)


def _map_to_map_matrix(source: Letterbox, target: Letterbox) -> np.ndarray:
    """2x3 affine matrix taking source map pixels to target map pixels (both via image pixels)."""
    to_image = source.map_to_image_matrix()
    from_image = target.map_to_image_matrix()
    scale = to_image[[0, 1], [0, 1]] / from_image[[0, 1], [0, 1]]
    offset = (to_image[:, 2] - from_image[:, 2]) / from_image[[0, 1], [0, 1]]
    return np.array([[scale[0], 0.0, offset[0]], [0.0, scale[1], offset[1]]])


def _check_image(image_bgr: np.ndarray) -> None:
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.size == 0:
        shape = getattr(image_bgr, "shape", None)
        raise ValueError(f"expected a BGR image [H,W,3], got {shape}")


def predict_image(
    infer: InferFn,
    image_bgr: np.ndarray,
    input_hw: tuple[int, int],
    schema: KeypointSchema,
    config: PredictConfig | None = None,
) -> list[Pose]:
    """Poses in image pixels for one BGR uint8 image, best score first (maps as `image_maps` gives them)."""
    config = config or PredictConfig()
    heatmaps, tags, letterbox = image_maps(infer, image_bgr, input_hw, schema, config.flip, config.scales)
    return poses_from_maps(heatmaps, tags, letterbox, schema, config.decode)


def image_maps(
    infer: InferFn,
    image_bgr: np.ndarray,
    input_hw: tuple[int, int],
    schema: KeypointSchema,
    flip: bool = False,
    scales: tuple[float, ...] = (1.0,),
) -> tuple[np.ndarray, np.ndarray, Letterbox]:
    """The network's maps for one BGR uint8 image with test-time augmentation: heatmaps [K,h,w], tags
    [K,L',h,w] (L' = L x 2 with flip x the number of scales) and the Letterbox from image pixels to them.

    input_hw is the network input at scale 1.0; other scales use input_hw * scale rounded to a
    multiple of 64. The plain and mirrored inputs of one scale go through ``infer`` as one batch.
    """
    _check_image(image_bgr)
    scales = check_scales(scales)

    per_scale = []
    for scale in scales:
        letterbox = Letterbox.fit(image_bgr.shape[:2], scaled_input_hw(input_hw, scale))
        network_input = to_network_input(letterbox.apply(image_bgr))
        batch = np.stack([network_input, network_input[:, :, ::-1]]) if flip else network_input[None]
        heatmaps, tags = infer(np.ascontiguousarray(batch))
        heatmaps, tags = np.asarray(heatmaps, dtype=np.float32), np.asarray(tags, dtype=np.float32)
        if tags.ndim == 4:  # [B,K,h,w]: L = 1
            tags = tags[:, :, None]
        scale_heatmaps, scale_tags = heatmaps[0], tags[0]
        letterbox = letterbox.for_maps(scale_heatmaps.shape[-2:])
        if flip:
            flipped_heatmaps, flipped_tags = _flip_back(heatmaps[1], tags[1], schema)
            scale_heatmaps = (scale_heatmaps + flipped_heatmaps) / 2
            scale_tags = np.concatenate([scale_tags, flipped_tags], axis=1)
        per_scale.append((letterbox, scale_heatmaps, scale_tags))

    if len(per_scale) == 1:
        letterbox, heatmaps, tags = per_scale[0]
        return heatmaps, tags, letterbox

    # Aggregate on the finest grid, where the maps lose least by interpolation.
    target = max(per_scale, key=lambda item: item[0].map_hw[0] * item[0].map_hw[1])[0]
    target_hw = target.map_hw
    heatmap_sum = np.zeros((schema.num_keypoints, *target_hw), dtype=np.float32)
    all_tags = []
    for letterbox, heatmaps, tags in per_scale:
        if letterbox == target:
            heatmap_sum += heatmaps
            all_tags.append(tags)
            continue
        matrix = _map_to_map_matrix(letterbox, target)
        heatmap_sum += _warp_maps(heatmaps, matrix, target_hw)
        num_joints, tag_dim = tags.shape[:2]
        warped_tags = _warp_maps(tags.reshape(num_joints * tag_dim, *tags.shape[2:]), matrix, target_hw)
        all_tags.append(warped_tags.reshape(num_joints, tag_dim, *target_hw))
    return heatmap_sum / len(per_scale), np.concatenate(all_tags, axis=1), target


def pose_records(poses: list[Pose], schema: KeypointSchema) -> list[dict]:
    """One JSON-ready record per person: named keypoints (x, y, score), person score, box, tag."""
    return [
        {
            "score": float(pose.score),
            "box": [float(v) for v in pose.box],
            "tag": [float(v) for v in pose.tag],
            "keypoints": {
                name: {"x": float(x), "y": float(y), "score": float(score)}
                for name, (x, y, score) in zip(schema.keypoint_names, pose.keypoints)
            },
        }
        for pose in poses
    ]
