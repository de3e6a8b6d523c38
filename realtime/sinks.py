"""Outputs of the pipeline: annotated video, JSON Lines, COCO / PoseTrack / OpenPose / MOTChallenge exports.

Every sink takes `FrameResult`s through write() and finishes its file(s) in close(). Output
folders are checked when the sink is created (missing or read-only folder -> UserFacingError),
so a run never processes a whole video only to fail at the end. Streaming outputs (video, JSON
Lines, OpenPose files) are written as frames complete, so a run stopped by Ctrl-C keeps every
processed frame; the COCO and PoseTrack exports are single JSON documents written at close.
No sink skips a frame: a frame whose size differs from the video's is resized, not dropped.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import cv2
import numpy as np

from tagtrack.model.errors import UserFacingError
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.realtime.pipeline import FrameResult

log = logging.getLogger(__name__)

# Version of the JSON Lines record layout (realtime/pose_jsonl.schema.json). Bump on any change
# that could break a reader.
JSONL_SCHEMA_VERSION = 1
JSONL_SCHEMA_PATH = Path(__file__).with_name("pose_jsonl.schema.json")
DEFAULT_VIDEO_FPS = 30.0
EXPORT_FORMATS = ("coco", "posetrack", "openpose", "mot")


def check_output_path(path: str | Path, what: str = "output") -> Path:
    """Fail early, with one line, when `path` cannot be written (missing or read-only folder)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UserFacingError(f"{what} {path} is a folder, expected a file name")
    if not folder.is_dir():
        raise UserFacingError(f"{what} folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserFacingError(f"{what} folder {folder} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserFacingError(f"{what} {path} exists and is not writable")
    return path


def _number(value: float, digits: int = 2) -> float:
    value = float(value)
    return round(value, digits) if math.isfinite(value) else 0.0


def person_record(tracked, schema: KeypointSchema) -> dict:
    """One person of the JSON Lines record: track_id, score, box, named keypoints, tag."""
    pose = tracked.pose
    keypoints = np.asarray(pose.keypoints, dtype=np.float64)
    return {
        "track_id": None if tracked.track_id is None else int(tracked.track_id),
        "score": _number(pose.score, 4),
        "box": [_number(v) for v in np.asarray(pose.box).reshape(4)],
        "keypoints": {
            name: {"x": _number(keypoints[k, 0]), "y": _number(keypoints[k, 1]), "score": _number(keypoints[k, 2], 4)}
            for k, name in enumerate(schema.keypoint_names)
        },
        "tag": [_number(v, 4) for v in np.asarray(pose.tag).reshape(-1)],
    }


def frame_record(result: FrameResult, schema: KeypointSchema) -> dict:
    """The JSON Lines record of one frame (layout: realtime/pose_jsonl.schema.json)."""
    height, width = result.frame.image.shape[:2]
    return {
        "schema_version": JSONL_SCHEMA_VERSION,
        "frame_index": int(result.frame.index),
        "timestamp": _number(result.frame.timestamp, 6),
        "source_id": result.frame.source_id,
        "image": {"width": int(width), "height": int(height)},
        "dropped": int(result.dropped),
        "people": [person_record(tracked, schema) for tracked in result.tracked],
    }


class JsonLinesSink:
    """One JSON object per frame, one line each, flushed as soon as the frame is done."""

    def __init__(self, path: str | Path, schema: KeypointSchema = COCO17) -> None:
        self.path = check_output_path(path, "JSON output")
        self.schema = schema
        self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.frames_written = 0

    def write(self, result: FrameResult) -> None:
        line = json.dumps(frame_record(result, self.schema), separators=(",", ":"), allow_nan=False)
        self._file.write(line + "\n")
        self._file.flush()  # a run killed mid-way keeps every finished line
        self.frames_written += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class AnnotatedVideoSink:
    """The input frames with skeletons, track IDs (stable colours) and optional boxes, as mp4.

    Written at the input's size and frame rate with OpenCV's `mp4v` codec (what the OpenCV wheel
    ships; common players open it). The writer opens at the first frame, when the size is known.
    """

    def __init__(self, path: str | Path, fps: float | None, schema: KeypointSchema = COCO17,
                 draw_boxes: bool = False, draw_ids: bool = True) -> None:
        self.path = check_output_path(path, "video output")
        self.fps = fps if fps and fps > 0 else DEFAULT_VIDEO_FPS
        self.schema = schema
        self.draw_boxes = draw_boxes
        self.draw_ids = draw_ids
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None  # (width, height)
        self.frames_written = 0

    def _open(self, width: int, height: int) -> None:
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), float(self.fps), (width, height))
        if not writer.isOpened():
            raise UserFacingError(f"cannot write video {self.path} (OpenCV could not open an mp4v writer)")
        self._writer = writer
        self._size = (width, height)

    def write(self, result: FrameResult) -> None:
        from tagtrack.realtime.draw import draw_poses

        # A copy: other sinks (the viewer) get the same frame and must see it undrawn.
        image = draw_poses(result.frame.image.copy(), [tracked.pose for tracked in result.tracked], self.schema,
                           track_ids=[tracked.track_id for tracked in result.tracked],
                           draw_boxes=self.draw_boxes, draw_ids=self.draw_ids)
        height, width = image.shape[:2]
        if self._writer is None:
            self._open(width, height)
        if (width, height) != self._size:
            # OpenCV's writer silently skips frames of another size; resize instead.
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames_written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()  # finalises the container (moov atom)
            self._writer = None


