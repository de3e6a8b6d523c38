"""The threaded real-time pipeline: capture -> inference -> decode + track + sinks.

    [capture thread]   source.read(), letterbox + network input (Preprocessor: reused buffers)
          │ bounded queue (files: blocking put = back-pressure; live: freshest frame only, drops counted)
    [inference thread] engine.infer(batch)          (the GPU thread: nothing else runs here)
                       or, with test-time augmentation, model.predict.image_maps over the frame
          │ bounded queue (blocking)
    [post thread]      poses_from_maps -> tracker.update -> every sink.write, in frame order

Stopping (end of input, stop(), an exception in any thread) ends all three threads: capture
stops reading, inference stops inferring, and the post thread still writes the frames the engine
already finished, then closes every sink, so what was written stays valid. join() re-raises the
first exception any thread hit. `PipelineSettings` is read once per frame, so a viewer can change
decoding thresholds while the pipeline runs.

With a `FrameAugment` (`run --flip`, `--scales`) the capture thread only reads frames: the inference
thread makes each scale's input (and its mirror) from the frame, as `predict` does for one image, and hands on
the maps aggregated on the finest scale's grid with that grid's Letterbox.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from tagtrack.model.predict import InferFn, image_maps, poses_from_maps
from tagtrack.model.schema import KeypointSchema
from tagtrack.model.transforms import Letterbox, Preprocessor
from tagtrack.realtime.sources import Frame, Source

if TYPE_CHECKING:
    from tagtrack.model.codec import DecodeConfig
    from tagtrack.tracker import PoseTracker, TrackedPose

log = logging.getLogger(__name__)

# Stage names in FrameResult.timings and RunSummary; "latency" is capture start to sinks done.
STAGES = ("capture", "preprocess", "infer", "decode", "track", "sinks")
# Which thread runs which stages: a thread's throughput is bounded by the sum of its stages.
THREAD_STAGES = {
    "capture": ("capture", "preprocess"),
    "inference": ("infer",),
    "post": ("decode", "track", "sinks"),
}
_POLL_SECONDS = 0.05


@dataclass
class FrameResult:
    """What the sinks get for every processed frame.

    heatmaps: [K, h, w] network-output heatmaps of the frame (letterboxed network-input frame of
    reference), only when settings.keep_heatmaps. timings: seconds per stage (STAGES) plus
    "latency". dropped: frames dropped so far by a live source. letterbox: the mapping between
    the image and the network input (to draw the heatmaps over the image).
    """

    frame: Frame
    tracked: list[TrackedPose]
    heatmaps: np.ndarray | None
    timings: dict[str, float]
    dropped: int
    letterbox: Letterbox | None = None


class Sink(Protocol):
    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...


@dataclass
class PipelineSettings:
    """Read every frame, so the viewer's sliders act live."""

    decode: DecodeConfig
    keep_heatmaps: bool = False


@dataclass
class FrameAugment:
    """Test-time augmentation for every frame (model/predict.py: image_maps). infer runs every scale's input
    size; release (if any) frees what it holds (engines opened for those sizes) once the inference thread ends."""

    infer: InferFn
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    release: Callable[[], None] | None = None


@dataclass
class RunSummary:
    """Totals of a run. stage_seconds: total seconds per stage; fps(): frames per second."""

    frames: int = 0
    people: int = 0
    tracks: int = 0
    dropped: int = 0
    wall_seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False  # stopped before the end of the input
    finished: bool = True  # every thread ended (False when join() timed out)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def stage_fps(self) -> dict[str, float]:
        """Frames per second each stage alone could sustain."""
        return {stage: (self.frames / seconds if seconds > 0 else float("inf"))
                for stage, seconds in self.stage_seconds.items()}

    def thread_fps(self) -> dict[str, float]:
        """Frames per second each thread alone could sustain (the sum of its stages)."""
        result = {}
        for thread, stages in THREAD_STAGES.items():
            busy = sum(self.stage_seconds.get(stage, 0.0) for stage in stages)
            result[thread] = self.frames / busy if busy > 0 else float("inf")
        return result

    def slowest_stage_ratio(self) -> float:
        """End-to-end throughput over the throughput of the slowest thread (1.0 = perfect overlap)."""
        slowest = min(self.thread_fps().values(), default=float("inf"))
        return self.fps / slowest if 0 < slowest < float("inf") else 0.0

    def format(self) -> str:
        lines = [
            f"frames {self.frames}  people {self.people}  tracks {self.tracks}  dropped {self.dropped}",
            f"end-to-end {self.fps:.1f} FPS over {self.wall_seconds:.1f} s"
            + ("  (interrupted)" if self.interrupted else ""),
        ]
        if self.frames:
            per_stage = "  ".join(
                f"{stage} {1000 * self.stage_seconds[stage] / self.frames:.1f} ms"
                for stage in STAGES if stage in self.stage_seconds
            )
            lines.append(f"per frame: {per_stage}")
            lines.append("by stage FPS: " + "  ".join(
                f"{stage} {fps:.1f}" for stage, fps in self.stage_fps().items() if fps != float("inf")))
        return "\n".join(lines)


