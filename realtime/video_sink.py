"""The annotated video output: `AnnotatedVideoSink`, H.264 through PyAV (fragmented MP4: a cut file plays up to
its last fragment) where PyAV can encode it, else OpenCV's mp4v. Written to a `Temporary`, read back after
closing, renamed into place with the run's other outputs (realtime/output_paths.py). No frame is skipped: a
frame whose size differs from the video's is resized, not dropped."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tagtrack.model.errors import UserFacingError
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.realtime.output_paths import FileSink, OutputError, Temporary, check_output_path, output_error
from tagtrack.realtime.pipeline import FrameResult

DEFAULT_VIDEO_FPS = 30.0
VIDEO_CODECS = ("h264", "mp4v")
# A keyframe (and so a new MP4 fragment) every this many seconds: what a kill can lose at most.
KEYFRAME_SECONDS = 1.0


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
                           draw_boxes=self.draw_boxes, draw_ids=self.draw_ids,
                           boxes=[tracked.box for tracked in result.tracked])
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

