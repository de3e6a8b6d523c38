"""The PyQt6 viewer under Qt's offscreen platform: frames appear, pause/step, sliders, toggles, recording, close."""

from __future__ import annotations

import os

# Before anything imports Qt: no real display needed.
os.environ["QT_QPA_PLATFORM"] = "offscreen"

import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("pytestqt")

from PyQt6.QtCore import Qt  # noqa: E402
from PyQt6.QtWidgets import QMessageBox  # noqa: E402

from tagtrack import main  # noqa: E402
from tagtrack.model.codec import DecodeConfig  # noqa: E402
from tagtrack.model.config import OUTPUT_STRIDE  # noqa: E402
from tagtrack.model.schema import COCO17  # noqa: E402
from tagtrack.realtime.pipeline import PipelineSettings  # noqa: E402
from tagtrack.realtime.sources import open_source  # noqa: E402
from tagtrack.realtime.viewer import ViewerWindow, check_display  # noqa: E402
from tagtrack.realtime.viewer_render import FrameRateMeter, ViewOptions, blend_heatmap, render_result  # noqa: E402
from tagtrack.tracker import PoseTracker, TrackerConfig  # noqa: E402

INPUT_HW = (64, 64)
FRAME_HW = (128, 128)
PEAK = 0.8  # height of the fake engine's heatmap peaks


class FakeEngine:
    """Test-only engine: one person with all 17 joints at fixed map positions, every tag 0.

    Decoding it gives exactly one person as long as the detection threshold is below PEAK.
    """

    name = "fake"
    input_hw = INPUT_HW
    batch_size = 1

    def __init__(self) -> None:
        map_h, map_w = INPUT_HW[0] // OUTPUT_STRIDE, INPUT_HW[1] // OUTPUT_STRIDE
        rng = np.random.default_rng(0)
        # Distinct cells inside the map, away from the border.
        cells = rng.choice((map_h - 4) * (map_w - 4), size=COCO17.num_keypoints, replace=False)
        ys, xs = np.indices((map_h, map_w))
        self.heatmaps = np.zeros((1, COCO17.num_keypoints, map_h, map_w), dtype=np.float32)
        for joint, cell in enumerate(cells):
            y, x = 2 + cell // (map_w - 4), 2 + cell % (map_w - 4)
            self.heatmaps[0, joint] = PEAK * np.exp(-((ys - y) ** 2 + (xs - x) ** 2) / (2 * 0.8**2))
        self.tags = np.zeros((1, COCO17.num_keypoints, 1, map_h, map_w), dtype=np.float32)
        self.calls = 0

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert batch.shape[1:] == (3, *INPUT_HW)
        self.calls += 1
        return self.heatmaps.copy(), self.tags.copy()

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def video_path(tmp_path_factory) -> Path:
    """A 60-frame mp4 with a bright square moving over a gradient, so consecutive frames differ."""
    path = tmp_path_factory.mktemp("viewer") / "moving_square.mp4"
    height, width = FRAME_HW
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (width, height))
    gradient = np.tile(np.linspace(40, 160, width, dtype=np.uint8), (height, 1))
    for index in range(60):
        image = cv2.merge([gradient, gradient[::-1], np.full_like(gradient, 90)])
        x = 4 + (index * 2) % (width - 24)
        cv2.rectangle(image, (x, 50), (x + 20, 70), (255, 255, 255), -1)
        writer.write(image)
    writer.release()
    return path


def pipeline_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("pipeline-") and thread.is_alive()]


@pytest.fixture
def open_window(qtbot, video_path):
    """Factory for a viewer window on the generated video with the fake engine (closed after the test)."""
    windows: list[ViewerWindow] = []

    def make(start_paused: bool = False, engine=None, record_dir: Path | None = None) -> ViewerWindow:
        settings = PipelineSettings(decode=DecodeConfig())
        # Tracks confirmed at once, so the person shows (with an ID) from its second frame on.
        window = ViewerWindow(engine or FakeEngine(), open_source(str(video_path)), str(video_path),
                              settings=settings, make_tracker=lambda: PoseTracker(TrackerConfig(confirm_hits=1)),
                              start_paused=start_paused, record_dir=record_dir)
        qtbot.addWidget(window)
        window.show()
        qtbot.waitExposed(window)
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.close()


