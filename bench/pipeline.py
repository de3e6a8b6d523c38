"""`tagtrack bench run`: how fast the real-time pipeline is, and whether it leaks.

- model-only FPS: engine.infer on one fixed batch in a loop (what the network alone sustains);
- end-to-end FPS: frames through capture -> inference -> decode + track -> sinks, per-stage times
  measured inside that run, each thread's own throughput (1 / the sum of its stages) and the ratio
  of the pipeline's throughput to its slowest thread's (1.0 = the threads overlap perfectly);
- soak: N generated frames with tracking, JSON Lines and every export (COCO, PoseTrack, OpenPose);
  resident memory at start, middle, end.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from tagtrack.bench.machine import cpu_description
from tagtrack.realtime.pipeline import FrameResult, RunSummary
from tagtrack.realtime.sources import Frame


SOAK_EXPORTS = ("coco", "posetrack", "openpose")


class GeneratedSource:
    """Lossless synthetic frames: people-like stick figures walking over a textured background.

    Frames are drawn fresh every time (no cache), so a long run allocates like a real video does.
    """

    is_live = False

    def __init__(self, frames: int, frame_hw: tuple[int, int] = (480, 640), fps: float = 30.0,
                 people: int = 3, seed: int = 0) -> None:
        self.frame_count: int | None = frames
        self.fps: float | None = fps
        self.frame_hw = frame_hw
        rng = np.random.default_rng(seed)
        height, width = frame_hw
        self._background = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 3)
        self._starts = rng.uniform((0.1 * width, 0.3 * height), (0.9 * width, 0.7 * height), size=(people, 2))
        self._velocity = rng.uniform(-2.0, 2.0, size=(people, 2))
        self._index = 0

    def read(self) -> Frame | None:
        if self._index >= self.frame_count:
            return None
        image = self._background.copy()
        height, width = self.frame_hw
        scale = height / 6
        for start, velocity in zip(self._starts, self._velocity):
            x, y = start + velocity * self._index
            x, y = x % width, y % height  # wrap around so people stay in view
            head, hip = (int(x), int(y - scale)), (int(x), int(y + 0.3 * scale))
            cv2.circle(image, head, int(0.2 * scale), (200, 180, 160), -1)
            cv2.line(image, head, hip, (60, 60, 200), max(2, int(0.12 * scale)))
            for dx in (-1, 1):
                cv2.line(image, (int(x), int(y - 0.6 * scale)), (int(x + dx * 0.5 * scale), int(y)), (60, 200, 60), 3)
                cv2.line(image, hip, (int(x + dx * 0.4 * scale), int(y + scale)), (200, 60, 60), 3)
        index = self._index
        self._index += 1
        return Frame(image=image, index=index, timestamp=index / self.fps, source_id="generated")

    def close(self) -> None:
        pass


def model_only_fps(engine, iterations: int = 50, warmup_seconds: float = 1.0) -> float:
    """Frames per second of engine.infer alone on one batch of 1, after at least 10 calls and
    `warmup_seconds` of warm-up (oneDNN / cuDNN pick their kernels on the first calls)."""
    from tagtrack.model.transforms import Letterbox, to_network_input

    height, width = engine.input_hw
    image = GeneratedSource(1, (480, 640)).read().image
    batch = to_network_input(Letterbox.fit(image.shape[:2], (height, width)).apply(image))[None]
    result: list[float] = []

    def measure() -> None:
        started = time.perf_counter()
        calls = 0
        while calls < 10 or time.perf_counter() - started < warmup_seconds:
            engine.infer(batch)
            calls += 1
        started = time.perf_counter()
        for _ in range(iterations):
            engine.infer(batch)
        result.append(iterations / (time.perf_counter() - started))

    # On a worker thread, as in the pipeline: torch's CPU thread pool behaves differently on the
    # main thread (all cores) than on a worker, and the comparison must be like for like.
    worker = threading.Thread(target=measure, name="bench-model-only")
    worker.start()
    worker.join()
    if not result:
        raise RuntimeError("model-only measurement failed (see the log)")
    return result[0]


@dataclass
class BenchReport:
    engine: str
    input_hw: tuple[int, int]
    model_fps: float
    summary: RunSummary
    machine: str = ""  # bench.machine.cpu_description() at the start of the run
    preprocess: PreprocessTiming | None = None
    augment: str = ""  # the run's --flip / --scales, "" without

    def format(self) -> str:
        summary = self.summary
        lines = [
            self.machine,
            f"engine {self.engine}  input {self.input_hw[0]}x{self.input_hw[1]}",
            *([f"test-time {self.augment}: model only is the scale-1 input alone; each frame's letterboxing and "
               "every network run count as infer"] if self.augment else []),
            f"model only   {self.model_fps:7.1f} FPS",
            f"end to end   {summary.fps:7.1f} FPS ({summary.frames} frames, {summary.people} people, "
            f"{summary.tracks} tracks, {summary.dropped} dropped)",
        ]
        if summary.frames:
            lines.append("per stage (ms/frame): " + "  ".join(
                f"{stage} {1000 * seconds / summary.frames:.2f}" for stage, seconds in summary.stage_seconds.items()))
            lines.append("per thread (FPS alone): " + "  ".join(
                f"{thread} {fps:.1f}" for thread, fps in summary.thread_fps().items()))
            lines.append(f"pipeline / slowest thread: {100 * summary.slowest_stage_ratio():.0f}% (target >= 85%)")
        if self.preprocess is not None:
            lines.append(self.preprocess.format())
        return "\n".join(lines)


@dataclass
class PreprocessTiming:
    """Preprocessing alone on the same frames: CPU ms median now and before issue 17 (bench.baseline)."""

    frames: int
    image_hw: tuple[int, int]
    cpu_ms: float
    baseline_cpu_ms: float

    def format(self) -> str:
        return (f"preprocess alone, {self.image_hw[1]}x{self.image_hw[0]} frames, CPU ms median over {self.frames}: "
                f"{self.cpu_ms:.2f} (before issue 17: {self.baseline_cpu_ms:.2f}, x{self.baseline_cpu_ms / max(self.cpu_ms, 1e-9):.2f})")


def time_preprocessing(images: list[np.ndarray], input_hw: tuple[int, int], repeats: int = 3) -> PreprocessTiming:
    """CPU time per frame of the pipeline's preprocessing and of today's before issue 17, frame by frame in turn."""
    from tagtrack.bench.baseline import baseline_preprocess
    from tagtrack.model.transforms import Letterbox, Preprocessor

    preprocess = Preprocessor(input_hw)
    ours, before = [], []
    for _ in range(repeats):
        for image in images:
            started = time.process_time()
            preprocess(image)
            ours.append(time.process_time() - started)
            started = time.process_time()
            baseline_preprocess(Letterbox.fit(image.shape[:2], input_hw), image)
            before.append(time.process_time() - started)
    return PreprocessTiming(len(images), tuple(images[0].shape[:2]), 1e3 * statistics.median(ours),
                            1e3 * statistics.median(before))


def _first_images(source, count: int) -> list[np.ndarray]:
    images = []
    try:
        while len(images) < count and (frame := source.read()) is not None:
            images.append(frame.image)
    finally:
        source.close()
    return images


def _run_pipeline(options, source, engine, extra_sinks=(), tracker=None) -> RunSummary:
    """`source` through the pipeline `tagtrack run` builds for `options` (realtime/run.py: build_pipeline), without
    a progress bar (the bench prints its own report)."""
    from tagtrack.realtime.run import build_pipeline

    return build_pipeline(replace(options, progress=False), engine, list(extra_sinks), source=source,
                          tracker=tracker).run()


def bench_pipeline(options, frames: int = 200, frame_hw: tuple[int, int] = (480, 640), engine=None) -> BenchReport:
    """Model-only FPS, then one end-to-end run of `options.source` (or `frames` generated frames)."""
    from tagtrack.realtime.run import check_options, open_run_source, run_model
    from tagtrack.realtime.sources import open_source

    check_options(options)
    machine = cpu_description()
    if engine is None:
        engine = run_model(options)[0]
    model_fps = model_only_fps(engine)
    source = open_run_source(options) if options.source else GeneratedSource(frames, frame_hw)
    # A short warm-up run first: the first decode and track calls import and initialise libraries,
    # a one-time cost that would otherwise count as a pipeline stall.
    warmup_options = replace(options, out=None, json=None, formats=[])
    _run_pipeline(warmup_options, GeneratedSource(20, frame_hw), engine)
    summary = _run_pipeline(options, source, engine)
    images = _first_images(open_source(options.source) if options.source else GeneratedSource(50, frame_hw), 50)
    preprocess = time_preprocessing(images, tuple(engine.input_hw)) if images else None
    augment = " ".join([*(["flip"] if options.flip else []),
                        *([f"scales {' '.join(f'{s:g}' for s in options.scales)}"] if tuple(options.scales) != (1.0,)
                          else [])])
    return BenchReport(getattr(engine, "name", type(engine).__name__), tuple(engine.input_hw), model_fps, summary,
                       machine, preprocess, augment)


def resident_memory_mb() -> float:
    """This process's resident set size (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MemorySampler:
    """A sink that records resident memory after chosen frame indices."""

    def __init__(self, at_frames: list[int]) -> None:
        self.at_frames = set(at_frames)
        self.samples: dict[int, float] = {}

    def write(self, result: FrameResult) -> None:
        if result.frame.index in self.at_frames:
            self.samples[result.frame.index] = resident_memory_mb()

    def close(self) -> None:
        pass