@dataclass
class _Captured:
    frame: Frame
    letterbox: Letterbox | None      # None with test-time augmentation (made by the inference thread)
    network_input: np.ndarray | None  # float32 [3, H, W]
    timings: dict[str, float]
    started: float  # perf_counter at capture start, for latency


@dataclass
class _Inferred:
    captured: _Captured
    heatmaps: np.ndarray  # [K, h, w]
    tags: np.ndarray  # [K, L, h, w]
    letterbox: Letterbox  # image pixels <-> these maps' network input


_END = object()  # end of input marker passed down the queues


class Pipeline:
    """Runs source -> engine -> decode -> tracker -> sinks on three threads.

    engine: anything with `input_hw` and `infer(batch float32 [B,3,H,W]) -> (heatmaps, tags)`.
    tracker: a PoseTracker, or None for poses without IDs (track_id None).
    augment: test-time augmentation (flip, scales) of every frame, or None for the engine's one input.
    """

    def __init__(self, source: Source, engine: Any, schema: KeypointSchema, settings: PipelineSettings,
                 tracker: PoseTracker | None, sinks: Sequence[Sink], queue_size: int = 4,
                 augment: FrameAugment | None = None) -> None:
        self.source = source
        self.engine = engine
        self.augment = augment
        self.schema = schema
        self.settings = settings
        self.tracker = tracker
        self.sinks = list(sinks)
        self.is_live = bool(getattr(source, "is_live", False))
        # Live sources: a one-slot queue that always holds the newest frame.
        self._frames: queue.Queue = queue.Queue(maxsize=1 if self.is_live else max(1, queue_size))
        self._maps: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._stop = threading.Event()
        self._skip_queued = threading.Event()  # a second interrupt: do not write queued frames
        self._pause_lock = threading.Condition()
        self._paused = False
        self._steps = 0
        self._errors: list[BaseException] = []
        self._errors_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._started_at = 0.0
        self._ended_at: float | None = None
        self._completed = False  # the post thread saw the end of the input
        self._closed_sinks = False
        # Running totals (written by the post thread only; constant memory for long runs).
        self._frames_done = 0
        self._people = 0
        self._track_ids: set[int] = set()
        self._stage_seconds = {stage: 0.0 for stage in STAGES}
        self._dropped = 0

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("pipeline already started")
        self._started_at = time.perf_counter()
        for name, target in (("capture", self._capture_loop), ("inference", self._inference_loop),
                             ("post", self._post_loop)):
            thread = threading.Thread(target=self._guarded, args=(target,), name=f"pipeline-{name}", daemon=True)
            self._threads.append(thread)
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Ask every thread to finish; safe from any thread and from a signal handler."""
        self._stop.set()
        with self._pause_lock:
            self._pause_lock.notify_all()

    def skip_queued(self) -> None:
        """Stop, and do not write the frames already inferred either (a second Ctrl-C); the frame
        being written is finished and every sink is still closed, so the outputs stay valid."""
        self._skip_queued.set()
        self.stop()

    def set_paused(self, paused: bool) -> None:
        with self._pause_lock:
            self._paused = paused
            self._steps = 0
            self._pause_lock.notify_all()

    def step(self) -> None:
        """Let one more frame through while paused."""
        with self._pause_lock:
            self._steps += 1
            self._pause_lock.notify_all()

    @property
    def stopping(self) -> bool:
        """stop() was called (by the user, a signal, or a failing thread)."""
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    @property
    def dropped(self) -> int:
        return self._dropped

    def join(self, timeout: float | None = None) -> RunSummary:
        """Wait for the threads to end; return the summary; re-raise the first thread error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            # Short waits so that signal handlers in the main thread keep running.
            while thread.is_alive():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                thread.join(_POLL_SECONDS if remaining is None else min(_POLL_SECONDS, remaining))
        summary = self.summary()
        if not summary.finished:
            log.warning("pipeline threads still running after %.1f s", timeout or 0.0)
        with self._errors_lock:
            error = self._errors[0] if self._errors else None
        if error is not None:
            raise error
        return summary

    def run(self) -> RunSummary:
        self.start()
        return self.join()

    def summary(self) -> RunSummary:
        end = self._ended_at if self._ended_at is not None else time.perf_counter()
        return RunSummary(
            frames=self._frames_done,
            people=self._people,
            tracks=len(self._track_ids),
            dropped=self._dropped,
            wall_seconds=max(0.0, end - self._started_at) if self._started_at else 0.0,
            stage_seconds=dict(self._stage_seconds),
            interrupted=not self._completed,
            finished=not self.running,
        )

    # ------------------------------------------------------------------ threads

    def _guarded(self, loop) -> None:
        try:
            loop()
        except BaseException as error:  # noqa: BLE001 - surfaced in join()
            log.debug("pipeline thread %s failed", threading.current_thread().name, exc_info=True)
            with self._errors_lock:
                self._errors.append(error)
            self.stop()

    def _wait_while_paused(self) -> bool:
        """Block while paused (unless a step is pending). False when the pipeline is stopping."""
        with self._pause_lock:
            while self._paused and self._steps == 0 and not self._stop.is_set():
                self._pause_lock.wait(_POLL_SECONDS * 4)
            if self._stop.is_set():
                return False
            if self._paused:
                self._steps -= 1
            return True

    def _put(self, target: queue.Queue, item: object) -> bool:
        """Blocking put that gives up when the pipeline stops (back-pressure for files)."""
        while not self._stop.is_set():
            try:
                target.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _put_freshest(self, item: _Captured) -> None:
        """Replace whatever frame is waiting by the new one; count the one replaced as dropped."""
        while True:
            try:
                self._frames.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._frames.get_nowait()
                    self._dropped += 1
                except queue.Empty:
                    pass

    def _get(self, source: queue.Queue) -> object | None:
        """Blocking get; None when the pipeline stops."""
        while not self._stop.is_set():
            try:
                return source.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
        return None

    def _capture_loop(self) -> None:
        # One network input per frame that can be in flight (queued, or being inferred) plus the one
        # being written: the buffers are reused in turn, with no allocation per frame.
        preprocess = Preprocessor(tuple(self.engine.input_hw), buffers=self._frames.maxsize + 2)
        try:
            while not self._stop.is_set():
                # A paused live source is not read: the next frame after resuming is a fresh one,
                # since the device keeps only a few frames in its own buffer.
                if not self._wait_while_paused():
                    break
                started = time.perf_counter()
                try:
                    frame = self.source.read()
                except Exception as error:  # noqa: BLE001 - surfaced in join()
                    # A source that fails mid-way (unreadable image, camera gone) ends the input:
                    # the frames already read still go through and get written.
                    with self._errors_lock:
                        self._errors.append(error)
                    frame = None
                if frame is None:
                    self._put(self._frames, _END)
                    break
                captured_at = time.perf_counter()
                letterbox, network_input = preprocess(frame.image) if self.augment is None else (None, None)
                timings = {"capture": captured_at - started, "preprocess": time.perf_counter() - captured_at}
                item = _Captured(frame, letterbox, network_input, timings, started)
                if self.is_live:
                    self._put_freshest(item)
                elif not self._put(self._frames, item):
                    break
        finally:
            self.source.close()

    def _inference_loop(self) -> None:
        try:
            self._infer_frames()
        finally:
            if self.augment is not None and self.augment.release is not None:
                self.augment.release()  # nothing else runs these engines

    def _infer_frames(self) -> None:
        while True:
            item = self._get(self._frames)
            if item is None:
                return
            if item is _END:
                self._put(self._maps, _END)
                return
            assert isinstance(item, _Captured)
            started = time.perf_counter()
            if self.augment is None:
                heatmaps, tags = self.engine.infer(item.network_input[None])
                inferred = _Inferred(item, np.asarray(heatmaps[0]), np.asarray(tags[0]), item.letterbox)
            else:
                augment = self.augment
                heatmaps, tags, letterbox = image_maps(augment.infer, item.frame.image, tuple(self.engine.input_hw),
                                                       self.schema, augment.flip, augment.scales)
                inferred = _Inferred(item, heatmaps, tags, letterbox)
            item.timings["infer"] = time.perf_counter() - started
            if not self._put(self._maps, inferred):
                return

    def _post_loop(self) -> None:
        failed = False
        try:
            while True:
                item = self._get(self._maps)
                if item is None:
                    self._drain_inferred()
                    return
                if item is _END:
                    self._completed = True
                    return
                assert isinstance(item, _Inferred)
                self._process(item)
        except BaseException:
            failed = True  # recorded by _guarded once this returns; the sinks must know now
            raise
        finally:
            self._ended_at = time.perf_counter()
            self._close_sinks(failed)

    def _drain_inferred(self) -> None:
        """On stop, still write the frames the engine already finished (cheap: decode and sinks)."""
        while not self._skip_queued.is_set():
            try:
                item = self._maps.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Inferred):
                self._process(item)

    def _process(self, item: _Inferred) -> None:
        captured = item.captured
        timings = captured.timings
        settings = self.settings  # one read per frame: the viewer may swap it while we run
        started = time.perf_counter()
        poses = poses_from_maps(item.heatmaps, item.tags, item.letterbox, self.schema, settings.decode)
        decoded_at = time.perf_counter()
        if self.tracker is not None:
            tracked = _every_person(poses, self.tracker.update(poses, captured.frame.timestamp))
        else:
            tracked = [untracked(pose) for pose in poses]
        tracked_at = time.perf_counter()
        timings["decode"] = decoded_at - started
        timings["track"] = tracked_at - decoded_at
        result = FrameResult(
            frame=captured.frame,
            tracked=tracked,
            heatmaps=item.heatmaps if settings.keep_heatmaps else None,
            timings=timings,
            dropped=self._dropped,
            letterbox=item.letterbox,
        )
        for sink in self.sinks:
            sink.write(result)
        done = time.perf_counter()
        timings["sinks"] = done - tracked_at
        timings["latency"] = done - captured.started
        self._frames_done += 1
        self._people += len(tracked)
        self._track_ids.update(t.track_id for t in tracked if is_confirmed(t))
        for stage in STAGES:
            self._stage_seconds[stage] += timings.get(stage, 0.0)

    def _close_sinks(self, failed: bool = False) -> None:
        """Close every sink. File outputs (output_paths.FileSink) are closed in two steps, so that a run replaces
        the earlier files of its output names only when every output is complete: all are finished under
        their temporary names, then, if nothing in the run failed (a stop by the user is not a failure),
        all are renamed into place; else none is, and what is valid of them is kept under the temporary
        names, which a warning lists."""
        if self._closed_sinks:
            return
        self._closed_sinks = True
        for sink in self.sinks:
            try:
                finish = getattr(sink, "finish", None)
                finish() if finish is not None else sink.close()
            except BaseException as error:  # noqa: BLE001 - close the others, surface in join()
                log.debug("closing sink %r failed", sink, exc_info=True)
                self._record(error)
        kept = []
        for sink in self.sinks:
            if not hasattr(sink, "publish"):
                continue
            with self._errors_lock:
                failed = failed or bool(self._errors)
            try:
                if failed:
                    kept.extend(sink.abandon())
                else:
                    sink.publish()
            except BaseException as error:  # noqa: BLE001 - surface in join(); the rest are abandoned
                log.debug("publishing sink %r failed", sink, exc_info=True)
                self._record(error)
        if kept:
            log.warning("the run failed, so no output replaced a file of its name; what it wrote is kept in %s",
                        ", ".join(str(path) for path in kept))

    def _record(self, error: BaseException) -> None:
        with self._errors_lock:
            self._errors.append(error)


def _every_person(poses: list, confirmed: list[TrackedPose]) -> list[TrackedPose]:
    """Every decoded person, in decoder order: the tracker reports only confirmed tracks (a few
    matches in), so the others -- the first frames of a run, a folder of unrelated photos -- are
    added without an ID rather than left out of the outputs."""
    by_pose = {id(tracked.pose): tracked for tracked in confirmed}
    return [by_pose.get(id(pose)) or untracked(pose) for pose in poses]


def untracked(pose) -> TrackedPose:
    """A pose without an identity (no tracking, or a track not confirmed yet): no ID, age 0, keypoints as
    detected."""
    from tagtrack.tracker import TrackedPose

    return TrackedPose(pose=pose, track_id=None, age=0, keypoints_smoothed=pose.keypoints)


def is_confirmed(tracked: TrackedPose) -> bool:
    """Whether the tracker confirmed this person's track (a few matches in): only then does it carry an ID,
    and only then is it written as a track (MOT rows, counted track IDs); the others are written without one."""
    return tracked.track_id is not None