def pixmap_bytes(window: ViewerWindow) -> bytes:
    pixmap = window.image_view.pixmap()
    assert pixmap is not None and not pixmap.isNull()
    image = pixmap.toImage()
    return bytes(image.constBits().asarray(image.sizeInBytes()))


def wait_until_settled(qtbot, window: ViewerWindow, quiet_ms: int = 400) -> int:
    """Wait until no new results arrive for quiet_ms (frames in flight when pausing land first)."""
    while True:
        before = window.sink.received
        qtbot.wait(quiet_ms)
        if window.sink.received == before:
            return before


def step_to_first_tracked_frame(qtbot, window: ViewerWindow) -> None:
    """Step a paused window twice: the tracker reports a new person from its second frame on."""
    for index in (0, 1):
        window.step()
        qtbot.waitUntil(lambda: window.last_result is not None and window.last_result.frame.index == index,
                        timeout=15000)
    assert len(window.last_result.tracked) == 1


def test_frames_appear_and_pixmap_changes(qtbot, open_window):
    window = open_window()
    qtbot.waitUntil(lambda: window.frames_shown >= 1, timeout=10000)
    first = pixmap_bytes(window)
    shown = window.frames_shown
    qtbot.waitUntil(lambda: window.frames_shown > shown + 2, timeout=10000)
    assert pixmap_bytes(window) != first
    assert window.last_result is not None and len(window.last_result.tracked) == 1
    # The whole file is shown (GUI may skip frames, but the pipeline delivers all 60) and then it stops.
    qtbot.waitUntil(lambda: window.input_ended, timeout=20000)
    assert window.sink.received == 60
    assert "end of input" in window.status_label.text()


def test_pause_blocks_frames_and_step_advances_exactly_one(qtbot, open_window):
    window = open_window(start_paused=True)
    qtbot.wait(500)
    assert window.sink.received == 0 and window.frames_shown == 0
    window.step()
    qtbot.waitUntil(lambda: window.sink.received == 1, timeout=15000)
    qtbot.wait(400)
    assert window.sink.received == 1
    qtbot.waitUntil(lambda: window.frames_shown == 1, timeout=15000)
    assert window.last_result.frame.index == 0
    window.step()
    qtbot.waitUntil(lambda: window.sink.received == 2, timeout=15000)
    qtbot.wait(400)
    assert window.sink.received == 2
    qtbot.waitUntil(lambda: window.last_result is not None and window.last_result.frame.index == 1, timeout=15000)

    # Running, then paused mid-stream: frames already in the queues land, then nothing more until a step.
    window.set_paused(False)
    qtbot.waitUntil(lambda: window.sink.received >= 6, timeout=10000)
    window.set_paused(True)
    settled = wait_until_settled(qtbot, window)
    assert settled < 60
    window.step()
    qtbot.waitUntil(lambda: window.sink.received == settled + 1, timeout=15000)
    qtbot.wait(400)
    assert window.sink.received == settled + 1


def test_keyboard_shortcuts_pause_step_and_toggle(qtbot, open_window):
    window = open_window(start_paused=True)
    with qtbot.waitActive(window):  # shortcuts go to the active window
        window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_N)
    qtbot.waitUntil(lambda: window.sink.received == 1, timeout=15000)
    qtbot.keyClick(window, Qt.Key.Key_Right)
    qtbot.waitUntil(lambda: window.sink.received == 2, timeout=15000)
    qtbot.keyClick(window, Qt.Key.Key_Space)
    assert not window.paused
    qtbot.waitUntil(lambda: window.sink.received > 3, timeout=15000)
    qtbot.keyClick(window, Qt.Key.Key_Space)
    assert window.paused and window.pipeline.paused
    for key, action in ((Qt.Key.Key_B, window.boxes_action), (Qt.Key.Key_I, window.ids_action),
                        (Qt.Key.Key_K, window.skeleton_action), (Qt.Key.Key_H, window.heatmap_action)):
        before = action.isChecked()
        qtbot.keyClick(window, key)
        assert action.isChecked() != before
    assert window.settings.keep_heatmaps  # H switched the heatmap on
    # A file plays at its own frame rate; F shows it as fast as it is processed, and back.
    assert window.source.paced and not window.fast_action.isChecked()
    qtbot.keyClick(window, Qt.Key.Key_F)
    assert window.fast_action.isChecked() and not window.source.paced
    qtbot.keyClick(window, Qt.Key.Key_F)
    assert window.source.paced
    qtbot.keyClick(window, Qt.Key.Key_Q)
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=15000)
    assert not pipeline_threads()


