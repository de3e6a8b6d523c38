"""What the viewer draws, without Qt: annotated frame, heatmap overlay, stats text, frame rate, recording.

Kept apart from the window so it can be tested and reused without a display.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tagtrack.model.config import OUTPUT_STRIDE
from tagtrack.model.errors import UserFacingError
from tagtrack.model.schema import KeypointSchema
from tagtrack.model.transforms import Letterbox
from tagtrack.realtime.draw import color_for_id, draw_poses
from tagtrack.realtime.pipeline import STAGES, FrameResult

log = logging.getLogger(__name__)

HEATMAP_MAX_ALPHA = 0.7  # how opaque the hottest heatmap pixel is drawn over the frame


@dataclass
class ViewOptions:
    """What the viewer draws on top of the frame (the toolbar toggles)."""

    skeleton: bool = True
    ids: bool = True
    boxes: bool = False
    heatmap: bool = False


@dataclass
class ViewStats:
    """The numbers in the overlay."""

    fps: float
    latency_ms: float
    dropped: int
    frame_index: int
    paused: bool = False
    recording: bool = False


def processing_latency_ms(timings: dict[str, float]) -> float:
    """Milliseconds from capture start to sinks done when the pipeline measured it ("latency"), else the
    sum of the stages measured so far (queue waits excluded)."""
    if "latency" in timings:
        return 1000.0 * float(timings["latency"])
    return 1000.0 * float(sum(seconds for stage, seconds in timings.items() if stage in STAGES))


def render_result(result: FrameResult, schema: KeypointSchema, options: ViewOptions) -> np.ndarray:
    """The frame with the chosen annotations, as a new BGR uint8 image (the input frame is not modified)."""
    canvas = result.frame.image.copy()
    if options.heatmap and result.heatmaps is not None:
        canvas = blend_heatmap(canvas, result.heatmaps, result.letterbox)
    poses = [tracked.pose for tracked in result.tracked]
    boxes = [tracked.box for tracked in result.tracked]  # as the outputs write them
    # Without a tracker the pipeline gives track_id None: nothing to label, one colour for all.
    ids = [tracked.track_id for tracked in result.tracked]
    track_ids = ids if all(track_id is not None for track_id in ids) else None
    if options.skeleton:
        draw_poses(canvas, poses, schema, track_ids=track_ids, draw_boxes=options.boxes, boxes=boxes,
                   draw_ids=options.ids and track_ids is not None)
    elif options.boxes or (options.ids and track_ids is not None):
        draw_boxes_and_ids(canvas, boxes, track_ids, draw_boxes=options.boxes, draw_ids=options.ids)
    return canvas


def draw_boxes_and_ids(
    image: np.ndarray, boxes: list, track_ids: list[int] | None, draw_boxes: bool, draw_ids: bool
) -> None:
    """Boxes (x1, y1, x2, y2, as the tracker reports them) and/or ID labels alone, for when the skeleton is
    switched off (draw_poses always draws it)."""
    for index, box in enumerate(boxes):
        track_id = None if track_ids is None else track_ids[index]
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        color = color_for_id(track_id if track_id is not None else index)  # as draw_poses does
        if draw_boxes:
            cv2.rectangle(image, (x1, y1), (x2, y2), color, 2, cv2.LINE_AA)
        if draw_ids and track_id is not None:
            cv2.putText(image, str(track_id), (x1, max(y1 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.6, color, 2,
                        cv2.LINE_AA)


def blend_heatmap(image: np.ndarray, heatmaps: np.ndarray, letterbox: Letterbox | None = None) -> np.ndarray:
    """Colour-map the max over joints, place it on the frame (undoing the letterbox) and blend by its strength.

    heatmaps: [K, h, w] in the network's output frame; letterbox: the frame's mapping to the network
    input (fitted from the map size when not given).
    """
    strength = np.clip(np.asarray(heatmaps, dtype=np.float32).max(axis=0), 0.0, 1.0)
    image_h, image_w = image.shape[:2]
    if letterbox is None:
        input_hw = (strength.shape[0] * OUTPUT_STRIDE, strength.shape[1] * OUTPUT_STRIDE)
        letterbox = Letterbox.fit((image_h, image_w), input_hw)
    letterbox = letterbox.for_maps(strength.shape)
    strength = cv2.warpAffine(strength, letterbox.map_to_image_matrix(), (image_w, image_h),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    colors = cv2.applyColorMap((strength * 255.0).astype(np.uint8), cv2.COLORMAP_JET).astype(np.float32)
    alpha = (strength * HEATMAP_MAX_ALPHA)[..., None]
    blended = image.astype(np.float32) * (1.0 - alpha) + colors * alpha
    return blended.astype(np.uint8)


def draw_stats(image: np.ndarray, stats: ViewStats) -> None:
    """FPS / latency / dropped frames (and PAUSED / REC) in a dark box at the top left, in place."""
    parts = [f"{stats.fps:5.1f} fps", f"latency {stats.latency_ms:4.0f} ms", f"dropped {stats.dropped}",
             f"frame {stats.frame_index}"]
    if stats.paused:
        parts.append("PAUSED")
    if stats.recording:
        parts.append("REC")
    text = "  ".join(parts)
    scale = max(0.4, image.shape[1] / 1400.0)
    thickness = 1 if scale < 0.8 else 2
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(4, int(6 * scale))
    box_w = min(image.shape[1], text_w + 2 * pad)
    box_h = min(image.shape[0], text_h + baseline + 2 * pad)
    region = image[:box_h, :box_w]
    region[:] = (region.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken so the text reads on any frame
    color = (80, 80, 255) if stats.recording else (255, 255, 255)
    cv2.putText(image, text, (pad, pad + text_h), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)


class FrameRateMeter:
    """Frames per second over a sliding window of arrival times."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._times.append(now)
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()

    def fps(self, now: float | None = None) -> float:
        """Rate over the ticks of the last window_s seconds; 0 once ticks stop (e.g. paused)."""
        now = time.monotonic() if now is None else now
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def reset(self) -> None:
        self._times.clear()


class VideoRecorder:
    """Writes the shown (annotated) frames to an mp4 with OpenCV; the file is valid once close() returns."""

    def __init__(self, path: Path, fps: float, frame_hw: tuple[int, int]) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise UserFacingError(f"cannot record to {self.path}: folder {self.path.parent} does not exist")
        self.frame_hw = frame_hw
        self.frames_written = 0
        # mp4v is the codec the OpenCV wheels can always write; common players open it.
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps),
                                       (frame_hw[1], frame_hw[0]))
        if not self._writer.isOpened():
            raise UserFacingError(f"cannot record to {self.path}: OpenCV could not open an mp4 writer there")

    def write(self, image: np.ndarray) -> None:
        if image.shape[:2] != self.frame_hw:
            image = cv2.resize(image, (self.frame_hw[1], self.frame_hw[0]), interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames_written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            log.info("recorded %d frames to %s", self.frames_written, self.path)
