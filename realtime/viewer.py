"""The PyQt6 viewer: live annotated image, stats overlay, pause/step, threshold sliders, toggles, recording.

Threads: the pipeline runs its own capture / inference / post threads. Its last stage calls
`ViewerSink.write`, which only stores the newest FrameResult and posts one queued Qt signal; the GUI
thread then renders the newest result it finds. So the GUI never waits on inference, and when the
GUI is slower than the pipeline it simply skips to the freshest frame.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QObject, QSize, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QCloseEvent, QGuiApplication, QImage, QKeySequence, QPixmap, QResizeEvent
from PyQt6.QtWidgets import (
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSizePolicy,
    QSlider,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from tagtrack.model.codec import DecodeConfig
from tagtrack.model.errors import UserFacingError
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.realtime.pipeline import FrameResult, Pipeline, PipelineSettings
from tagtrack.realtime.sources import PacedSource, Source, open_source
from tagtrack.realtime.viewer_render import (
    FrameRateMeter,
    VideoRecorder,
    ViewOptions,
    ViewStats,
    draw_stats,
    processing_latency_ms,
    render_result,
)
from tagtrack.tracker import PoseTracker, TrackerConfig

log = logging.getLogger(__name__)

DETECTION_SLIDER_STEPS = 100  # detection threshold 0.00 .. 1.00 in steps of 0.01
TAG_SLIDER_STEPS = 50  # tag threshold 0.0 .. 5.0 in steps of 0.1
TAG_SLIDER_SCALE = 10.0
STOP_TIMEOUT_S = 10.0
DEFAULT_RECORD_FPS = 30.0


class ViewerSink(QObject):
    """Pipeline sink that hands the newest FrameResult to the GUI thread without ever blocking the pipeline.

    `write` runs on the pipeline's post thread: it replaces the stored result and, unless a
    notification is already pending, emits `result_ready`, which reaches the GUI through a queued
    connection. At most one notification is in the GUI's event queue at a time.
    """

    result_ready = pyqtSignal()
    input_finished = pyqtSignal()

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._latest: FrameResult | None = None
        self._notify_pending = False
        self.received = 0
        self.rate = FrameRateMeter()

    def write(self, result: FrameResult) -> None:
        # The pipeline keeps adding to result.timings after the sinks ran; keep the viewer's copy fixed.
        result = dataclasses.replace(result, timings=dict(result.timings))
        with self._lock:
            self._latest = result
            self.received += 1
            self.rate.tick()
            notify = not self._notify_pending
            self._notify_pending = True
        if notify:
            self.result_ready.emit()

    def close(self) -> None:
        self.input_finished.emit()

    def take_latest(self) -> FrameResult | None:
        """The newest result not taken yet (None if there is none); called on the GUI thread."""
        with self._lock:
            result, self._latest = self._latest, None
            self._notify_pending = False
            return result

    def fps(self) -> float:
        with self._lock:
            return self.rate.fps()


def bgr_to_qimage(image: np.ndarray) -> QImage:
    """A QImage that owns a copy of the BGR uint8 pixels."""
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    return QImage(image.data, width, height, image.strides[0], QImage.Format.Format_BGR888).copy()


class ImageView(QLabel):
    """Shows the newest image scaled to the widget, aspect ratio kept."""

    def __init__(self) -> None:
        super().__init__()
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(QSize(160, 120))
        # Ignored: the label must not grow the window to the image's size.
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.setStyleSheet("background-color: black; color: #bbbbbb;")
        self.setText("waiting for the first frame…")
        self._image: QImage | None = None
        self.images_shown = 0

    def show_image(self, image: QImage) -> None:
        self._image = image
        self.images_shown += 1
        self._rescale()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 (Qt name)
        super().resizeEvent(event)
        self._rescale()

    def _rescale(self) -> None:
        if self._image is None:
            return
        pixmap = QPixmap.fromImage(self._image).scaled(
            self.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
        )
        self.setPixmap(pixmap)


class LabeledSlider(QWidget):
    """A horizontal slider with a name and its current value."""

    def __init__(self, name: str, steps: int, scale: float, value: float) -> None:
        super().__init__()
        self.scale = scale
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, steps)
        self.slider.setValue(int(round(value * scale)))
        # No keyboard focus: Space / arrows belong to the window's shortcuts.
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.value_label = QLabel()
        self.value_label.setMinimumWidth(40)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        layout.addWidget(QLabel(name))
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.value_label)
        self.slider.valueChanged.connect(self._show_value)
        self._show_value()

    def value(self) -> float:
        return self.slider.value() / self.scale

    def _show_value(self) -> None:
        self.value_label.setText(f"{self.value():.2f}")


class ViewerWindow(QMainWindow):
    """Main window. Owns the running Pipeline and restarts it when the user opens another source."""

    def __init__(
        self,
        engine,
        source: Source,
        source_label: str,
        schema: KeypointSchema = COCO17,
        settings: PipelineSettings | None = None,
        make_tracker: Callable[[], PoseTracker | None] | None = None,
        record_dir: Path | None = None,
        engine_label: str = "",
        start_paused: bool = False,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.schema = schema
        self.settings = settings if settings is not None else PipelineSettings(decode=DecodeConfig())
        self.make_tracker = make_tracker if make_tracker is not None else (lambda: PoseTracker(TrackerConfig(), schema))
        self.record_dir = Path(record_dir) if record_dir is not None else Path.cwd()
        self.engine_label = engine_label
        self.options = ViewOptions()
        self.pipeline: Pipeline | None = None
        self.sink: ViewerSink | None = None
        self.source: Source | None = None
        self.source_label = ""
        self.paused = start_paused
        self.input_ended = False
        self.last_result: FrameResult | None = None
        self.frames_shown = 0
        self.recorder: VideoRecorder | None = None
        self._recording_requested = False
        self._closed = False

        self.setWindowTitle("tagtrack viewer")
        self.resize(1024, 720)
        self.image_view = ImageView()
        self.detection_slider = LabeledSlider(
            "detection threshold", DETECTION_SLIDER_STEPS, DETECTION_SLIDER_STEPS,
            self.settings.decode.detection_threshold)
        self.tag_slider = LabeledSlider(
            "tag threshold", TAG_SLIDER_STEPS, TAG_SLIDER_SCALE, self.settings.decode.tag_threshold)
        self.detection_slider.slider.valueChanged.connect(self._on_thresholds_changed)
        self.tag_slider.slider.valueChanged.connect(self._on_thresholds_changed)
        sliders = QWidget()
        sliders_layout = QHBoxLayout(sliders)
        sliders_layout.setContentsMargins(0, 0, 0, 0)
        sliders_layout.addWidget(self.detection_slider)
        sliders_layout.addWidget(self.tag_slider)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 4)
        layout.addWidget(self.image_view, 1)
        layout.addWidget(sliders)
        self.setCentralWidget(central)
        self.status_label = QLabel()
        self.statusBar().addWidget(self.status_label, 1)
        self._build_actions()
        self.pause_action.setChecked(self.paused)

        self.start_source(source, source_label)

    # ------------------------------------------------------------ actions and shortcuts

    def _build_actions(self) -> None:
        toolbar = QToolBar("controls")
        toolbar.setMovable(False)
        toolbar.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.addToolBar(toolbar)

        def action(text: str, keys: list, slot, checkable: bool = False, checked: bool = False) -> QAction:
            new_action = QAction(text, self)
            new_action.setShortcuts([QKeySequence(key) for key in keys])
            new_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            new_action.setCheckable(checkable)
            if checkable:
                new_action.setChecked(checked)
                new_action.toggled.connect(slot)
            else:
                new_action.triggered.connect(slot)
            keys_text = ", ".join(QKeySequence(key).toString() for key in keys)
            new_action.setToolTip(f"{text} ({keys_text})")
            toolbar.addAction(new_action)
            return new_action

        key = Qt.Key
        self.open_file_action = action("Open file…", [key.Key_O], self._ask_open_file)
        self.open_folder_action = action("Open folder…", [], self._ask_open_folder)
        self.open_camera_action = action("Open camera / URL…", [key.Key_C], self._ask_open_camera)
        toolbar.addSeparator()
        self.pause_action = action("Pause", [key.Key_Space], self.set_paused, checkable=True)
        self.step_action = action("Step", [key.Key_N, key.Key_Right], self.step)
        # Files play at their own frame rate; "Fast" shows them as fast as they are processed.
        self.fast_action = action("Fast", [key.Key_F], self.set_fast, checkable=True)
        toolbar.addSeparator()
        self.skeleton_action = action("Skeleton", [key.Key_K], self._on_toggles_changed, True, self.options.skeleton)
        self.ids_action = action("IDs", [key.Key_I], self._on_toggles_changed, True, self.options.ids)
        self.boxes_action = action("Boxes", [key.Key_B], self._on_toggles_changed, True, self.options.boxes)
        self.heatmap_action = action("Heatmap", [key.Key_H], self._on_toggles_changed, True, self.options.heatmap)
        toolbar.addSeparator()
        self.record_action = action("Record", [key.Key_R], self.set_recording, checkable=True)
        toolbar.addSeparator()
        self.quit_action = action("Quit", [key.Key_Q, key.Key_Escape], self.close)

    # ------------------------------------------------------------ pipeline lifetime

    def start_source(self, source: Source, source_label: str) -> None:
        """Run a fresh pipeline (new tracker, new sink) on an opened source (a file or folder paced at its own
        frame rate unless "Fast" is on)."""
        if not source.is_live:
            source = PacedSource(source)
            source.paced = not self.fast_action.isChecked()
        self.source = source
        self.source_label = source_label
        self.input_ended = False
        self.sink = ViewerSink()
        self.sink.result_ready.connect(self._on_result_ready, Qt.ConnectionType.QueuedConnection)
        self.sink.input_finished.connect(self._on_input_finished, Qt.ConnectionType.QueuedConnection)
        self.pipeline = Pipeline(source, self.engine, self.schema, self.settings, self.make_tracker(), [self.sink])
        self.pipeline.set_paused(self.paused)
        self.pipeline.start()
        log.info("viewing %s", source_label)
        self._update_status()

    def stop_pipeline(self) -> None:
        """Stop and join the running pipeline (all its threads); safe to call twice."""
        pipeline, sink = self.pipeline, self.sink
        self.pipeline = None
        if sink is not None:
            sink.result_ready.disconnect(self._on_result_ready)
            sink.input_finished.disconnect(self._on_input_finished)
        if pipeline is None:
            return
        pipeline.stop()
        self._join(pipeline)

    def _join(self, pipeline: Pipeline) -> None:
        """Join the pipeline's threads; an error any of them hit goes to the status bar, not up into Qt."""
        try:
            summary = pipeline.join(timeout=STOP_TIMEOUT_S)
        except UserFacingError as error:
            self.show_message(f"error: {error}")
        except Exception as error:  # noqa: BLE001 - an exception escaping a Qt slot aborts the process
            log.exception("pipeline failed")
            self.show_message(f"error: pipeline failed: {error}")
        else:
            if not summary.finished:
                log.warning("pipeline threads still running %.0f s after stop", STOP_TIMEOUT_S)

    def open_source_spec(self, spec: str) -> bool:
        """Open `spec` (camera index, file, folder, URL) and switch to it; on bad input keep the current one."""
        try:
            source = open_source(spec)
        except UserFacingError as error:
            self.show_message(f"cannot open {spec}: {error}")
            QMessageBox.warning(self, "tagtrack viewer", f"Cannot open {spec}:\n{error}")
            return False
        self.set_recording(False)
        self.stop_pipeline()
        self.last_result = None
        self.start_source(source, spec)
        return True

    def _ask_open_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open video or image", str(Path.cwd()),
            "Videos and images (*.mp4 *.avi *.mov *.mkv *.webm *.m4v *.jpg *.jpeg *.png *.bmp);;All files (*)")
        if path:
            self.open_source_spec(path)

    def _ask_open_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open image folder", str(Path.cwd()))
        if path:
            self.open_source_spec(path)

    def _ask_open_camera(self) -> None:
        spec, accepted = QInputDialog.getText(self, "Open camera or stream", "Camera index or stream URL:", text="0")
        if accepted and spec.strip():
            self.open_source_spec(spec.strip())

    # ------------------------------------------------------------ controls

    def set_fast(self, fast: bool) -> None:
        """Show a file as fast as it is processed (True) or at its own frame rate (False)."""
        if isinstance(self.source, PacedSource):
            self.source.paced = not fast

    def set_paused(self, paused: bool) -> None:
        self.paused = bool(paused)
        if self.pause_action.isChecked() != self.paused:
            self.pause_action.setChecked(self.paused)  # re-enters here once with the same value
            return
        if self.pipeline is not None:
            self.pipeline.set_paused(self.paused)
        self._update_status()
        self._rerender()

    def step(self) -> None:
        """Advance exactly one frame; pauses first if running."""
        if not self.paused:
            self.set_paused(True)
        if self.pipeline is not None:
            self.pipeline.step()

    def set_thresholds(self, detection: float | None = None, tag: float | None = None) -> None:
        """Move the sliders (the pipeline picks the new values up on its next frame)."""
        if detection is not None:
            self.detection_slider.slider.setValue(int(round(detection * self.detection_slider.scale)))
        if tag is not None:
            self.tag_slider.slider.setValue(int(round(tag * self.tag_slider.scale)))

    def _on_thresholds_changed(self) -> None:
        # A new DecodeConfig replaces the old one in one assignment, which the pipeline reads per frame.
        self.settings.decode = dataclasses.replace(
            self.settings.decode,
            detection_threshold=self.detection_slider.value(),
            tag_threshold=self.tag_slider.value(),
        )

    def _on_toggles_changed(self) -> None:
        self.options = ViewOptions(
            skeleton=self.skeleton_action.isChecked(),
            ids=self.ids_action.isChecked(),
            boxes=self.boxes_action.isChecked(),
            heatmap=self.heatmap_action.isChecked(),
        )
        # Heatmaps are copied out of the inference thread only while they are shown.
        self.settings.keep_heatmaps = self.options.heatmap
        self._rerender()

    def set_recording(self, recording: bool) -> None:
        recording = bool(recording)
        if self.record_action.isChecked() != recording:
            self.record_action.setChecked(recording)  # re-enters here once with the same value
            return
        self._recording_requested = recording
        if not recording and self.recorder is not None:
            recorder, self.recorder = self.recorder, None
            recorder.close()
            self.show_message(f"saved {recorder.path} ({recorder.frames_written} frames)")
        self._update_status()

    # ------------------------------------------------------------ frames

    def _on_result_ready(self) -> None:
        if self.sink is None or self._closed:
            return
        result = self.sink.take_latest()
        if result is None:
            return
        self.last_result = result
        image = self._render(result)
        self.frames_shown += 1
        self.image_view.show_image(bgr_to_qimage(image))
        if self._recording_requested:
            self._record(image)

    def _render(self, result: FrameResult) -> np.ndarray:
        image = render_result(result, self.schema, self.options)
        stats = ViewStats(
            fps=self.sink.fps() if self.sink is not None else 0.0,
            latency_ms=processing_latency_ms(result.timings),
            dropped=result.dropped,
            frame_index=result.frame.index,
            paused=self.paused,
            recording=self.recorder is not None,
        )
        draw_stats(image, stats)
        return image

    def _rerender(self) -> None:
        """Redraw the last frame with the current toggles (e.g. while paused); not recorded again."""
        if self.last_result is not None:
            self.image_view.show_image(bgr_to_qimage(self._render(self.last_result)))

    def _record(self, image: np.ndarray) -> None:
        if self.recorder is None:
            fps = self.source.fps if self.source is not None and self.source.fps else DEFAULT_RECORD_FPS
            path = self.record_dir / time.strftime("tagtrack-%Y%m%d-%H%M%S.mp4")
            try:
                self.recorder = VideoRecorder(path, fps, image.shape[:2])
            except UserFacingError as error:
                self.show_message(f"error: {error}")
                self.set_recording(False)
                return
            self._update_status()
        self.recorder.write(image)

    def _on_input_finished(self) -> None:
        self.input_ended = True
        self._update_status()
        if self.pipeline is not None:
            self._join(self.pipeline)

    # ------------------------------------------------------------ status and shutdown

    def show_message(self, text: str) -> None:
        log.info("%s", text)
        self.statusBar().showMessage(text, 8000)

    def _update_status(self) -> None:
        state = "end of input" if self.input_ended else ("paused" if self.paused else "running")
        parts = [self.source_label, state]
        if self.engine_label:
            parts.append(self.engine_label)
        if self.recorder is not None:
            parts.append(f"recording {self.recorder.path.name}")
        elif self._recording_requested:
            parts.append("recording starts with the next frame")
        self.status_label.setText("  ·  ".join(parts))

    def shutdown(self) -> None:
        """Stop the pipeline, join its threads and finalise the recording."""
        if self._closed:
            return
        self._closed = True
        self.stop_pipeline()
        if self.recorder is not None:
            recorder, self.recorder = self.recorder, None
            recorder.close()
            log.info("saved %s (%d frames)", recorder.path, recorder.frames_written)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt name)
        self.shutdown()
        event.accept()