def _flat_keypoints(keypoints: np.ndarray) -> list[float]:
    return [_number(v, 2 if i % 3 < 2 else 4) for i, v in enumerate(np.asarray(keypoints, dtype=np.float64).reshape(-1))]


def image_id_for(frame) -> int:
    """COCO image id of a frame: the numeric file name of a folder image (COCO's 000000000139.jpg),
    else the frame index."""
    stem = Path(frame.source_id).stem
    if stem.isdigit() and Path(frame.source_id).suffix:
        return int(stem)
    return int(frame.index)


def _write_json_atomically(path: Path, document: object) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as file:
        json.dump(document, file, allow_nan=False)
    os.replace(partial, path)


class CocoResultsSink:
    """COCO keypoint results JSON: [{image_id, category_id: 1, keypoints [x,y,score]*K, score}].

    The list pycocotools' `COCO.loadRes` takes; written at close.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = check_output_path(path, "COCO export")
        self._results: list[dict] = []

    def write(self, result: FrameResult) -> None:
        image_id = image_id_for(result.frame)
        for tracked in result.tracked:
            self._results.append({
                "image_id": image_id,
                "category_id": 1,
                "keypoints": _flat_keypoints(tracked.pose.keypoints),
                "score": _number(tracked.pose.score, 4),
            })

    def close(self) -> None:
        _write_json_atomically(self.path, self._results)


class PoseTrackSink:
    """PoseTrack18-style JSON: images (one per frame), annotations with track_id, categories.

    Keypoints are our COCO-17 set in the COCO layout PoseTrack18 uses (x, y, score triples plus
    a per-joint "scores" list); people without a tracker get track_id -1. Written at close.
    """

    def __init__(self, path: str | Path, schema: KeypointSchema = COCO17) -> None:
        self.path = check_output_path(path, "PoseTrack export")
        self.schema = schema
        self._images: list[dict] = []
        self._annotations: list[dict] = []

    def write(self, result: FrameResult) -> None:
        frame = result.frame
        height, width = frame.image.shape[:2]
        image_id = int(frame.index)
        self._images.append({
            "id": image_id, "frame_id": image_id, "file_name": _frame_name(frame),
            "width": int(width), "height": int(height), "timestamp": _number(frame.timestamp, 6),
        })
        for tracked in result.tracked:
            pose = tracked.pose
            self._annotations.append({
                "id": len(self._annotations),
                "image_id": image_id,
                "category_id": 1,
                "track_id": -1 if tracked.track_id is None else int(tracked.track_id),
                "keypoints": _flat_keypoints(pose.keypoints),
                "scores": [_number(s, 4) for s in np.asarray(pose.keypoints)[:, 2]],
                "score": _number(pose.score, 4),
                "bbox": _xywh(pose.box),
            })

    def close(self) -> None:
        document = {
            "images": self._images,
            "annotations": self._annotations,
            "categories": [{
                "id": 1, "name": "person", "supercategory": "person",
                "keypoints": list(self.schema.keypoint_names),
                "skeleton": [[a + 1, b + 1] for a, b in self.schema.skeleton],  # 1-based, as in COCO files
            }],
        }
        _write_json_atomically(self.path, document)


def _frame_name(frame) -> str:
    """The image file of a folder frame, else "<video name>#<frame index>"."""
    path = Path(frame.source_id)
    if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"):
        return frame.source_id
    return f"{path.name}#{frame.index:06d}"


def _xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box).reshape(4))
    return [_number(x1), _number(y1), _number(x2 - x1), _number(y2 - y1)]


# OpenPose BODY_25 joint order, each as the COCO-17 joints it comes from (a pair: their midpoint;
# empty: OpenPose's foot joints, which COCO-17 does not have, written as 0,0,0).
_BODY25_FROM_COCO17: tuple[tuple[int, ...], ...] = (
    (0,), (5, 6), (6,), (8,), (10,), (5,), (7,), (9,), (11, 12), (12,), (14,), (16,), (11,), (13,), (15,),
    (2,), (1,), (4,), (3,), (), (), (), (), (), (),
)


def openpose_body25(keypoints: np.ndarray) -> list[float]:
    """COCO-17 [17,3] -> OpenPose BODY_25 flat [x, y, c] * 25 (neck, mid-hip: midpoints; feet: 0)."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    flat: list[float] = []
    for sources in _BODY25_FROM_COCO17:
        if not sources or any(keypoints[s, 2] <= 0 for s in sources):
            flat.extend([0.0, 0.0, 0.0])
            continue
        chosen = keypoints[list(sources)]
        flat.extend([_number(chosen[:, 0].mean()), _number(chosen[:, 1].mean()), _number(chosen[:, 2].min(), 4)])
    return flat


