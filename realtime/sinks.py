"""Outputs of the pipeline: annotated video, JSON Lines, COCO / PoseTrack / OpenPose / MOTChallenge exports.

Every sink takes `FrameResult`s through write() and finishes its file(s) in close(). Output
folders are checked when the sink is created (missing or read-only folder -> UserFacingError),
so a run never processes a whole video only to fail at the end.

Nothing the user had is ever lost, and no output leaves a broken file under its final name:
- every file output is written under a `Temporary` name beside the final one (`a.mp4` ->
  `a.partial-3f9c2a.mp4`): new, created exclusively, so never an input or a file the user had;
- a run's outputs are renamed into place together, only when every one of them is complete
  (`FileSink`: finish, then publish; the pipeline does both steps for all its sinks); a run that
  fails replaces nothing, keeps what is valid of its outputs under the temporary names and says so;
- JSON Lines are written one whole line at a time: a failed write is cut back to the last
  complete line; every write and close is checked, and the H.264 video is read back after closing;
  a failure raises `OutputError` naming the file, and the run exits non-zero.
The COCO and PoseTrack exports are streamed to disk, so memory stays flat however long the run.
No sink skips a frame: a frame whose size differs from the video's is resized, not dropped.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tagtrack.model.errors import UserFacingError
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.realtime.pipeline import FrameResult

try:
    import fcntl  # locks on temporaries (Unix); without it two runs onto one output are not detected
except ImportError:  # pragma: no cover - Windows
    fcntl = None

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


# The longest file name most file systems take, in bytes (a temporary's name is shortened to fit).
NAME_MAX = 255


class Temporary:
    """Where an output is written until it is complete: a new file beside `final`, `a.mp4` ->
    `a.partial-3f9c2a.mp4`, `poses.coco.json` -> `poses.coco.partial-3f9c2a.json`.

    The name is new: it is created exclusively (O_EXCL), so it is never a file the user had, an input
    of the run, or another run's temporary. It says what it is, sits in the same folder (the final
    rename is atomic) and keeps the suffix (a player opens a video that a kill left behind). `tail`
    goes before the suffix (a second temporary of one output: `.images`); `folder` makes a folder.
    publish() renames it into place, discard() removes it, keep() leaves it (a failed run's partial
    result, named to the user).

    While it is written the temporary is locked (flock, released when the process ends, however it ends),
    and a new one first looks for a locked temporary of the same output: another run writing that output
    right now. Two runs writing one output would each rename a complete file into place, but a set of
    outputs could then mix files of both; so the second run is refused (UserFacingError) before it writes
    anything. Unlocked temporaries (a killed run's) are left alone.
    """

    def __init__(self, final: Path, tail: str = "", folder: bool = False) -> None:
        self.final = Path(final)
        self.folder = folder
        self._lock: int | None = None  # the locked file descriptor while this is written
        self.path = self._create(tail)
        self.done = False  # published, discarded or kept

    def _create(self, tail: str) -> Path:
        stem, suffix = self.final.stem, self.final.suffix
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)  # a missing output folder is made
        except OSError as error:
            raise output_error(self.final, error) from None
        for _ in range(100):
            ending = f".partial-{secrets.token_hex(3)}{tail}{suffix}"
            # A long name stays within the file system's limit: shorten the stem, not the ending.
            room = NAME_MAX - len(os.fsencode(ending))
            while stem and len(os.fsencode(stem)) > room:
                stem = stem[:-1]
            path = self.final.with_name(stem + ending)
            try:
                if self.folder:
                    os.mkdir(path)
                    self._lock = os.open(path, os.O_RDONLY)
                else:
                    self._lock = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue  # someone's file (or another run's temporary) has this name: draw another
            except OSError as error:
                raise output_error(self.final, error) from None
            if fcntl is not None:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
                pattern = f"{glob.escape(stem)}.partial-{'[0-9a-f]' * 6}{glob.escape(tail + suffix)}"
                for other in self.final.parent.glob(pattern):
                    if other != path and _locked(other):
                        self._release()
                        self._remove(path)
                        raise UserFacingError(
                            f"{self.final} is being written by another run right now (its temporary {other} is in "
                            "use): wait until that run ends, or choose another output name")
            return path
        raise OutputError(f"cannot write {self.final}: no free temporary name beside it")

    def publish(self) -> None:
        """Rename into place (replacing an earlier file of that name: the output the user asked for)."""
        self.done = True
        try:
            os.replace(self.path, self.final)
        except OSError as error:
            self._remove(self.path)
            raise output_error(self.final, error) from None
        finally:
            self._release()

    def discard(self) -> None:
        self.done = True
        self._release()
        self._remove(self.path)

    def keep(self) -> Path:
        self.done = True
        self._release()
        return self.path

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = None

    def _remove(self, path: Path) -> None:
        try:
            if self.folder:
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            log.warning("could not remove the temporary %s", path)


def _locked(path: Path) -> bool:
    """Another process holds `path`'s flock (a temporary being written), as far as we may look."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(descriptor)
    return False


def check_output_path(path: str | Path, what: str = "output") -> Path:
    """Fail early, with one line, when `path` cannot be written (a read-only folder, a file where a folder
    should be, a name that is not UTF-8). A missing folder is no error: it is made when the output is
    opened (`Temporary`), as `predict --draw` always did, if the nearest folder that exists is writable."""
    from tagtrack.realtime.sources import check_name, check_not_a_loop

    check_name(path, what)
    check_not_a_loop(path, what)
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UserFacingError(f"{what} {path} is a folder, expected a file name")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserFacingError(f"{what} folder {folder} cannot be made: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserFacingError(f"{what} folder {existing} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserFacingError(f"{what} {path} exists and is not writable")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _resolved(path: str | Path, label: str) -> Path:
    """The path with symlinks and `..` resolved; a symlink loop is one error line naming it."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError on a loop, later versions OSError
        raise UserFacingError(f"{label.removeprefix('the ')} {path}: too many levels of symbolic links "
                              "(a symbolic link loop)") from None


def refuse_overwriting(inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """Refuse any output that would destroy an input or another output, before anything is opened.

    inputs: label -> a file or folder that is read (a folder's images are inputs). outputs: label ->
    a file or folder that is written. Paths are compared resolved (symlinks, `..`, relative paths),
    and by inode for hard links. An output inside an input folder is refused when it has an image
    suffix (the run would read it back, or overwrite one of the images). The bundled models are
    inputs of every command: no command ever writes over one.
    """
    from tagtrack.model.checkpoint import BUNDLED_WEIGHTS
    from tagtrack.realtime.sources import IMAGE_SUFFIXES

    bundled = {}
    for name, path in BUNDLED_WEIGHTS.items():
        bundled.setdefault(Path(path), f"the bundled model {name!r}")  # "default" before its alias "general"
    inputs = {**{label: path for path, label in bundled.items()}, **inputs}
    resolved_outputs = {label: _resolved(path, label) for label, path in outputs.items()}
    for in_label, in_path in inputs.items():
        source = _resolved(in_path, in_label)
        for out_label, target in resolved_outputs.items():
            if target == source or _same_file(target, source):
                what = in_label if in_label.startswith("the ") else f"the input {in_label}"
                raise UserFacingError(f"{out_label} {outputs[out_label]} is {what}; "
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
    full disk or a kill never leaves a cut file under the final name (see `Temporary`)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    temporary = Temporary(path)
    try:
        write(temporary.path)
    except OSError as error:
        temporary.discard()
        raise output_error(path, error) from None
    except BaseException:
        temporary.discard()
        raise
    temporary.publish()


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


class FileSink:
    """What every file output shares: written under `Temporary` names, then, in two steps so that a run
    replaces its earlier results only when all of them are complete:

    - finish(): complete the file(s) under the temporary names (flush, close, check); raises OutputError;
    - publish(): rename them into place (the run succeeded, or was stopped by the user);
    - abandon(): the run failed: leave every earlier file of the final names as it was, keep what is valid
      of this run under its temporary name (returned, so the user is told) and remove the rest;
    - discard(): remove the temporaries (the run failed before it processed anything).

    close() is finish() then publish() (abandon() when this output itself failed), for a caller that
    holds one sink; the pipeline calls the steps itself for all its sinks (pipeline.close_outputs)."""

    failed: bool = False

    def finish(self) -> None:
        raise NotImplementedError

    def publish(self) -> None:
        raise NotImplementedError

    def abandon(self) -> list[Path]:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        try:
            self.finish()
        except BaseException:
            self.abandon()
            raise
        if self.failed:  # a write failed (reported then): its output must not replace an earlier file
            self.abandon()
        else:
            self.publish()


class _StreamedFileSink(FileSink):
    """A FileSink writing one file (`self._file`) to a `Temporary` (`self._temporary`) as it goes: closing,
    renaming and the abandon rule are the same for every such output; `_worth_keeping()` says whether what
    was written is valid to keep under the temporary name when the run fails."""

    path: Path
    _file: object
    _temporary: "Temporary"

    def _worth_keeping(self) -> bool:
        raise NotImplementedError

    def finish(self) -> None:
        if self._file.closed:
            return
        try:
            self._file.close()
        except OSError as error:
            self.failed = True
            raise output_error(self.path, error) from None

    def publish(self) -> None:
        if not self._temporary.done:
            self._temporary.publish()

    def abandon(self) -> list[Path]:
        self._close_quietly()
        if self._temporary.done:
            return []
        if self._worth_keeping():
            return [self._temporary.keep()]
        self._temporary.discard()
        return []

    def discard(self) -> None:
        self._close_quietly()
        if not self._temporary.done:
            self._temporary.discard()

    def _close_quietly(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass


class JsonLinesSink(_StreamedFileSink):
    """One JSON object per frame, one line each, on disk as soon as the frame is done; with `settings`,
    a header line first (`header_record`).

    Written to a `Temporary` (a run killed mid-way keeps every finished line there) and renamed into place
    when the run ends. A write that fails part-way (disk full) is cut back to the last complete line before
    the error is raised.
    """

    def __init__(self, path: str | Path, schema: KeypointSchema = COCO17, settings: dict | None = None) -> None:
        self.path = check_output_path(path, "JSON output")
        self.schema = schema
        self._temporary = Temporary(self.path)
        self.partial = self._temporary.path
        try:
            self._file = open(self.partial, "wb", buffering=0)  # noqa: SIM115 - closed in finish()
        except OSError as error:
            self._temporary.discard()
            raise output_error(self.path, error) from None
        self._complete_bytes = 0  # size of the file up to the last whole line
        self.frames_written = 0
        self.failed = False
        if settings is not None:
            try:
                self._write_line(_json_line(header_record(settings)))
            except OutputError:
                self.discard()
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
            kept = (f"its first {self.frames_written} frames are kept in {self.partial}" if self.frames_written
                    else "no frame had been written")
            raise output_error(self.path, error, kept) from None
        self._complete_bytes += len(line.encode("utf-8"))

    def _cut_back(self) -> None:
        try:
            os.ftruncate(self._file.fileno(), self._complete_bytes)
        except OSError:
            log.warning("could not cut %s back to its last complete line", self.partial)

    def _worth_keeping(self) -> bool:
        return self.frames_written > 0  # whole lines only (cut back on a failed write)


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


class AnnotatedVideoSink(FileSink):
    """The input frames with skeletons, track IDs (stable colours) and optional boxes, as mp4.

    Written at the input's size and frame rate, H.264 through PyAV (fragmented MP4) by default where
    PyAV is installed, else OpenCV's `mp4v`. The file is a `Temporary` (`a.partial-3f9c2a.mp4`) until
    close() renames it. The writer opens at the first frame, when the size is known.
    """

    def __init__(self, path: str | Path, fps: float | None, schema: KeypointSchema = COCO17,
                 draw_boxes: bool = False, draw_ids: bool = True, codec: str | None = None) -> None:
        self.path = check_output_path(path, "video output")
        self.fps = fps if fps and fps > 0 else DEFAULT_VIDEO_FPS
        self.codec = codec or default_video_codec()
        if self.codec not in VIDEO_CODECS:
            raise UserFacingError(f"unknown video codec {self.codec!r} (choose from {', '.join(VIDEO_CODECS)})")
        if self.codec == "h264" and h264_encoder() is None:
            raise UserFacingError("--codec h264 needs PyAV with an H.264 encoder (pip install av); or --codec mp4v")
        self._temporary = Temporary(self.path)
        self.partial = self._temporary.path
        self.schema = schema
        self.draw_boxes = draw_boxes
        self.draw_ids = draw_ids
        self._writer: _PyAvH264Writer | _OpenCvMp4vWriter | None = None
        self._size: tuple[int, int] | None = None  # (width, height) of the written frames
        self.frames_written = 0
        self.failed = False
        self._closed_writer = False  # a writer was opened (a first frame came) and closed
        self._complete = False  # closed and checked: holds every frame written

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
        # Only a fragmented MP4 plays when cut; name the file only when there is one to play.
        if self.codec == "h264" and self.frames_written and self.partial.exists():
            return f"the frames written so far play from {self.partial}"
        return ""

    def finish(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        self._closed_writer = True
        try:
            writer.close()
            if not self.failed:
                writer.verify(self.partial, self.frames_written)
        except Exception as error:  # noqa: BLE001 - disk full at close: the file is not complete
            self.failed = True
            raise output_error(self.path, error, self._kept_note()) from None
        self._complete = not self.failed

    def publish(self) -> None:
        if self._temporary.done:
            return
        if not self._closed_writer:  # no frame came: no video (and no empty file) to leave
            self._temporary.discard()
            return
        self._temporary.publish()

    def abandon(self) -> list[Path]:
        if self._writer is not None:  # the run failed elsewhere: close the video so that it plays
            try:
                self.finish()
            except OutputError:
                pass
        if self._temporary.done:
            return []
        # A complete file plays, and so do the finished fragments of a cut H.264 file; a cut mp4v file
        # has no index and plays nowhere.
        if self.frames_written and (self._complete or self.codec == "h264"):
            return [self._temporary.keep()]
        self._temporary.discard()
        return []

    def discard(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - being removed anyway
                pass
        if not self._temporary.done:
            self._temporary.discard()


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
    """A JSON list streamed to a `Temporary` item by item (memory stays flat whatever the run's length)
    after `head`; finish() adds `tail` and closes it. Every write is checked and reported as an
    OutputError naming `path`, the output it is for."""

    def __init__(self, path: Path, temporary: Temporary, head: str = "") -> None:
        self.path = path
        self.temporary = temporary
        self.count = 0
        try:
            self._file = open(temporary.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in finish()
        except OSError as error:
            temporary.discard()
            raise output_error(path, error) from None
        try:
            self._write(head)
        except OutputError:
            self.discard()
            raise

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
        if not self.temporary.done:
            self.temporary.discard()


class CocoResultsSink(FileSink):
    """COCO keypoint results JSON: [{image_id, category_id: 1, keypoints [x,y,score]*K, score}].

    The list pycocotools' `COCO.loadRes` takes; streamed to a `Temporary`, renamed at close.
    """

    def __init__(self, path: str | Path, schema: KeypointSchema = COCO17, settings: dict | None = None) -> None:
        self.path = check_output_path(path, "COCO export")
        self._results = _StreamedJson(self.path, Temporary(self.path), head="[")
        self.partial = self._results.temporary.path
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

    def finish(self) -> None:
        if self._results.closed or self.failed:
            return
        try:
            self._results.finish("]")
        except OutputError:
            self.failed = True
            raise

    def publish(self) -> None:
        if not self._results.temporary.done:
            self._results.temporary.publish()

    def abandon(self) -> list[Path]:
        if not self.failed:  # the run failed elsewhere: close the list, so that what it holds is valid JSON
            try:
                self.finish()
            except OutputError:
                pass
        if self.failed or self._results.temporary.done:
            self.discard()
            return []
        return [self._results.temporary.keep()]

    def discard(self) -> None:
        self._results.discard()


class PoseTrackSink(FileSink):
    """PoseTrack18-style JSON: images (one per frame), annotations with track_id, categories.

    Keypoints are our COCO-17 set in the COCO layout PoseTrack18 uses (x, y, score triples plus
    a per-joint "scores" list); people without a confirmed track get track_id -1. Images and
    annotations are streamed to two temporaries; finish() joins them into the document (a third
    temporary, renamed into place by publish()), with the run's `settings` under "settings" when given.
    """

    def __init__(self, path: str | Path, schema: KeypointSchema = COCO17, settings: dict | None = None) -> None:
        self.path = check_output_path(path, "PoseTrack export")
        self.schema = schema
        self.settings = settings
        self._document = Temporary(self.path)
        self.partial = self._document.path
        self._images = self._annotations = None
        try:
            self._images = _StreamedJson(self.path, Temporary(self.path, ".images"))
            self._annotations = _StreamedJson(self.path, Temporary(self.path, ".annotations"))
        except OutputError:
            self.discard()
            raise
        self.failed = False
        self._finished = False

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

    def finish(self) -> None:
        if self._finished or self.failed:
            return
        parts = (self._images, self._annotations)
        try:
            categories = [{
                "id": 1, "name": "person", "supercategory": "person",
                "keypoints": list(self.schema.keypoint_names),
                "skeleton": [[a + 1, b + 1] for a, b in self.schema.skeleton],  # 1-based, as in COCO files
            }]
            for part in parts:
                part.finish()
            with open(self._document.path, "w", encoding="utf-8") as document:
                document.write('{"images":[')
                _copy_into(self._images.temporary.path, document)
                document.write('],"annotations":[')
                _copy_into(self._annotations.temporary.path, document)
                document.write('],"categories":' + json.dumps(categories))
                if self.settings is not None:
                    document.write(',"settings":' + json.dumps(self.settings, allow_nan=False))
                document.write("}")
            self._finished = True
        except OSError as error:
            self.failed = True
            raise output_error(self.path, error) from None
        except OutputError:
            self.failed = True
            raise
        finally:
            for part in parts:
                part.discard()

    def publish(self) -> None:
        if not self._document.done:
            self._document.publish()

    def abandon(self) -> list[Path]:
        if not self.failed:  # the run failed elsewhere: what was written is still a valid document
            try:
                self.finish()
            except OutputError:
                pass
        if self.failed or not self._finished or self._document.done:
            self.discard()
            return []
        return [self._document.keep()]

    def discard(self) -> None:
        for part in (self._images, self._annotations):
            if part is not None:
                part.discard()
        if not self._document.done:
            self._document.discard()


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


def check_openpose_folder(folder: Path) -> None:
    """The OpenPose export is a folder: a file of that name is refused before anything is opened."""
    if folder.exists() and not folder.is_dir():
        raise UserFacingError(f"OpenPose export folder {folder} exists and is not a folder: move it or choose "
                              "another --json name")
    check_output_path(folder / "frame_keypoints.json" if folder.is_dir() else folder, "OpenPose export folder")


class OpenPoseSink(FileSink):
    """OpenPose-style JSON, one `<name>_<frame:012d>_keypoints.json` per frame, BODY_25 layout.

    Written per frame, like OpenPose's own `--write_json`, into a temporary folder beside the export's
    (`poses_openpose.partial-3f9c2a`); publish() moves the files into the export's folder (made if missing;
    other files in it stay), so a failed run leaves an earlier export as it was.
    """

    def __init__(self, folder: str | Path, schema: KeypointSchema = COCO17, settings: dict | None = None,
                 name: str | None = None) -> None:
        if schema.keypoint_names != COCO17.keypoint_names:
            raise UserFacingError(f"the OpenPose export maps COCO-17 joints to BODY_25; this model's keypoints are "
                                  f"'{schema.name}'")
        self.folder = Path(folder)
        check_openpose_folder(self.folder)
        # Files are named after the run: poses_openpose/poses_000000000000_keypoints.json
        self.name = name or (self.folder.name.removesuffix("_openpose") if self.folder.name.endswith("_openpose")
                             else "frame")
        self._temporary = Temporary(self.folder, folder=True)
        self.partial = self._temporary.path
        self.frames_written = 0
        self.failed = False

    def write(self, result: FrameResult) -> None:
        if self.failed:
            return
        people = [{
            "person_id": [-1 if tracked.track_id is None else int(tracked.track_id)],
            "pose_keypoints_2d": openpose_body25(tracked.pose.keypoints),
            "face_keypoints_2d": [], "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": [],
            "pose_keypoints_3d": [], "face_keypoints_3d": [], "hand_left_keypoints_3d": [],
            "hand_right_keypoints_3d": [],
        } for tracked in result.tracked]
        path = self.partial / f"{self.name}_{result.frame.index:012d}_keypoints.json"
        document = json.dumps({"version": 1.3, "people": people}, allow_nan=False)
        try:
            path.write_text(document, encoding="utf-8")
        except OSError as error:
            self.failed = True
            path.unlink(missing_ok=True)  # never a cut file, even in the temporary folder
            raise output_error(self.folder, error) from None
        self.frames_written += 1

    def finish(self) -> None:
        pass  # every file was closed as it was written

    def publish(self) -> None:
        if self._temporary.done:
            return
        try:
            self.folder.mkdir(exist_ok=True)
            for path in sorted(self.partial.iterdir()):
                os.replace(path, self.folder / path.name)
        except OSError as error:
            self._temporary.keep()  # the files not moved yet stay where they are
            raise output_error(self.folder, error, f"files not moved are in {self.partial}") from None
        self._temporary.discard()

    def abandon(self) -> list[Path]:
        if self._temporary.done:
            return []
        if self.frames_written:
            return [self._temporary.keep()]
        self._temporary.discard()
        return []

    def discard(self) -> None:
        if not self._temporary.done:
            self._temporary.discard()


class MotChallengeSink(_StreamedFileSink):
    """MOTChallenge result rows, `frame,id,left,top,width,height,score,-1,-1,-1`, one per tracked person.

    Frames are 1-based (frame index + 1), as MOTChallenge numbers them; people without a track id are
    left out. The box is the pose's box: the whole body estimated from the joints (`model.body_box`).
    Rows are written and flushed per frame to a `Temporary`, renamed into place at the end.
    """

    def __init__(self, path: str | Path, schema: KeypointSchema = COCO17, settings: dict | None = None) -> None:
        self.path = check_output_path(path, "MOT export")
        self._temporary = Temporary(self.path)
        self.partial = self._temporary.path
        try:
            self._file = open(self.partial, "w", encoding="utf-8")  # noqa: SIM115 - closed in finish()
        except OSError as error:
            self._temporary.discard()
            raise output_error(self.path, error) from None
        self.failed = False
        self.rows_written = 0

    def write(self, result: FrameResult) -> None:
        if self.failed:
            return
        people = [t for t in result.tracked if t.track_id is not None]
        if not people:
            return
        rows = []
        for tracked in people:
            x, y, w, h = _xywh(tracked.pose.box)
            rows.append(f"{result.frame.index + 1},{int(tracked.track_id)},{x},{y},{w},{h},"
                        f"{_number(tracked.pose.score, 4)},-1,-1,-1\n")
        try:
            self._file.write("".join(rows))
            self._file.flush()
        except OSError as error:
            self.failed = True
            raise output_error(self.path, error) from None
        self.rows_written += len(rows)

    def _worth_keeping(self) -> bool:
        return self.rows_written > 0 and not self.failed


class SettingsFileSink(FileSink):
    """`<base>.settings.json` beside the exports: the run's settings, written whole when the run starts (to a
    `Temporary`: whatever a failed run keeps says how it was made) and renamed into place with the exports.
    The file is what `--config` reads back."""

    def __init__(self, path: Path, settings: dict) -> None:
        self.path = check_output_path(path, "settings file")
        self._temporary = Temporary(self.path)
        self.partial = self._temporary.path
        self.failed = False
        try:
            self.partial.write_text(json.dumps(settings, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        except OSError as error:
            self._temporary.discard()
            raise output_error(self.path, error) from None

    def write(self, result: FrameResult) -> None:
        pass

    def finish(self) -> None:
        pass

    def publish(self) -> None:
        if not self._temporary.done:
            self._temporary.publish()

    def abandon(self) -> list[Path]:
        return [] if self._temporary.done else [self._temporary.keep()]

    def discard(self) -> None:
        if not self._temporary.done:
            self._temporary.discard()


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


def discard_outputs(sinks) -> None:
    """Remove what `sinks` wrote so far (a run that failed before it processed a frame); a sink without
    temporaries is closed."""
    for sink in sinks:
        try:
            discard = getattr(sink, "discard", None)
            discard() if discard is not None else sink.close()
        except Exception:  # noqa: BLE001 - the error being raised is the one to report
            log.debug("discarding %r failed", sink, exc_info=True)


def export_sinks(formats: list[str], base: str | Path, schema: KeypointSchema = COCO17,
                 settings: dict | None = None) -> list:
    """The sinks for `--format` (paths: `export_paths`); with `settings`, the settings file is written
    beside them (SettingsFileSink) and PoseTrack's document carries them too."""
    check_export_schema(formats, schema)
    sinks = []
    try:
        for name in dict.fromkeys(formats):
            output = export_format(name)
            sinks.append(output.sink(output.path_for(base), schema, settings))
        if sinks and settings is not None:
            sinks.append(SettingsFileSink(export_paths(formats, base)["settings"], settings))
    except BaseException:
        discard_outputs(sinks)
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