# ---------------------------------------------------------------- starting the app


def check_display() -> None:
    """Raise UserFacingError unless Qt can open a window here.

    Qt aborts the whole process when its platform plugin cannot start (no X server, missing xcb
    libraries), so this probes in a child process first.
    """
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    advice = "use `tagtrack run SOURCE --out annotated.mp4` to process without a window"
    if sys.platform.startswith("linux") and not platform:
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            raise UserFacingError(f"no display to open a window on (DISPLAY is not set); {advice}")
    probe = "from PyQt6.QtGui import QGuiApplication; app = QGuiApplication([]); print(app.platformName())"
    try:
        completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise UserFacingError(f"the display did not answer within 30 s; {advice}") from None
    if completed.returncode != 0:
        raise UserFacingError(f"cannot open a window ({_qt_failure_reason(completed.stderr)}); {advice}")


def _qt_failure_reason(stderr: str) -> str:
    """The telling line of Qt's start-up failure: no X server, else the plugin that failed to load."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for marker in ("could not connect to display", "Could not load the Qt platform plugin"):
        for line in lines:
            if marker in line:
                reason = line.split(": ", 1)[1] if line.startswith("qt.qpa") else line
                if "platform plugin" in marker:
                    reason += " - system libraries it needs may be missing (see docs/viewer.md)"
                return reason
    return lines[0] if lines else "Qt could not start"


def run_viewer(
    source: Source,
    source_label: str,
    engine,
    schema: KeypointSchema = COCO17,
    decode: DecodeConfig | None = None,
    record_dir: Path | None = None,
    engine_label: str = "",
    tracker: TrackerConfig | None = None,
) -> int:
    """Open the window on an opened source and run the Qt event loop until it closes; returns 0, or
    128 + the signal number when SIGINT / SIGTERM closed it."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    log.info("Qt platform: %s", QGuiApplication.platformName())
    settings = PipelineSettings(decode=decode if decode is not None else DecodeConfig())
    tracker_config = tracker if tracker is not None else TrackerConfig()
    window = ViewerWindow(engine, source, source_label, schema=schema, settings=settings, record_dir=record_dir,
                          engine_label=engine_label, make_tracker=lambda: PoseTracker(tracker_config, schema))
    # Ctrl-C / SIGTERM close the window like the Quit button; the timer lets Python run its signal handlers
    # while Qt's event loop is in charge.
    previous_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    received: list[int] = []

    def close_on_signal(signum, frame) -> None:
        received.append(signum)
        # Closed from inside the event loop: a close that ran before app.exec() started (a signal
        # right at start-up) would hide the window without ever quitting the loop.
        QTimer.singleShot(0, window.close)

    for sig in previous_handlers:
        signal.signal(sig, close_on_signal)
    wake_timer = QTimer()
    wake_timer.timeout.connect(lambda: None)
    wake_timer.start(200)
    window.show()
    log.info("window open on %s (Ctrl-C or SIGTERM closes it)", source_label)
    try:
        app.exec()
    finally:
        wake_timer.stop()
        window.shutdown()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
    # Like `run`: a window closed by a signal exits as a shell expects (130 for Ctrl-C, 143 for SIGTERM).
    return 128 + received[0] if received else 0
