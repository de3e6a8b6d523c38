from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from tagtrack.model.errors import UserFacingError
from tagtrack.realtime.sources import ImageFolderSource, LiveSource, VideoFileSource, open_source

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def write_video(path: Path, frames: int, size_hw=(48, 64), fps: float = 10.0, fourcc: str = "MJPG") -> Path:
    """A video whose frame i is uniformly grey level 10*i mod 250 (frames can be told apart after decoding)."""
    height, width = size_hw
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((height, width, 3), (10 * i) % 250, np.uint8))
    writer.release()
    return path


def read_all(source) -> list:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    source.close()
    return frames


def test_video_file_is_lossless_and_ordered_with_source_timestamps(tmp_path):
    path = write_video(tmp_path / "clip.avi", 7, fps=10.0)
    source = open_source(str(path))
    assert isinstance(source, VideoFileSource) and not source.is_live
    assert source.fps == pytest.approx(10.0)
    assert source.frame_count == 7
    frames = read_all(source)
    assert [f.index for f in frames] == list(range(7))
    assert [f.timestamp for f in frames] == pytest.approx([i / 10.0 for i in range(7)])
    levels = [int(np.median(f.image)) for f in frames]
    assert levels == sorted(levels) and abs(levels[-1] - 60) <= 3
    assert frames[0].image.dtype == np.uint8 and frames[0].image.shape == (48, 64, 3)
    assert frames[0].source_id == str(path)


def test_mp4_video(tmp_path):
    frames = read_all(open_source(str(write_video(tmp_path / "clip.mp4", 5, fourcc="mp4v"))))
    assert len(frames) == 5


def test_image_folder_sorted_and_lossless(tmp_path):
    for name, level in (("b.png", 20), ("a.png", 10), ("c.jpg", 30)):
        cv2.imwrite(str(tmp_path / name), np.full((20, 30, 3), level, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source(str(tmp_path))
    assert isinstance(source, ImageFolderSource) and not source.is_live
    frames = read_all(source)
    assert [Path(f.source_id).name for f in frames] == ["a.png", "b.png", "c.jpg"]
    assert [f.index for f in frames] == [0, 1, 2]
    assert [int(np.median(f.image)) for f in frames] == pytest.approx([10, 20, 30], abs=2)
    assert frames[1].timestamp == pytest.approx(1 / 30)


def test_glob_and_single_image(tmp_path):
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"frame_{i:03d}.png"), np.full((8, 8, 3), i, np.uint8))
    frames = read_all(open_source(str(tmp_path / "frame_00[12].png")))
    assert [Path(f.source_id).name for f in frames] == ["frame_001.png", "frame_002.png"]
    assert len(read_all(open_source(str(tmp_path / "frame_003.png")))) == 1


def test_unreadable_image_in_folder_is_skipped_named_and_counted(tmp_path, caplog):
    for name in ("a.png", "c.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "b.png").write_bytes(b"not a png")
    frames = read_all(open_source(str(tmp_path)))
    assert [Path(f.source_id).name for f in frames] == ["a.png", "c.png"]
    assert [f.index for f in frames] == [0, 1]
    assert "b.png" in caplog.text


def test_unreadable_image_in_folder_stops_with_its_name_when_strict(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "b.png").write_bytes(b"not a png")
    source = open_source(str(tmp_path), strict=True)
    assert source.read() is not None
    with pytest.raises(UserFacingError, match="b.png"):
        source.read()


@pytest.mark.parametrize("make_spec, message", [
    (lambda d: str(d / "missing.mp4"), "no such file"),
    (lambda d: _text_file(d / "notes.mp4"), "not a video"),
    (lambda d: str(write_video(d / "empty.avi", 0)), "no frames|not a video"),
    (lambda d: str(_empty_folder(d)), "no images"),
    (lambda d: str(d / "nothing_*.png"), "no images"),
    (lambda d: "-1", "0 or more"),
    (lambda d: "99", "no camera at index 99"),
    (lambda d: "ftp://example.com/video", "unsupported URL scheme"),
    (lambda d: "rtsp://", "no host"),
    (lambda d: "http://example.com:notaport/x", "invalid port"),
    (lambda d: "http://127.0.0.1:9/stream.mjpg", "cannot open stream"),
])
def test_bad_sources_raise_one_clear_error(tmp_path, make_spec, message):
    with pytest.raises(UserFacingError, match=message):
        open_source(make_spec(tmp_path))


def _text_file(path: Path) -> str:
    path.write_text("hello, I am not a video")
    return str(path)


def _empty_folder(root: Path) -> Path:
    folder = root / "empty"
    folder.mkdir()
    return folder


@pytest.mark.skipif(IS_ROOT, reason="root reads folders whatever their permissions")
def test_unreadable_folder(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0)
    try:
        with pytest.raises(UserFacingError, match="permission denied"):
            open_source(str(folder))
    finally:
        folder.chmod(0o755)


def test_unreadable_folder_message_when_listing_fails(tmp_path, monkeypatch):
    # Root cannot be refused by permissions, so make the listing itself fail as it does for users.
    folder = tmp_path / "locked"
    folder.mkdir()

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)
    with pytest.raises(UserFacingError, match="cannot read folder .*permission denied"):
        open_source(str(folder))


def test_live_source_reconnects_then_gives_up_with_visible_status(tmp_path, caplog):
    # A "stream" that OpenCV can open: a video file read through LiveSource. After its end the
    # source reconnects (and the file plays again); once the file is gone it gives up.
    path = write_video(tmp_path / "stream.avi", 3)
    source = LiveSource(str(path), "stream:test", retries=2, retry_delay=0.0)
    assert source.is_live
    frames = [source.read() for _ in range(5)]  # 3 frames, a reconnect, 2 more
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert all(b.timestamp >= a.timestamp for a, b in zip(frames, frames[1:]))
    path.unlink()
    caplog.set_level(logging.WARNING, logger="tagtrack.realtime.sources")
    source.read()  # the last buffered frame of the open capture
    with pytest.raises(UserFacingError, match="stopped delivering frames; gave up after 2 retries"):
        source.read()
    warnings = [r.getMessage() for r in caplog.records if "reconnecting" in r.getMessage()]
    assert any("attempt 1 of 2" in w for w in warnings) and any("attempt 2 of 2" in w for w in warnings)
    source.close()


class _TenFps:
    """A file-like source of 10 frames per second (no decoding), for the pacing rule."""

    is_live, fps, frame_hw = False, 10.0, (4, 4)

    def __init__(self) -> None:
        self.index = 0

    def read(self):
        from tagtrack.realtime.sources import Frame

        frame = Frame(image=np.zeros((4, 4, 3), np.uint8), index=self.index, timestamp=self.index / 10.0,
                      source_id="x")
        self.index += 1
        return frame

    def close(self) -> None:
        pass


def test_a_paced_source_plays_at_its_own_rate_without_rushing_after_a_stall():
    from tagtrack.realtime.sources import PacedSource

    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    source = PacedSource(_TenFps(), clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        source.read()
    assert slept == [0.1, 0.1]  # frame 0 at once, then one frame every 0.1 s
    now[0] += 2.0  # a pause or slow inference: two seconds behind the file's clock
    source.read()
    source.read()
    assert slept == [0.1, 0.1, 0.1]  # the late frame at once, the next 0.1 s later: no burst to catch up
    source.paced = False  # the viewer's "Fast"
    for _ in range(5):
        source.read()
    assert len(slept) == 3
    source.paced = True
    source.read()
    source.read()
    assert slept == [0.1, 0.1, 0.1, 0.1]
