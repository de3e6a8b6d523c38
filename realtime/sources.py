"""Where frames come from: camera index, video file, image folder or glob, RTSP/HTTP stream.

Every source hands out `Frame`s one at a time through `read()` (None at the end of input).
Files and folders are *lossless*: `read()` returns every frame in order and the pipeline applies
back-pressure (an image in a folder that cannot be decoded is skipped with a warning and listed in
`skipped`, or stops the run when `strict`; a video that ends well before its declared frame count is
reported with a warning). Cameras and streams are *live*: the pipeline keeps only the freshest frame and
counts what it drops (see `realtime/pipeline.py`); a live source that stops delivering frames is
reopened a few times (logged as warnings) before it gives up with a `UserFacingError`.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

import cv2
import numpy as np

from tagtrack.model.errors import UserFacingError
from tagtrack.model.files import read_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp")
# Image folders have no frame rate of their own; timestamps (which the tracker's motion model uses)
# count frames at this nominal rate.
FOLDER_FPS = 30.0
# A video that ends before this fraction of its declared frame count is reported as cut short.
TRUNCATION_RATIO = 0.95
# A stream that sends nothing for this many seconds is given up (reopened, then ended): OpenCV's own
# default for its FFmpeg reader, stated here so that messages can name it; `--stream-timeout` sets it.
DEFAULT_STREAM_TIMEOUT = 30.0
# OpenCV takes a camera index as a C int (an index can also name a backend: 200 + N is V4L2's camera N).
MAX_CAMERA_INDEX = 2**31 - 1


@dataclass
class Frame:
    """One image from a source.

    image: BGR uint8 [H, W, 3]. index: 0-based frame number in the source (for a live source it
    counts every frame captured, so gaps are dropped frames). timestamp: seconds of source time
    (file: index / fps; camera: capture clock since the source opened). source_id: the video
    path, the image's own path for a folder, "camera:N" or the URL.
    """

    image: np.ndarray
    index: int
    timestamp: float
    source_id: str


class Source(Protocol):
    is_live: bool
    fps: float | None
    frame_hw: tuple[int, int] | None  # the frames' height and width when known before reading (else None)

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


@contextmanager
def _quiet_opencv():
    """OpenCV logs its own warnings on stderr when an open fails; we raise one clear error instead.
    (FFmpeg's messages are quieted by OPENCV_FFMPEG_LOGLEVEL, which the CLI sets.)"""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


class VideoFileSource:
    """A video file read with OpenCV, every frame in order."""

    is_live = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise UserFacingError(f"no such file: {self.path}")
        if not self.path.is_file():
            raise UserFacingError(f"not a file: {self.path}")
        if not os.access(self.path, os.R_OK):
            raise UserFacingError(f"cannot read {self.path}: permission denied")
        with _quiet_opencv():
            self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            raise UserFacingError(f"{self.path} is not a video OpenCV can read")
        fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps: float | None = fps if fps > 0 and np.isfinite(fps) else None
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count: int | None = count if count > 0 else None
        # Read the first frame now so that an empty or undecodable video fails here, with a clear
        # message, rather than as a silent zero-frame run.
        ok, first = self._capture.read()
        if not ok or first is None:
            self._capture.release()
            raise UserFacingError(f"{self.path} has no frames that can be decoded")
        self._pending: np.ndarray | None = first
        self.frame_hw: tuple[int, int] | None = (int(first.shape[0]), int(first.shape[1]))
        self._index = 0
        self.ended_early = False

    def read(self) -> Frame | None:
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            ok, image = self._capture.read()
            if not ok or image is None:
                self._check_complete()
                return None
        index = self._index
        self._index += 1
        timestamp = index / (self.fps or FOLDER_FPS)
        return Frame(image=image, index=index, timestamp=timestamp, source_id=str(self.path))

    def _check_complete(self) -> None:
        """Warn when the file ends well before the frame count its header declares (a cut or damaged
        file); containers estimate that count, so a few frames short is normal."""
        declared = self.frame_count
        if declared is None or self.ended_early or self._index >= declared * TRUNCATION_RATIO:
            return
        self.ended_early = True
        log.warning("%s ended at frame %d of the %d its header declares: the file may be cut short or damaged",
                    self.path, self._index, declared)

    def close(self) -> None:
        self._capture.release()


class ImageFolderSource:
    """Images of a folder (or the matches of a glob), sorted by file name, every one in order."""

    is_live = False

    def __init__(self, paths: list[Path], description: str, fps: float = FOLDER_FPS, strict: bool = False) -> None:
        if not paths:
            raise UserFacingError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {description}")
        self.paths = paths
        self.fps: float | None = fps
        self.frame_count: int | None = len(paths)
        self.strict = strict
        self.skipped: list[Path] = []  # unreadable images passed over (not strict)
        self.frame_hw: tuple[int, int] | None = None  # images may differ in size: the model's own input
        self._position = 0  # next path to try
        self._index = 0  # frame index of the next image read

    @classmethod
    def from_folder(cls, folder: str | Path, strict: bool = False) -> "ImageFolderSource":
        folder = Path(folder)
        try:
            entries = sorted(folder.iterdir())
        except PermissionError:
            raise UserFacingError(f"cannot read folder {folder}: permission denied") from None
        except OSError as error:
            raise UserFacingError(f"cannot read folder {folder}: {error.strerror or error}") from None
        paths = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        return cls(paths, f"folder {folder}", strict=strict)

    @classmethod
    def from_glob(cls, pattern: str, strict: bool = False) -> "ImageFolderSource":
        return cls(_glob_images(pattern), f"glob {pattern!r}", strict=strict)

    def read(self) -> Frame | None:
        while self._position < len(self.paths):
            path = self.paths[self._position]
            self._position += 1
            try:
                image = read_image(path)
            except UserFacingError:
                image = None  # skipped and counted below, or --strict stops
            if image is not None:
                index = self._index
                self._index += 1
                return Frame(image=image, index=index, timestamp=index / (self.fps or FOLDER_FPS), source_id=str(path))
            if self.strict:
                raise UserFacingError(f"cannot read image {path} (--strict stops at the first unreadable image)")
            # Like a photo viewer: one bad file does not end the folder; it is named and counted.
            log.warning("skipping %s: not an image OpenCV can read", path)
            self.skipped.append(path)
        return None

    def close(self) -> None:
        pass


class LiveSource:
    """A camera or a network stream. read() blocks for the next frame from the device.

    When the device stops delivering, it is released and reopened up to `retries` times,
    `retry_delay` seconds apart, each attempt logged; then read() raises UserFacingError.
    The freshest-frame policy itself lives in the pipeline's capture thread.
    timeout: a stream (a URL) that sends nothing for this many seconds, when opening or reading, counts
    as stopped (OpenCV's FFmpeg reader's open and read timeouts); the messages name it.
    """

    is_live = True

    def __init__(self, target: int | str, source_id: str, retries: int = 5, retry_delay: float = 1.0,
                 timeout: float = DEFAULT_STREAM_TIMEOUT) -> None:
        self.target = target
        self.source_id = source_id
        self.retries = retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.frame_count: int | None = None
        started = time.monotonic()
        self._capture = self._open()
        if self._capture is None:
            raise UserFacingError(self._open_failure_message(time.monotonic() - started))
        fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps: float | None = fps if 0 < fps < 1000 else None
        width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        self.frame_hw: tuple[int, int] | None = (height, width) if width > 0 and height > 0 else None
        self._index = 0
        self._clock_start = time.monotonic()

    @property
    def is_stream(self) -> bool:
        return isinstance(self.target, str)

    def _open(self) -> cv2.VideoCapture | None:
        milliseconds = int(self.timeout * 1000)
        with _quiet_opencv():
            try:
                if self.is_stream:
                    capture = cv2.VideoCapture(self.target, cv2.CAP_ANY, [
                        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, milliseconds, cv2.CAP_PROP_READ_TIMEOUT_MSEC, milliseconds])
                else:
                    capture = cv2.VideoCapture(self.target)
            except cv2.error:  # a target OpenCV refuses outright: as a device that does not open
                log.debug("OpenCV refused to open %s", self.source_id, exc_info=True)
                return None
        if capture.isOpened():
            return capture
        capture.release()
        return None

    def _open_failure_message(self, waited: float) -> str:
        if isinstance(self.target, int):
            return f"no camera at index {self.target}"
        if waited >= 0.9 * self.timeout:  # it waited for data until the timeout: say so
            return (f"cannot open stream {self.target}: nothing came within the stream timeout, {self.timeout:g} s "
                    "(--stream-timeout SECONDS)")
        return f"cannot open stream {self.target}"

    def _silence(self) -> str:
        """Why the frames stopped, for a stream with the timeout that ended the wait and its option. (The wait
        itself cannot be timed here: FFmpeg may spend it inside a read that still returns a buffered frame.)"""
        if self.is_stream:
            return f"nothing came within the stream timeout, {self.timeout:g} s (--stream-timeout SECONDS)"
        return "no frame"

    def read(self) -> Frame | None:
        ok, image = (False, None) if self._capture is None else self._capture.read()
        attempt = 0
        while not ok or image is None:
            attempt += 1
            if attempt > self.retries:
                raise UserFacingError(f"{self.source_id} stopped delivering frames; gave up after {self.retries} "
                                      f"retries ({self._silence()})")
            log.warning("%s: %s; reconnecting (attempt %d of %d)", self.source_id, self._silence(), attempt,
                        self.retries)
            if self._capture is not None:
                self._capture.release()
            time.sleep(self.retry_delay)
            self._capture = self._open()
            if self._capture is not None:
                ok, image = self._capture.read()
        index = self._index
        self._index += 1
        return Frame(image=image, index=index, timestamp=time.monotonic() - self._clock_start, source_id=self.source_id)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()


class PacedSource:
    """A file or folder source read at its own frame rate (as a player shows it), not as fast as it decodes.

    `paced` may be switched off and on while reading (the viewer's "Fast" toggle). Falling behind (slow
    inference, a pause) restarts the clock at the late frame instead of rushing to catch up."""

    MAX_LAG = 0.25  # seconds behind the file's clock after which the clock restarts

    def __init__(self, source: Source, clock=time.monotonic, sleep=time.sleep) -> None:
        self.source = source
        self.paced = True
        self._clock, self._sleep = clock, sleep
        self._start: float | None = None  # clock time of source time 0

    @property
    def is_live(self) -> bool:
        return self.source.is_live

    @property
    def fps(self) -> float | None:
        return self.source.fps

    @property
    def frame_hw(self) -> tuple[int, int] | None:
        return self.source.frame_hw

    def read(self) -> Frame | None:
        frame = self.source.read()
        if frame is None or not self.paced or not self.source.fps:
            self._start = None  # pacing (re)starts from the next frame shown
            return frame
        now = self._clock()
        if self._start is None or now - (self._start + frame.timestamp) > self.MAX_LAG:
            self._start = now - frame.timestamp
        wait = self._start + frame.timestamp - now
        if wait > 0:
            self._sleep(wait)
        return frame

    def close(self) -> None:
        self.source.close()


def printable_name(path: str | Path) -> str:
    """A file name as it can be printed: bytes that are not UTF-8 shown as \\xff."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_name(path: str | Path, what: str) -> None:
    """Refuse a file name that is not UTF-8 (Python keeps such bytes as lone surrogates): OpenCV takes names
    as UTF-8 and its VideoCapture crashes the whole process (a segfault) on one; nor can the name be printed."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        raise UserFacingError(f"{what} {printable_name(path)}: the name is not valid UTF-8 (OpenCV cannot open it); "
                              "rename the file") from None