def test_sliders_change_decoding_live(qtbot, open_window):
    window = open_window(start_paused=True)
    window.set_thresholds(detection=0.35, tag=2.5)
    assert window.settings.decode.detection_threshold == pytest.approx(0.35)
    assert window.settings.decode.tag_threshold == pytest.approx(2.5)
    assert window.detection_slider.value_label.text() == "0.35"

    step_to_first_tracked_frame(qtbot, window)
    assert window.last_result.frame.index == 1

    # Above the fake peaks: the same pipeline, next frame, finds nobody.
    window.detection_slider.slider.setValue(95)
    assert window.settings.decode.detection_threshold == pytest.approx(0.95)
    window.step()
    qtbot.waitUntil(lambda: window.last_result.frame.index == 2, timeout=15000)
    assert window.last_result.tracked == []

    window.detection_slider.slider.setValue(10)
    window.step()
    qtbot.waitUntil(lambda: window.last_result.frame.index == 3, timeout=15000)
    assert len(window.last_result.tracked) == 1


def test_toggles_change_what_is_drawn(qtbot, open_window):
    window = open_window(start_paused=True)
    step_to_first_tracked_frame(qtbot, window)
    images = {"default": pixmap_bytes(window)}
    window.boxes_action.setChecked(True)
    images["boxes"] = pixmap_bytes(window)
    window.skeleton_action.setChecked(False)
    images["no skeleton"] = pixmap_bytes(window)
    window.boxes_action.setChecked(False)
    window.ids_action.setChecked(False)
    images["nothing"] = pixmap_bytes(window)
    assert len(set(images.values())) == len(images), "every toggle combination should look different"

    # Heatmaps are only kept once the toggle is on; the next frame carries them.
    assert window.last_result.heatmaps is None
    window.heatmap_action.setChecked(True)
    assert window.settings.keep_heatmaps
    window.step()
    qtbot.waitUntil(lambda: window.last_result.heatmaps is not None, timeout=15000)
    with_heatmap = pixmap_bytes(window)
    window.heatmap_action.setChecked(False)
    assert pixmap_bytes(window) != with_heatmap


def test_render_without_skeleton_still_draws_boxes(video_path):
    # Pure rendering check with a real decoded frame from the pipeline-independent path.
    from tagtrack.model.pose import Pose
    from tagtrack.realtime.pipeline import FrameResult
    from tagtrack.realtime.sources import Frame
    from tagtrack.tracker import TrackedPose

    image = np.full((*FRAME_HW, 3), 60, dtype=np.uint8)
    keypoints = np.zeros((COCO17.num_keypoints, 3), dtype=np.float32)
    keypoints[:, 0] = np.linspace(30, 90, COCO17.num_keypoints)
    keypoints[:, 1] = np.linspace(20, 110, COCO17.num_keypoints)
    keypoints[:, 2] = 0.9
    pose = Pose(keypoints, 0.9, Pose.box_from_keypoints(keypoints), np.zeros(1, dtype=np.float32))
    result = FrameResult(Frame(image, 0, 0.0, "test"), [TrackedPose(pose, 7, 1, keypoints)], None, {}, 0)
    plain = render_result(result, COCO17, ViewOptions(skeleton=False, ids=False, boxes=False))
    boxes = render_result(result, COCO17, ViewOptions(skeleton=False, ids=False, boxes=True))
    assert np.array_equal(plain, image)
    changed = np.argwhere((boxes != image).any(axis=2))
    # The box outline lies on the pose's box.
    assert changed[:, 1].min() >= 28 and changed[:, 1].max() <= 92
    assert changed[:, 0].min() >= 18 and changed[:, 0].max() <= 112