class OpenPoseSink:
    """OpenPose-style JSON, one `<name>_<frame:012d>_keypoints.json` per frame, BODY_25 layout.

    Written per frame, like OpenPose's own `--write_json`, so nothing is lost on Ctrl-C.
    """

    def __init__(self, folder: str | Path, name: str = "frame") -> None:
        self.folder = Path(folder)
        if self.folder.is_dir():
            check_output_path(self.folder / "frame_keypoints.json", "OpenPose export")
        else:
            check_output_path(self.folder, "OpenPose export folder")
            self.folder.mkdir()
        self.name = name

    def write(self, result: FrameResult) -> None:
        people = [{
            "person_id": [-1 if tracked.track_id is None else int(tracked.track_id)],
            "pose_keypoints_2d": openpose_body25(tracked.pose.keypoints),
            "face_keypoints_2d": [], "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": [],
            "pose_keypoints_3d": [], "face_keypoints_3d": [], "hand_left_keypoints_3d": [],
            "hand_right_keypoints_3d": [],
        } for tracked in result.tracked]
        path = self.folder / f"{self.name}_{result.frame.index:012d}_keypoints.json"
        with open(path, "w", encoding="utf-8") as file:
            json.dump({"version": 1.3, "people": people}, file, allow_nan=False)

    def close(self) -> None:
        pass


class MotChallengeSink:
    """MOTChallenge result rows, `frame,id,left,top,width,height,score,-1,-1,-1`, one per tracked person.

    Frames are 1-based (frame index + 1), as MOTChallenge numbers them; people without a track id are
    left out. The box is the pose's box widened to the tracker's person box (`widened_boxes`: at least
    0.4 as wide as tall), nearer a pedestrian box than the thin box around a walker's joints.
    Rows are written and flushed per frame, so nothing is lost on Ctrl-C.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = check_output_path(path, "MOT export")
        self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, result: FrameResult) -> None:
        from tagtrack.tracker.tracker import widened_boxes

        people = [t for t in result.tracked if t.track_id is not None]
        if not people:
            return
        boxes = widened_boxes(np.array([np.asarray(t.pose.box, dtype=np.float64).reshape(4) for t in people]), 0.4)
        for tracked, box in zip(people, boxes):
            x, y, w, h = _xywh(box)
            self._file.write(f"{result.frame.index + 1},{int(tracked.track_id)},{x},{y},{w},{h},"
                             f"{_number(tracked.pose.score, 4)},-1,-1,-1\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def export_sinks(formats: list[str], base: str | Path, schema: KeypointSchema = COCO17) -> list:
    """The sinks for `--format`: <base>.coco.json, <base>.posetrack.json, <base>_openpose/, <base>.mot.txt."""
    base = Path(base)
    sinks = []
    for name in dict.fromkeys(formats):
        if name == "coco":
            sinks.append(CocoResultsSink(base.with_name(base.name + ".coco.json")))
        elif name == "posetrack":
            sinks.append(PoseTrackSink(base.with_name(base.name + ".posetrack.json"), schema))
        elif name == "openpose":
            sinks.append(OpenPoseSink(base.with_name(base.name + "_openpose"), name=base.name))
        elif name == "mot":
            sinks.append(MotChallengeSink(base.with_name(base.name + ".mot.txt")))
        else:
            raise UserFacingError(f"unknown export format {name!r} (choose from {', '.join(EXPORT_FORMATS)})")
    return sinks


class ProgressBarSink:
    """A tqdm progress bar advanced by one per written frame (files: with the total frame count)."""

    def __init__(self, total: int | None, description: str = "frames") -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=description, unit="frame", dynamic_ncols=True)

    def write(self, result: FrameResult) -> None:
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