def check_not_a_loop(path: str | Path, what: str) -> None:
    """Refuse a symlink loop by name (Python's path resolving raises a RuntimeError on one)."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UserFacingError(f"{what} {printable_name(path)}: too many levels of symbolic links "
                                  "(a symbolic link loop)") from None


def _has_glob_magic(spec: str) -> bool:
    return any(char in spec for char in "*?[")


def _glob_images(pattern: str) -> list[Path]:
    return [Path(p) for p in sorted(glob.glob(pattern)) if Path(p).suffix.lower() in IMAGE_SUFFIXES]


def input_paths(spec: str) -> list[Path]:
    """The files or folder a source spec reads (none for a camera or a stream), to keep outputs off them."""
    spec = spec.strip()
    if not spec or spec.lstrip("+-").isdigit() or "://" in spec:
        return []
    check_not_a_loop(spec, "SOURCE")
    path = Path(spec)
    if not path.exists() and _has_glob_magic(spec):
        return _glob_images(spec)
    return [path]


def open_source(spec: str, strict: bool = False, stream_timeout: float | None = None) -> Source:
    """Open a source from its command-line spelling.

    "0", "1", ...: camera index. rtsp://, http(s)://, ...: stream. A folder: its images. A glob
    ("frames/*.png"): the matching images. An image file: a one-frame folder. Anything else: a
    video file. Raises UserFacingError on bad input. strict: an unreadable image in a folder
    stops the run (default: skipped with a warning and counted in `skipped`). stream_timeout: seconds a
    stream may send nothing (None: DEFAULT_STREAM_TIMEOUT).
    """
    spec = spec.strip()
    if not spec:
        raise UserFacingError("empty source: give a camera index, a video file, an image folder or a URL")
    check_name(spec, "SOURCE")
    if spec.lstrip("+-").isdigit():
        index = int(spec)
        # cv2.VideoCapture(-1) takes down the whole process on some backends, and an index beyond a C int
        # raises cv2.error: refuse both here.
        if not 0 <= index <= MAX_CAMERA_INDEX:
            raise UserFacingError(f"camera index must be 0 or more and at most {MAX_CAMERA_INDEX}, got {index}")
        return LiveSource(index, f"camera:{index}")
    if "://" in spec:
        return _open_url(spec, DEFAULT_STREAM_TIMEOUT if stream_timeout is None else stream_timeout)
    check_not_a_loop(spec, "SOURCE")
    path = Path(spec)
    if path.is_dir():
        return ImageFolderSource.from_folder(path, strict)
    if not path.exists() and _has_glob_magic(spec):
        return ImageFolderSource.from_glob(spec, strict)
    if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
        return ImageFolderSource([path], f"image {path}")
    return VideoFileSource(path)


def _open_url(url: str, timeout: float) -> LiveSource:
    parsed = urlparse(url)
    if parsed.scheme.lower() not in STREAM_SCHEMES:
        raise UserFacingError(f"unsupported URL scheme {parsed.scheme!r} in {url} (use one of {', '.join(STREAM_SCHEMES)})")
    if not parsed.hostname:
        raise UserFacingError(f"bad URL {url}: no host")
    try:
        parsed.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise UserFacingError(f"bad URL {url}: invalid port") from None
    if not 0 < timeout < float("inf"):
        raise UserFacingError(f"--stream-timeout must be a positive number of seconds, got {timeout}")
    return LiveSource(url, url, timeout=timeout)