def test_heatmap_overlay_lands_where_the_peak_is():
    from tagtrack.model.transforms import Letterbox

    image = np.zeros((96, 192, 3), dtype=np.uint8)  # wider than the 64x64 input: letterboxed with padding
    letterbox = Letterbox.fit(image.shape[:2], INPUT_HW)
    heatmaps = np.zeros((2, 16, 16), dtype=np.float32)
    heatmaps[1, 8, 4] = 1.0
    blended = blend_heatmap(image, heatmaps, letterbox)
    expected_xy = letterbox.map_to_image(np.array([4.0, 8.0]))
    brightest = np.unravel_index(blended.astype(np.int32).sum(axis=2).argmax(), blended.shape[:2])
    assert abs(brightest[1] - expected_xy[0]) <= 6 and abs(brightest[0] - expected_xy[1]) <= 6
    assert blended[0, 0].sum() == 0  # far from the peak the frame is untouched


def test_frame_rate_meter():
    meter = FrameRateMeter(window_s=1.0)
    for tick in range(11):
        meter.tick(now=10.0 + tick * 0.05)
    assert meter.fps(now=10.5) == pytest.approx(20.0)
    assert meter.fps(now=20.0) == 0.0  # stale once ticks stop


def test_record_writes_a_playable_video(qtbot, open_window, tmp_path):
    window = open_window(record_dir=tmp_path)
    window.set_recording(True)
    qtbot.waitUntil(lambda: window.input_ended, timeout=20000)
    recorder = window.recorder
    assert recorder is not None and recorder.frames_written > 0
    window.close()
    files = list(tmp_path.glob("*.mp4"))
    assert len(files) == 1
    capture = cv2.VideoCapture(str(files[0]))
    frames = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        assert image.shape[:2] == FRAME_HW
        frames += 1
    capture.release()
    assert frames == recorder.frames_written


def test_open_another_source_restarts_and_bad_source_keeps_running(qtbot, open_window, video_path, monkeypatch):
    warnings: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *args: warnings.append(args[2]))
    window = open_window(start_paused=True)
    old_pipeline = window.pipeline
    assert not window.open_source_spec(str(video_path.parent / "missing.mp4"))
    assert warnings and window.pipeline is old_pipeline and old_pipeline.running

    assert window.open_source_spec(str(video_path))
    assert window.pipeline is not old_pipeline and not old_pipeline.running
    window.step()
    qtbot.waitUntil(lambda: window.last_result is not None and window.last_result.frame.index == 0, timeout=15000)
    assert len(pipeline_threads()) == 3


def test_close_stops_every_pipeline_thread(qtbot, open_window):
    window = open_window()
    qtbot.waitUntil(lambda: window.frames_shown >= 1, timeout=10000)
    assert pipeline_threads()
    window.close()
    assert not pipeline_threads()
    assert window.pipeline is None


def test_frames_appear_with_a_real_tiny_model(qtbot, open_window, tmp_path):
    from tagtrack.realtime.engines import create_engine
    from tests.conftest import save_tiny_checkpoint

    torch.set_num_threads(1)
    weights = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    engine = create_engine("torch", weights, "cpu", False, INPUT_HW, cache_dir=tmp_path / "cache")
    window = open_window(engine=engine)
    qtbot.waitUntil(lambda: window.frames_shown >= 2, timeout=20000)
    assert window.last_result.frame.image.shape[:2] == FRAME_HW


def test_view_command_errors_are_one_line(video_path, tmp_path, capsys):
    assert main.main(["view", str(tmp_path / "missing.mp4")]) == main.EXIT_USER_ERROR
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "\n" not in error

    assert main.main(["view", str(video_path), "--weights", str(tmp_path / "nope.safetensors")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "\n" not in error


def test_no_display_suggests_run(monkeypatch, video_path, capsys):
    for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(main.UserFacingError, match="run"):
        check_display()
    assert main.main(["view", str(video_path)]) == 2
    assert "tagtrack run" in capsys.readouterr().err
