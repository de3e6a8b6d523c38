"""Outputs of the pipeline: annotated video, JSON Lines, COCO / PoseTrack / OpenPose / MOTChallenge exports.

Every sink takes `FrameResult`s through write() and finishes its file(s) in close(). Output
folders are checked when the sink is created (missing or read-only folder -> UserFacingError),
so a run never processes a whole video only to fail at the end.

No output ever leaves a broken file under its final name:
- whole-file outputs (the video, the COCO and PoseTrack exports, each OpenPose file) are written
  to `<stem>.partial<suffix>` beside the final name and renamed only when complete;
- JSON Lines are written in place, one whole line at a time: a failed write is cut back to the
  last complete line;
- every write and close is checked; a failure raises `OutputError` naming the file, and the run
  exits non-zero while the other outputs are still closed and kept.
The COCO and PoseTrack exports are streamed to disk, so memory stays flat however long the run.
No sink skips a frame: a frame whose size differs from the video's is resized, not dropped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tagtrack.model.errors import UserFacingError
from tagtrack.model.files import write_atomically
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.realtime.pipeline import FrameResult

log = logging.getLogger(__name__)

# Version of the JSON Lines record layout (realtime/pose_jsonl.schema.json). Bump on any change
# that could break a reader. 2: every detected person is written; track_id is null until the
# tracker confirms the person (and always without tracking); scores are clipped to [0, 1].
# 3: a file written by a run starts with a header line, {"schema_version", "settings"} (no frame_index).
JSONL_SCHEMA_VERSION = 3
JSONL_SCHEMA_PATH = Path(__file__).with_name("pose_jsonl.schema.json")
DEFAULT_VIDEO_FPS = 30.0
VIDEO_CODECS = ("h264", "mp4v")
# A keyframe (and so a new MP4 fragment) every this many seconds: what a kill can lose at most.
KEYFRAME_SECONDS = 1.0


class OutputError(UserFacingError):
    """Writing or closing an output failed (disk full, device gone); the message names the file."""


def output_error(path: Path, error: BaseException, kept: str = "") -> OutputError:
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return OutputError(f"cannot write {path}: {reason}{'; ' + kept if kept else ''}")


def partial_path(path: Path) -> Path:
    """Where a whole-file output is written until it is complete: `poses.coco.json` ->
    `poses.coco.partial.json` (same folder, so the final rename is atomic; same suffix, so a
    player still opens a video that a kill left behind)."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


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


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def refuse_overwriting(inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """Refuse any output that would destroy an input or another output, before anything is opened.

    inputs: label -> a file or folder that is read (a folder's images are inputs). outputs: label ->
    a file or folder that is written. Paths are compared resolved (symlinks, `..`, relative paths),
    and by inode for hard links. An output inside an input folder is refused when it has an image
    suffix (the run would read it back, or overwrite one of the images).
    """
    from tagtrack.realtime.sources import IMAGE_SUFFIXES

    resolved_outputs = {label: Path(path).expanduser().resolve() for label, path in outputs.items()}
    for in_label, in_path in inputs.items():
        source = Path(in_path).expanduser().resolve()
        for out_label, target in resolved_outputs.items():
            if target == source or _same_file(target, source):
                raise UserFacingError(f"{out_label} {outputs[out_label]} is the input {in_label}; "
                                      "it would be overwritten: choose another output name")
            if source.is_dir() and target.parent == source and target.suffix.lower() in IMAGE_SUFFIXES:
                raise UserFacingError(f"{out_label} {outputs[out_label]} is an image inside the input folder "
                                      f"{in_path}: choose another output name or folder")
    seen: dict[Path, str] = {}
    for label, target in resolved_outputs.items():
        if target in seen:
            raise UserFacingError(f"{label} and {seen[target]} name the same file {outputs[label]}")
        seen[target] = label


def _unit(value: float, digits: int = 4) -> float:
    """A score, clipped to [0, 1] (heatmap peaks of a network can overshoot 1 a little)."""
    return min(1.0, max(0.0, _number(value, digits)))


def _number(value: float, digits: int = 2) -> float:
    value = float(value)
    return round(value, digits) if math.isfinite(value) else 0.0


def person_record(tracked, schema: KeypointSchema) -> dict:
    """One person of the JSON Lines record: track_id, score, box, named keypoints, tag."""
    pose = tracked.pose
    keypoints = np.asarray(pose.keypoints, dtype=np.float64)
    return {
        "track_id": None if tracked.track_id is None else int(tracked.track_id),
        "score": _unit(pose.score),
        "box": [_number(v) for v in np.asarray(pose.box).reshape(4)],
        "keypoints": {
            name: {"x": _number(keypoints[k, 0]), "y": _number(keypoints[k, 1]), "score": _unit(keypoints[k, 2])}
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


def header_record(settings: dict) -> dict:
    """The first line of a run's JSON Lines: the effective settings (realtime/run.py: run_settings)."""
    return {"schema_version": JSONL_SCHEMA_VERSION, "settings": settings}


def is_header(record: dict) -> bool:
    """A JSON Lines record that describes the run rather than a frame."""
    return "frame_index" not in record


def read_pose_lines(path: str | Path) -> tuple[dict | None, list[dict]]:
    """Our JSON Lines file: (the header's settings or None for files without one, the frame records)."""
    settings, frames = None, []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                if is_header(record):
                    settings = record.get("settings")
                else:
                    frames.append(record)
    return settings, frames


def _json_line(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"


def write_whole_file(path: Path, write) -> None:
    """Write `path` through `write(temporary_path)` and rename it into place only when complete, so a
    full disk or a kill never leaves a cut file under the final name."""
    try:
        write_atomically(path, write, temporary=partial_path(path))
    except OutputError:
        raise
    except UserFacingError as error:
        raise OutputError(str(error)) from None


def write_image_record(path: Path, image: np.ndarray, source_id: str, poses: list,
                       schema: KeypointSchema = COCO17, settings: dict | None = None) -> None:
    """`predict --json`: one image's people as one JSON Lines record (frame 0, no track IDs), after the
    header line with `settings` when given."""
    from tagtrack.realtime.pipeline import _untracked
    from tagtrack.realtime.sources import Frame

    frame = Frame(image=image, index=0, timestamp=0.0, source_id=source_id)
    result = FrameResult(frame=frame, tracked=[_untracked(pose) for pose in poses], heatmaps=None, timings={},
                         dropped=0)
    text = (_json_line(header_record(settings)) if settings is not None else "") + _json_line(frame_record(result, schema))
    write_whole_file(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def write_image(path: Path, image: np.ndarray) -> None:
    """An image file (suffix picks the format), complete or not at all."""
    def encode(temporary: Path) -> None:
        ok, data = cv2.imencode(path.suffix, image)
        if not ok:
            raise OSError(f"OpenCV cannot encode {path.suffix} images")
        temporary.write_bytes(data.tobytes())

    write_whole_file(path, encode)


class JsonLinesSink:
    """One JSON object per frame, one line each, on disk as soon as the frame is done; with `settings`,
    a header line first (`header_record`).

    Written in place (a run killed mid-way keeps every finished line). A write that fails part-way
    (disk full) is cut back to the last complete line before the error is raised.
    """

    def __init__(self, path: str | Path, schema: KeypointSchema = COCO17, settings: dict | None = None) -> None:
        self.path = check_output_path(path, "JSON output")
        self.schema = schema
        try:
            self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        except OSError as error:
            raise output_error(self.path, error) from None
        self._complete_bytes = 0  # size of the file up to the last whole line
        self.frames_written = 0
        self.failed = False
        if settings is not None:
            try:
                self._write_line(_json_line(header_record(settings)))
            except OutputError:
                self._file.close()
                raise

    def write(self, result: FrameResult) -> None:
        if self.failed:
            return
        self._write_line(_json_line(frame_record(result, self.schema)))
        self.frames_written += 1

    def _write_line(self, line: str) -> None:
        data = memoryview(line.encode("utf-8"))
        try:
            while data:
                written = self._file.write(data)
                data = data[written:]
        except OSError as error:
            self.failed = True
            self._cut_back()
            raise output_error(self.path, error, f"kept the {self.frames_written} complete lines written before") from None
        self._complete_bytes += len(line.encode("utf-8"))

    def _cut_back(self) -> None:
        try:
            os.ftruncate(self._file.fileno(), self._complete_bytes)
        except OSError:
            log.warning("could not cut %s back to its last complete line", self.path)

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self._file.close()
        except OSError as error:
            raise output_error(self.path, error) from None


def _even(image: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs an even width and height: repeat the last row / column if odd."""
    height, width = image.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return image
    return cv2.copyMakeBorder(image, 0, height % 2, 0, width % 2, cv2.BORDER_REPLICATE)


def h264_encoder() -> str | None:
    """The H.264 encoder PyAV offers here (its wheels bundle FFmpeg), or None without PyAV."""
    try:
        import av
    except ImportError:
        return None
    for name in ("libx264", "libopenh264", "h264"):
        if name in av.codecs_available:
            try:
                av.codec.Codec(name, "w")
            except Exception:  # noqa: BLE001 - a decoder-only build: try the next name
                continue
            return name
    return None


def default_video_codec() -> str:
    """H.264 where PyAV can encode it (plays in browsers and every player), else OpenCV's mp4v."""
    return "h264" if h264_encoder() is not None else "mp4v"


class _PyAvH264Writer:
    """H.264 in a fragmented MP4 through PyAV: a fragment per keyframe is complete on disk, so a
    file cut by a kill or a full disk still plays up to its last fragment."""

    def __init__(self, path: Path, fps: float, width: int, height: int) -> None:
        from fractions import Fraction

        import av

        encoder = h264_encoder()
        if encoder is None:
            raise UserFacingError("--codec h264 needs PyAV (pip install av); or use --codec mp4v")
        self._av = av
        self._container = av.open(str(path), mode="w", format="mp4",
                                  # flush_packets: each finished fragment goes to disk at once,
                                  # not when FFmpeg's 32 KB write buffer happens to fill.
                                  options={"movflags": "frag_keyframe+empty_moov+default_base_moof",
                                           "flush_packets": "1"})
        rate = Fraction(fps).limit_denominator(1001)
        stream = self._container.add_stream(encoder, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = max(1, round(fps * KEYFRAME_SECONDS))
        if encoder == "libx264":
            stream.codec_context.options = {"preset": "veryfast", "crf": "23"}
        self._stream = stream
        self._time_base = Fraction(1) / rate
        self._index = 0

    def write(self, image: np.ndarray) -> None:
        frame = self._av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = self._index, self._time_base
        self._index += 1
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        try:
            self._container.mux(self._stream.encode(None))  # flush the encoder's delayed frames
        finally:
            self._container.close()

    def verify(self, path: Path, frames: int) -> None:
        """Count the frames the closed file holds. A mux raises on a failed write, but FFmpeg's last flush
        at close does not report one: a disk that fills at the last fragment leaves a cut file and no error.
        Demuxing reads the packets only (no decoding), so this costs a read of the file."""
        try:
            with self._av.open(str(path)) as container:
                found = sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)
        except (self._av.FFmpegError, IndexError) as error:  # no video stream at all: cut before its header
            raise OSError(f"the finished file cannot be read back ({error}; disk full?)") from None
        if found != frames:
            raise OSError(f"the finished file holds {found} of {frames} frames (disk full?)")


class _OpenCvMp4vWriter:
    """MPEG-4 Part 2 (mp4v) through OpenCV's writer: needs nothing beyond the OpenCV wheel, but its
    index is written at close, so only a completed file plays; and it reports no write errors, so the
    file is checked after closing."""

    def __init__(self, path: Path, fps: float, width: int, height: int) -> None:
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
        if not self._writer.isOpened():
            raise UserFacingError(f"cannot write video {path} (OpenCV could not open an mp4v writer)")

    def write(self, image: np.ndarray) -> None:
        self._writer.write(image)

    def close(self) -> None:
        self._writer.release()  # finalises the container (moov atom)

    def verify(self, path: Path, frames: int) -> None:
        capture = cv2.VideoCapture(str(path))
        try:
            found = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        finally:
            capture.release()
        if found != frames:
            raise OSError(f"the finished file holds {found} of {frames} frames (disk full?)")


class AnnotatedVideoSink:
    """The input frames with skeletons, track IDs (stable colours) and optional boxes, as mp4.

    Written at the input's size and frame rate, H.264 through PyAV (fragmented MP4) by default where
    PyAV is installed, else OpenCV's `mp4v`. The file is `<stem>.partial.mp4` until close() renames
    it. The writer opens at the first frame, when the size is known.
    """

    def __init__(self, path: str | Path, fps: float | None, schema: KeypointSchema = COCO17,
                 draw_boxes: bool = False, draw_ids: bool = True, codec: str | None = None) -> None:
        self.path = check_output_path(path, "video output")
        self.partial = partial_path(self.path)
        self.fps = fps if fps and fps > 0 else DEFAULT_VIDEO_FPS
        self.codec = codec or default_video_codec()
        if self.codec not in VIDEO_CODECS:
            raise UserFacingError(f"unknown video codec {self.codec!r} (choose from {', '.join(VIDEO_CODECS)})")
        if self.codec == "h264" and h264_encoder() is None:
            raise UserFacingError("--codec h264 needs PyAV with an H.264 encoder (pip install av); or --codec mp4v")
        self.schema = schema
        self.draw_boxes = draw_boxes
        self.draw_ids = draw_ids
        self._writer: _PyAvH264Writer | _OpenCvMp4vWriter | None = None
        self._size: tuple[int, int] | None = None  # (width, height) of the written frames
        self.frames_written = 0
        self.failed = False

    def _open(self, width: int, height: int) -> None:
        writer_class = _PyAvH264Writer if self.codec == "h264" else _OpenCvMp4vWriter
        if self.codec == "h264":
            width, height = width + width % 2, height + height % 2
        try:
            self._writer = writer_class(self.partial, float(self.fps), width, height)
        except OSError as error:
            raise output_error(self.path, error) from None
        self._size = (width, height)

    def write(self, result: FrameResult) -> None:
        from tagtrack.realtime.draw import draw_poses

        if self.failed:
            return
        # A copy: other sinks (the viewer) get the same frame and must see it undrawn.
        image = draw_poses(result.frame.image.copy(), [tracked.pose for tracked in result.tracked], self.schema,
                           track_ids=[tracked.track_id for tracked in result.tracked],
                           draw_boxes=self.draw_boxes, draw_ids=self.draw_ids)
        if self.codec == "h264":
            image = _even(image)
        height, width = image.shape[:2]
        if self._writer is None:
            self._open(width, height)
        if (width, height) != self._size:
            # OpenCV's writer silently skips frames of another size; resize instead.
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        try:
            self._writer.write(image)
        except Exception as error:  # noqa: BLE001 - PyAV raises its own OSError subclasses
            self.failed = True
            raise output_error(self.path, error, self._kept_note()) from None
        self.frames_written += 1

    def _kept_note(self) -> str:
        if self.codec == "h264":
            return f"the frames written so far play from {self.partial}"
        return ""

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.close()
            if not self.failed:
                writer.verify(self.partial, self.frames_written)
        except Exception as error:  # noqa: BLE001 - disk full at close: the file is not complete
            self.failed = True
            if self.codec != "h264":
                self.partial.unlink(missing_ok=True)  # an mp4v file without its index plays nowhere
            raise output_error(self.path, error, self._kept_note()) from None
        if self.failed:
            return  # the write error was reported; the partial file stays as it is
        os.replace(self.partial, self.path)


def _flat_keypoints(keypoints: np.ndarray) -> list[float]:
    return [_number(v, 2 if i % 3 < 2 else 4) for i, v in enumerate(np.asarray(keypoints, dtype=np.float64).reshape(-1))]


def image_id_for(frame) -> int:
    """COCO image id of a frame: the numeric file name of a folder image (COCO's 000000000139.jpg),
    else the frame index."""
    stem = Path(frame.source_id).stem
    if stem.isdigit() and Path(frame.source_id).suffix:
        return int(stem)
    return int(frame.index)


class _StreamedJson:
    """A JSON list streamed to a temporary file item by item (memory stays flat whatever the run's
    length) after `head`; finish() adds `tail` and closes it. Every write is checked and reported
    as an OutputError naming `path`, the output it is for."""

    def __init__(self, path: Path, temporary: Path, head: str = "") -> None:
        self.path = path
        self.temporary = temporary
        self.count = 0
        try:
            self._file = open(temporary, "w", encoding="utf-8")  # noqa: SIM115 - closed in finish()
        except OSError as error:
            raise output_error(path, error) from None
        self._write(head)

    @property
    def closed(self) -> bool:
        return self._file.closed

    def _write(self, text: str) -> None:
        try:
            self._file.write(text)
        except OSError as error:
            raise output_error(self.path, error) from None

    def append(self, item: object) -> None:
        self._write(("," if self.count else "") + json.dumps(item, separators=(",", ":"), allow_nan=False))
        self.count += 1

    def finish(self, tail: str = "") -> None:
        self._write(tail)
        try:
            self._file.close()
        except OSError as error:
            raise output_error(self.path, error) from None

    def discard(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass
        self.temporary.unlink(missing_ok=True)


class CocoResultsSink:
    """COCO keypoint results JSON: [{image_id, category_id: 1, keypoints [x,y,score]*K, score}].

    The list pycocotools' `COCO.loadRes` takes; streamed to a partial file, renamed at close.
    """

    def __init__(self, path: str | Path, schema: KeypointSchema = COCO17, settings: dict | None = None) -> None:
        self.path = check_output_path(path, "COCO export")
        self._results = _StreamedJson(self.path, partial_path(self.path), head="[")
        self.failed = False

    def write(self, result: FrameResult) -> None:
        if self.failed:
            return
        image_id = image_id_for(result.frame)
        try:
            for tracked in result.tracked:
                self._results.append({
                    "image_id": image_id,
                    "category_id": 1,
                    "keypoints": _flat_keypoints(tracked.pose.keypoints),
                    "score": _unit(tracked.pose.score),
                })
        except OutputError:
            self.failed = True
            raise

    def close(self) -> None:
        if self._results.closed:
            return
        if self.failed:
            self._results.discard()
            return
        try:
            self._results.finish("]")
            os.replace(self._results.temporary, self.path)
        except OSError as error:
            self._results.discard()
            raise output_error(self.path, error) from None
        except OutputError:
            self._results.discard()
            raise


class PoseTrackSink:
    """PoseTrack18-style JSON: images (one per frame), annotations with track_id, categories.

    Keypoints are our COCO-17 set in the COCO layout PoseTrack18 uses (x, y, score triples plus
    a per-joint "scores" list); people without a confirmed track get track_id -1. Images and
    annotations are streamed to two partial files; close() joins them into the document, with the
    run's `settings` under "settings" when given.
    """

    def __init__(self, path: str | Path, schema: KeypointSchema = COCO17, settings: dict | None = None) -> None:
        self.path = check_output_path(path, "PoseTrack export")
        self.schema = schema
        self.settings = settings
        self.partial = partial_path(self.path)
        self._images = _StreamedJson(self.path, self.partial.with_name(self.partial.name + ".images"))
        try:
            self._annotations = _StreamedJson(self.path, self.partial.with_name(self.partial.name + ".annotations"))
        except OutputError:
            self._images.discard()
            raise
        self.failed = False

    def write(self, result: FrameResult) -> None:
        if self.failed:
            return
        frame = result.frame
        height, width = frame.image.shape[:2]
        image_id = int(frame.index)
        try:
            self._images.append({
                "id": image_id, "frame_id": image_id, "file_name": _frame_name(frame),
                "width": int(width), "height": int(height), "timestamp": _number(frame.timestamp, 6),
            })
            for tracked in result.tracked:
                pose = tracked.pose
                self._annotations.append({
                    "id": self._annotations.count,
                    "image_id": image_id,
                    "category_id": 1,
                    "track_id": -1 if tracked.track_id is None else int(tracked.track_id),
                    "keypoints": _flat_keypoints(pose.keypoints),
                    "scores": [_unit(s) for s in np.asarray(pose.keypoints)[:, 2]],
                    "score": _unit(pose.score),
                    "bbox": _xywh(pose.box),
                })
        except OutputError:
            self.failed = True
            raise

    def close(self) -> None:
        parts = (self._images, self._annotations)
        if all(part.closed for part in parts):
            return
        try:
            if self.failed:
                return
            categories = [{
                "id": 1, "name": "person", "supercategory": "person",
                "keypoints": list(self.schema.keypoint_names),
                "skeleton": [[a + 1, b + 1] for a, b in self.schema.skeleton],  # 1-based, as in COCO files
            }]
            for part in parts:
                part.finish()
            with open(self.partial, "w", encoding="utf-8") as document:
                document.write('{"images":[')
                _copy_into(self._images.temporary, document)
                document.write('],"annotations":[')
                _copy_into(self._annotations.temporary, document)
                document.write('],"categories":' + json.dumps(categories))
                if self.settings is not None:
                    document.write(',"settings":' + json.dumps(self.settings, allow_nan=False))
                document.write("}")
            os.replace(self.partial, self.path)
        except OSError as error:
            self.partial.unlink(missing_ok=True)
            raise output_error(self.path, error) from None
        finally:
            for part in parts:
                part.discard()


def _copy_into(path: Path, target) -> None:
    with open(path, encoding="utf-8") as source:
        shutil.copyfileobj(source, target)


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
        flat.extend([_number(chosen[:, 0].mean()), _number(chosen[:, 1].mean()), _unit(chosen[:, 2].min())])
    return flat


class OpenPoseSink:
    """OpenPose-style JSON, one `<name>_<frame:012d>_keypoints.json` per frame, BODY_25 layout.

    Written per frame, like OpenPose's own `--write_json`, so nothing is lost on Ctrl-C; each file
    is written under a partial name and renamed, so none is ever cut short.
    """

    def __init__(self, folder: str | Path, schema: KeypointSchema = COCO17, settings: dict | None = None,
                 name: str | None = None) -> None:
        if schema.keypoint_names != COCO17.keypoint_names:
            raise UserFacingError(f"the OpenPose export maps COCO-17 joints to BODY_25; this model's keypoints are "
                                  f"'{schema.name}'")
        self.folder = Path(folder)
        if self.folder.is_dir():
            check_output_path(self.folder / "frame_keypoints.json", "OpenPose export")
        else:
            check_output_path(self.folder, "OpenPose export folder")
            self.folder.mkdir()
        # Files are named after the run: poses_openpose/poses_000000000000_keypoints.json
        self.name = name or (self.folder.name.removesuffix("_openpose") if self.folder.name.endswith("_openpose")
                             else "frame")

    def write(self, result: FrameResult) -> None:
        people = [{
            "person_id": [-1 if tracked.track_id is None else int(tracked.track_id)],
            "pose_keypoints_2d": openpose_body25(tracked.pose.keypoints),
            "face_keypoints_2d": [], "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": [],
            "pose_keypoints_3d": [], "face_keypoints_3d": [], "hand_left_keypoints_3d": [],
            "hand_right_keypoints_3d": [],
        } for tracked in result.tracked]
        path = self.folder / f"{self.name}_{result.frame.index:012d}_keypoints.json"
        document = json.dumps({"version": 1.3, "people": people}, allow_nan=False)
        write_whole_file(path, lambda temporary: Path(temporary).write_text(document, encoding="utf-8"))

    def close(self) -> None:
        pass


class MotChallengeSink:
    """MOTChallenge result rows, `frame,id,left,top,width,height,score,-1,-1,-1`, one per tracked person.

    Frames are 1-based (frame index + 1), as MOTChallenge numbers them; people without a track id are
    left out. The box is the pose's box widened to the tracker's person box (`widened_boxes`: at least
    0.4 as wide as tall), nearer a pedestrian box than the thin box around a walker's joints.
    Rows are written and flushed per frame, so nothing is lost on Ctrl-C.
    """

    def __init__(self, path: str | Path, schema: KeypointSchema = COCO17, settings: dict | None = None) -> None:
        self.path = check_output_path(path, "MOT export")
        self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, result: FrameResult) -> None:
        from tagtrack.tracker.tracker import widened_boxes

        people = [t for t in result.tracked if t.track_id is not None]
        if not people:
            return
        boxes = widened_boxes(np.array([np.asarray(t.pose.box, dtype=np.float64).reshape(4) for t in people]), 0.4)
        rows = []
        for tracked, box in zip(people, boxes):
            x, y, w, h = _xywh(box)
            rows.append(f"{result.frame.index + 1},{int(tracked.track_id)},{x},{y},{w},{h},"
                        f"{_number(tracked.pose.score, 4)},-1,-1,-1\n")
        try:
            self._file.write("".join(rows))
            self._file.flush()
        except OSError as error:
            raise output_error(self.path, error) from None

    def close(self) -> None:
        if not self._file.closed:
            try:
                self._file.close()
            except OSError as error:
                raise output_error(self.path, error) from None


@dataclass(frozen=True)
class OutputFormat:
    """One `--format`: what it is, where it writes beside the run's base name, and its sink.

    sink: the class, called as sink(path, schema, settings) (path: `path_for(base)`; settings: the
    run's, for a format that can carry them, else ignored). coco17_only: it writes
    COCO-17 joints in a fixed layout, so a model with other keypoints is refused before any output
    is opened."""

    name: str
    description: str
    suffix: str  # appended to the base name: poses -> poses.coco.json
    sink: type
    coco17_only: bool = False

    def path_for(self, base: str | Path) -> Path:
        base = Path(base)
        return base.with_name(base.name + self.suffix)


# The one table of export formats: `--format` choices, the output paths reported, the checks and the sinks.
EXPORT_FORMATS: dict[str, OutputFormat] = {
    "coco": OutputFormat("coco", "COCO keypoint results", ".coco.json", CocoResultsSink),
    "posetrack": OutputFormat("posetrack", "PoseTrack18 JSON", ".posetrack.json", PoseTrackSink),
    "openpose": OutputFormat("openpose", "OpenPose BODY_25 files", "_openpose", OpenPoseSink, coco17_only=True),
    "mot": OutputFormat("mot", "MOTChallenge tracks", ".mot.txt", MotChallengeSink),
}
# Beside the exports (whichever are asked for): the run's settings, as the JSON Lines header holds them.
SETTINGS_SUFFIX = ".settings.json"


def export_format(name: str) -> OutputFormat:
    if name not in EXPORT_FORMATS:
        raise UserFacingError(f"unknown --format {name!r} (choose from {', '.join(EXPORT_FORMATS)})")
    return EXPORT_FORMATS[name]


def export_paths(formats: list[str], base: str | Path) -> dict[str, Path]:
    """What `--format` writes: "--format NAME" -> its path, and "settings" -> the settings file beside them."""
    paths = {f"--format {name}": export_format(name).path_for(base) for name in dict.fromkeys(formats)}
    if paths:
        paths["settings"] = Path(base).with_name(Path(base).name + SETTINGS_SUFFIX)
    return paths


def check_export_schema(formats: list[str], schema: KeypointSchema) -> None:
    """Refuse a format that cannot write this model's keypoints (before anything is opened)."""
    for name in dict.fromkeys(formats):
        if export_format(name).coco17_only and schema.keypoint_names != COCO17.keypoint_names:
            raise UserFacingError(f"--format {name} writes COCO-17 joints; this model's keypoint schema is "
                                  f"'{schema.name}' ({schema.num_keypoints} keypoints)")


def write_settings_file(path: Path, settings: dict) -> None:
    document = json.dumps(settings, indent=2, allow_nan=False) + "\n"
    write_whole_file(path, lambda temporary: Path(temporary).write_text(document, encoding="utf-8"))


def export_sinks(formats: list[str], base: str | Path, schema: KeypointSchema = COCO17,
                 settings: dict | None = None) -> list:
    """The sinks for `--format` (paths: `export_paths`); with `settings`, the settings file is written
    beside them first and PoseTrack's document carries them too."""
    check_export_schema(formats, schema)
    sinks = []
    try:
        for name in dict.fromkeys(formats):
            output = export_format(name)
            sinks.append(output.sink(output.path_for(base), schema, settings))
        if sinks and settings is not None:
            write_settings_file(export_paths(formats, base)["settings"], settings)
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


class ProgressBarSink:
    """A tqdm progress bar advanced by one per written frame (files: with the total frame count)."""

    def __init__(self, total: int | None, description: str = "frames", stream=None) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=description, unit="frame", dynamic_ncols=True, file=stream)

    def write(self, result: FrameResult) -> None:
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


class ProgressLinesSink:
    """Progress for a log file or CI: one plain line at each quarter of a known frame count, no
    carriage returns (a bar redrawn ten times a second makes a log unreadable)."""

    def __init__(self, total: int | None, stream=None, steps: int = 4) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self._marks = [round(total * k / steps) for k in range(1, steps)] if total else []
        self._done = 0

    def write(self, result: FrameResult) -> None:
        self._done += 1
        if self._marks and self._done >= self._marks[0]:
            self._marks.pop(0)
            print(f"frames {self._done} of {self.total} ({100 * self._done / self.total:.0f} %)",
                  file=self.stream, flush=True)

    def close(self) -> None:
        pass


def progress_sink(total: int | None, stream=None) -> ProgressBarSink | ProgressLinesSink:
    """A bar on a terminal, a few lines otherwise."""
    stream = stream if stream is not None else sys.stderr
    is_terminal = getattr(stream, "isatty", lambda: False)()
    return ProgressBarSink(total, stream=stream) if is_terminal else ProgressLinesSink(total, stream)
