"""Dense distillation: the teacher's soft keypoint heatmaps as training targets on every pixel.

Sparse pseudo-labels keep only the teacher's confident people and joints; the teacher's heatmaps (MoveNet
MultiPose's `Sigmoid_1`: sigmoid, K x H/4 x W/4, the same layout and stride as ours) also carry what it is
unsure of. They are computed once per training image (`write_teacher_maps`, `tagtrack teacher-maps`) and
stored as uint8 `.npy` files, [K+1, h, w] (K keypoint heatmaps, then the person-centre heatmap), covering the
whole image stretched to the teacher's input. At training time they are warped with the view's affine
(`warp_teacher_maps`) and combined with the label heatmaps (`dense_targets`).

File layout: the maps of image `file_name` (as in the COCO file) are `MAPS_DIR/file_name.npy`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from tagtrack.model.codec import render_heatmaps
from tagtrack.model.errors import UserFacingError
from tagtrack.model.files import read_image, read_json, write_atomically
from tagtrack.model.schema import COCO17, KeypointSchema

log = logging.getLogger(__name__)

MAPS_SUFFIX = ".npy"


def maps_path(maps_dir: Path, file_name: str) -> Path:
    return maps_dir / f"{file_name}{MAPS_SUFFIX}"


def write_teacher_maps(teacher_path: str | Path, annotations: str | Path, images_dir: str | Path,
                       maps_dir: str | Path, long_side: int = 384, progress: bool = True) -> int:
    """Run the teacher once on every image of a COCO file and store its dense maps; existing files are kept.
    Returns how many were written."""
    from tqdm import tqdm

    from tagtrack.training.teacher import MoveNetTeacher

    annotations, images_dir, maps_dir = Path(annotations), Path(images_dir), Path(maps_dir)
    data = read_json(annotations, "annotation file")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise UserFacingError(f"{annotations} is not a COCO file with an 'images' list")
    teacher = MoveNetTeacher(teacher_path, COCO17, dense_maps=True)
    written = 0
    for image in tqdm(images, desc="teacher maps", unit="image", disable=not progress):
        target = maps_path(maps_dir, image["file_name"])
        if target.is_file():
            continue
        bgr = read_image(images_dir / image["file_name"])
        _, maps = teacher.run_dense(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), long_side)
        save_teacher_maps(target, maps)
        written += 1
    return written


def save_teacher_maps(path: Path, maps: np.ndarray) -> None:
    """Store maps in [0,1] as uint8 (1/255 steps are far below the teacher's own error), whole or not at all."""
    quantised = np.round(np.clip(maps, 0.0, 1.0) * 255).astype(np.uint8)
    write_atomically(path, lambda temporary: np.save(temporary, quantised))


def load_teacher_maps(path: Path, num_keypoints: int) -> np.ndarray | None:
    """The keypoint heatmaps float32 [K,h,w] in [0,1], or None when the file is absent or unreadable."""
    try:
        maps = np.load(path)
    except (OSError, ValueError):
        return None
    if maps.ndim != 3 or maps.shape[0] < num_keypoints:
        log.warning("ignoring teacher maps %s of shape %s", path, maps.shape)
        return None
    return maps[:num_keypoints].astype(np.float32) / 255.0


def teacher_to_image_matrix(maps_hw: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """3x3: teacher map pixel -> image pixel (the map covers the whole image, stretched; pixel centres)."""
    sy, sx = image_hw[0] / maps_hw[0], image_hw[1] / maps_hw[1]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def warp_teacher_maps(maps: np.ndarray, image_hw: tuple[int, int], image_to_map: np.ndarray,
                      out_hw: tuple[int, int], flip: bool, schema: KeypointSchema = COCO17) -> np.ndarray:
    """Teacher heatmaps [K,h,w] -> the view's output map [K,out_h,out_w] (same affine as the image; a mirrored
    view swaps left and right channels like the labels)."""
    matrix = image_to_map @ teacher_to_image_matrix(maps.shape[1:], image_hw)
    warped = cv2.warpAffine(np.ascontiguousarray(maps.transpose(1, 2, 0)), matrix[:2], (out_hw[1], out_hw[0]),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    warped = warped.reshape(out_hw[0], out_hw[1], -1).transpose(2, 0, 1)
    if flip:
        warped = warped[list(schema.flip_index)]
    return np.ascontiguousarray(warped, dtype=np.float32)


def suppress_mirror_peaks(teacher_heatmaps: np.ndarray, keypoints: np.ndarray, sigma: float | np.ndarray,
                          schema: KeypointSchema = COCO17, min_separation: float = 2.0) -> np.ndarray:
    """The teacher's maps with each joint's channel cleared around the same person's mirror joint.

    MoveNet's heatmaps hedge between left and right: its left-shoulder map often peaks on both shoulders
    (on LSPET's labelled athletes the left map at the right joint is 0.11 on average against 0.40 at the
    left one, and above half of it for 32 % of pairs); its regression head, not the heatmap, settles the side.
    Distilled as they are, the student learns the same two peaks per channel and the decoder puts a
    person's left and right joints on one spot (a skeleton drawn as a line). keypoints [N,K,3] (map pixels,
    channels already swapped for a mirrored view) say where each side is: channel k is multiplied by
    1 - gaussian(sigma) at the person's flip_index[k] joint, wherever both are labelled and at least
    min_separation sigmas apart (closer than that the two sides are one blob and nothing is cleared).
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.size == 0:
        return teacher_heatmaps
    flip_index = list(schema.flip_index)
    mirror = keypoints[:, flip_index].copy()
    sigmas = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (keypoints.shape[0],))  # one per person
    distance = np.linalg.norm(keypoints[..., :2] - mirror[..., :2], axis=-1)
    far_apart = distance >= min_separation * sigmas[:, None]
    mirror[..., 2] = ((keypoints[..., 2] > 0) & (mirror[..., 2] > 0) & far_apart).astype(np.float64)
    height, width = teacher_heatmaps.shape[1:]
    cleared = teacher_heatmaps * (1.0 - render_heatmaps(mirror, height, width, sigmas))
    return cleared.astype(np.float32)


def dense_targets(label_heatmaps: np.ndarray, teacher_heatmaps: np.ndarray | None) -> np.ndarray:
    """Label heatmaps where there are labels, the teacher's soft maps everywhere else (the larger of the two:
    a labelled joint keeps its peak of 1, an unlabelled or doubtful one gets the teacher's belief)."""
    if teacher_heatmaps is None:
        return label_heatmaps
    return np.maximum(label_heatmaps, teacher_heatmaps)


def zoomed_self_targets(reference: torch.nn.Module, images: torch.Tensor, zoom: int) -> torch.Tensor:
    """Heatmap targets [B,K,h,w] from a frozen network's own maps: its maps of the images, or for zoom >= 2 the
    larger of those and its maps of the images zoomed by `zoom` (bilinear, pixel centres kept), max-pooled back
    over each zoom x zoom block (a block's pooled cell has the same centre as the 1x cell: the codec's 4j + 1.5).

    A network that sees small people better when they are larger (MoveNet's does: on PETS at 384x512 it finds
    91 % of the teacher's walkers against 79 % at 256x384) is taught to give them those peaks at 1x, while
    large people keep the 1x maps (the larger of the two)."""
    if zoom < 1:
        raise ValueError(f"zoom must be a whole number >= 1, not {zoom}")
    with torch.no_grad():
        targets = reference.forward_stacks(images)[-1][0].float()
        if zoom >= 2:
            zoomed = F.interpolate(images, scale_factor=float(zoom), mode="bilinear", align_corners=False)
            zoomed_maps = reference.forward_stacks(zoomed)[-1][0].float()
            targets = torch.maximum(targets, F.max_pool2d(zoomed_maps, kernel_size=zoom))
    return targets
