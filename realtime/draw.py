"""Drawing poses on a frame with OpenCV: skeleton, joints, a stable colour per track id, id labels."""

from __future__ import annotations

import colorsys
from typing import Sequence

import cv2
import numpy as np

from tagtrack.model.pose import Pose
from tagtrack.model.schema import KeypointSchema

GOLDEN_RATIO_CONJUGATE = 0.618033988749895  # hue steps that keep consecutive ids far apart on the wheel
DEFAULT_MIN_SCORE = 0.1  # joints below this (the decoder's detection threshold) are not drawn


def color_for_id(track_id: int) -> tuple[int, int, int]:
    """A bright BGR colour that is the same for the same id in every frame and run."""
    hue = (int(track_id) * GOLDEN_RATIO_CONJUGATE) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(round(blue * 255)), int(round(green * 255)), int(round(red * 255))


def _line_thickness(keypoints: np.ndarray, visible: np.ndarray) -> int:
    """About 1 px per 80 px of person size, at least 1, so small and large people both read well."""
    xy = keypoints[visible, :2]
    size = float(np.hypot(*(xy.max(axis=0) - xy.min(axis=0)))) if len(xy) else 0.0
    return int(np.clip(round(size / 80.0), 1, 8))


def draw_poses(
    image: np.ndarray,
    poses: Sequence[Pose],
    schema: KeypointSchema,
    track_ids: Sequence[int | None] | None = None,
    draw_boxes: bool = False,
    draw_ids: bool = True,
    min_score: float = DEFAULT_MIN_SCORE,
    boxes: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Draw the poses onto the BGR uint8 image in place (and return it).

    Each person gets one colour: ``color_for_id`` of its track id, or of its index when no ids are
    given (or its id is None). Joints scoring below ``min_score`` and the limbs touching them are left out.
    With ``draw_boxes`` each person's box is drawn, the ID label on its top-left corner: ``boxes[i]`` (the box
    the tracker reports, as the outputs write it) or else the pose's own whole-body box.
    """
    if track_ids is not None and len(track_ids) != len(poses):
        raise ValueError(f"{len(poses)} poses but {len(track_ids)} track ids")
    if boxes is not None and len(boxes) != len(poses):
        raise ValueError(f"{len(poses)} poses but {len(boxes)} boxes")
    for index, pose in enumerate(poses):
        track_id = None if track_ids is None or track_ids[index] is None else int(track_ids[index])
        color = color_for_id(index if track_id is None else track_id)
        keypoints = np.asarray(pose.keypoints, dtype=np.float64)
        visible = (keypoints[:, 2] >= min_score) & (keypoints[:, 2] > 0) & np.isfinite(keypoints[:, :2]).all(axis=1)
        if not visible.any():
            continue
        thickness = _line_thickness(keypoints, visible)
        points = np.round(keypoints[:, :2]).astype(np.int64)
        for start, end in schema.skeleton:
            if visible[start] and visible[end]:
                cv2.line(image, tuple(map(int, points[start])), tuple(map(int, points[end])), color, thickness, cv2.LINE_AA)
        for joint in np.nonzero(visible)[0]:
            cv2.circle(image, tuple(map(int, points[joint])), thickness + 1, color, -1, cv2.LINE_AA)
        x1, y1 = points[visible].min(axis=0)
        if draw_boxes:
            box = pose.box if boxes is None else boxes[index]
            x1, y1, x2, y2 = (int(round(float(v))) for v in np.asarray(box).reshape(4))
            cv2.rectangle(image, (x1, y1), (x2, y2), color, max(1, thickness // 2), cv2.LINE_AA)
        if draw_ids and track_id is not None:
            _draw_label(image, str(track_id), (int(x1), int(y1)), color, thickness)
    return image


def _draw_label(image: np.ndarray, text: str, corner: tuple[int, int], color: tuple[int, int, int], thickness: int) -> None:
    """The id in black on a box of the person's colour, just above the top-left corner of the person."""
    font_scale = 0.4 + 0.15 * thickness
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    x = int(np.clip(corner[0], 0, max(0, image.shape[1] - width - 4)))
    y = int(np.clip(corner[1] - 4, height + baseline + 2, max(height + baseline + 2, image.shape[0] - 1)))
    cv2.rectangle(image, (x, y - height - baseline - 2), (x + width + 4, y), color, -1)
    cv2.putText(image, text, (x + 2, y - baseline), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