@dataclass
class SoakReport:
    frames: int
    summary: RunSummary
    rss_mb: dict[int, float] = field(default_factory=dict)
    json_lines: int = 0

    def format(self) -> str:
        samples = "  ".join(f"frame {index}: {mb:.1f} MB" for index, mb in sorted(self.rss_mb.items()))
        values = [mb for _, mb in sorted(self.rss_mb.items())]
        growth = values[-1] - values[0] if len(values) >= 2 else float("nan")
        return "\n".join([
            f"soak: {self.summary.frames} of {self.frames} frames at {self.summary.fps:.1f} FPS, "
            f"{self.summary.people} people, {self.summary.tracks} tracks, {self.json_lines} JSON lines",
            f"resident memory  {samples}",
            f"growth from start to end: {growth:+.1f} MB",
        ])


def _accept_everything_tracker():
    """A tracker that turns every decoded person into a track, however weak: with random or
    untrained weights the decoded people score far below the normal thresholds, and the soak must
    still create, match and retire tracks all the time to show that none of it accumulates."""
    from tagtrack.tracker import PoseTracker, TrackerConfig

    return PoseTracker(TrackerConfig(high_score=0.0, low_score=0.0, new_track_score=0.0, confirm_hits=1))


def soak(options, frames: int, frame_hw: tuple[int, int] = (240, 320), engine=None) -> SoakReport:
    """`frames` generated frames through the full pipeline (a tracker that keeps every person unless
    --no-track, JSON Lines to a temporary file), with resident memory sampled after the warm-up, at
    the middle and at the end."""
    from tagtrack.realtime.sinks import is_header

    if engine is None:
        from tagtrack.realtime.run import run_model

        engine = run_model(options)[0]
    start_at = min(100, max(0, frames // 10))
    sampler = MemorySampler([start_at, frames // 2, frames - 1])
    with tempfile.TemporaryDirectory(prefix="tagtrack-soak-") as folder:
        json_path = Path(folder) / "soak.jsonl"
        # Every export on: COCO and PoseTrack are streamed to disk, so they must not grow memory either.
        soak_options = replace(options, json=json_path, out=None, formats=list(SOAK_EXPORTS), progress=False)
        summary = _run_pipeline(soak_options, GeneratedSource(frames, frame_hw), engine, [sampler],
                                tracker=_accept_everything_tracker() if options.track else None)
        with open(json_path, encoding="utf-8") as lines:  # frame lines, after the settings header
            json_lines = sum(1 for line in lines if not is_header(json.loads(line)))
    return SoakReport(frames, summary, sampler.samples, json_lines)
