"""Assembling a pipeline: the one builder `tagtrack run`, the API, `tagtrack view` and the benches use.

`build_pipeline` checks the outputs first, then opens the source, loads the engine (`run_model`: the engine and
its effective settings, what the viewer and the API load too), then the tracker and the sinks, in the order
that fails fastest on bad input. A new pipeline stage or output is added here (and in realtime/pipeline.py, or an output's
module: realtime/exports.py for a --format), once for every command.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tagtrack.model.errors import UserFacingError
from tagtrack.model.predict import check_scales, scaled_input_hw
from tagtrack.model.settings import Layer, Settings, resolve_settings
from tagtrack.realtime.pipeline import FrameAugment, Pipeline, PipelineSettings, Sink
from tagtrack.realtime.sinks import (
    VIDEO_CODECS,
    AnnotatedVideoSink,
    JsonLinesSink,
    check_export_schema,
    check_output_path,
    discard_outputs,
    export_paths,
    export_sinks,
    progress_sink,
    refuse_overwriting,
)
from tagtrack.realtime.sources import Source, input_paths, open_source

if TYPE_CHECKING:
    from tagtrack.realtime.engines import Engine

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    source: str
    weights: Path | None = None
    out: Path | None = None  # annotated video
    json: Path | None = None  # JSON Lines
    formats: list[str] = field(default_factory=list)  # names of sinks.EXPORT_FORMATS
    engine: str = "auto"
    device: str = "auto"
    fp16: bool = False
    track: bool = True
    boxes: bool = False
    input_hw: tuple[int, int] | None = None
    max_frames: int | None = None
    # Test-time augmentation of every frame (`predict`'s, model/predict.py: image_maps): the mirrored input
    # averaged in, and inputs at these multiples of input_hw (each size its own engine of the run's kind).
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    # The settings layers above the model's stored settings, lowest first (model/settings.py: user_layers):
    # --config, the named flags and --set, or the API's keywords and settings=.
    settings: list[Layer] = field(default_factory=list)
    config: Path | None = None  # the --config file `settings` came from: an input, never overwritten
    codec: str | None = None  # annotated video: h264 (PyAV) or mp4v; None: h264 where PyAV is installed
    strict: bool = False  # an unreadable image in a folder stops the run instead of being skipped
    progress: bool = True  # a bar on a terminal, a few lines otherwise
    queue_size: int = 4
    stream_timeout: float | None = None  # seconds a stream may send nothing (None: sources.DEFAULT_STREAM_TIMEOUT)


def counted(count: int, singular: str, plural: str) -> str:
    """"1 person", "3 people": a count worded for its number."""
    return f"{count} {singular if count == 1 else plural}"


def export_base(options: RunOptions) -> Path:
    """Where `--format` exports go: beside --json, else beside --out, else <source name> here."""
    if options.json is not None:
        return options.json.with_suffix("")
    if options.out is not None:
        return options.out.with_suffix("")
    name = Path(options.source.rstrip("/")).stem or "poses"
    return Path(name if name.replace("_", "").isalnum() else "poses")


def labelled_outputs(options: RunOptions) -> dict[str, Path]:
    """Every file or folder a run writes, by the option that asks for it."""
    outputs = {label: path for label, path in (("--out", options.out), ("--json", options.json)) if path is not None}
    if options.formats:
        outputs |= export_paths(options.formats, export_base(options))
    return outputs


def output_paths(options: RunOptions) -> list[Path]:
    """Every file or folder a run writes, for the closing message."""
    return list(labelled_outputs(options).values())


def run_settings(settings: Settings, options: RunOptions, engine: Engine) -> dict:
    """What the outputs record about how they were made (the JSON Lines header, the exports' settings)."""
    record = settings.to_dict()
    if not options.track:
        record["tracker"] = None
    weights = engine.weights or options.weights
    return record | {"input_hw": [int(side) for side in engine.input_hw], "weights": str(weights) if weights else None,
                     "keypoints": list(engine.schema.keypoint_names), "flip": options.flip,
                     "scales": [float(scale) for scale in options.scales]}


def check_options(options: RunOptions) -> None:
    """Every argument error before anything is opened or loaded."""
    if options.formats:
        export_paths(options.formats, Path("poses"))  # an unknown --format is named here
    if options.stream_timeout is not None and not 0 < options.stream_timeout < float("inf"):
        raise UserFacingError(f"--stream-timeout must be a positive number of seconds, got {options.stream_timeout}")
    if options.codec is not None and options.codec not in VIDEO_CODECS:
        raise UserFacingError(f"unknown --codec {options.codec!r} (choose from {', '.join(VIDEO_CODECS)})")
    if options.out is not None:
        check_output_path(options.out, "--out")
        if options.out.suffix.lower() not in (".mp4", ".m4v", ".mov"):
            raise UserFacingError(f"--out {options.out}: give an .mp4 file name")
    if options.json is not None:
        check_output_path(options.json, "--json")
    if options.formats:
        check_output_path(export_base(options), "--format output")
    if options.max_frames is not None and options.max_frames < 1:
        raise UserFacingError(f"--max-frames must be at least 1, got {options.max_frames}")
    check_scales(options.scales, "--scales")
    if options.input_hw is not None:
        from tagtrack.model.config import check_input_size
        from tagtrack.realtime.engines import check_input_limit

        check_input_limit(check_input_size(options.input_hw, "--input-size"))
    resolve_settings(None, options.settings)  # over the defaults; again over the model's stored ones, once loaded
    sources = input_paths(options.source or "")
    inputs = {("SOURCE" if len(sources) == 1 else f"SOURCE image {path}"): path for path in sources}
    if options.weights is not None:
        inputs["--weights"] = options.weights
    if options.config is not None:
        inputs["--config"] = options.config
    refuse_overwriting(inputs, labelled_outputs(options))


class LimitedSource:
    """The first `limit` frames of another source (--max-frames)."""

    def __init__(self, source: Source, limit: int) -> None:
        self.source = source
        self.limit = limit
        self.is_live = source.is_live
        self.fps = source.fps
        self.frame_hw = getattr(source, "frame_hw", None)
        count = getattr(source, "frame_count", None)
        self.frame_count = limit if count is None else min(count, limit)
        self._read = 0

    @property
    def skipped(self) -> list[Path]:
        return getattr(self.source, "skipped", [])

    def read(self):
        if self._read >= self.limit:
            return None
        self._read += 1
        return self.source.read()

    def close(self) -> None:
        self.source.close()


def make_tracker(config, schema):
    """A PoseTracker with `config` (a TrackerConfig) for `schema`'s keypoints; None: no tracking."""
    if config is None:
        return None
    from tagtrack.tracker import PoseTracker

    return PoseTracker(config, schema)


def output_sinks(options: RunOptions, source: Source, schema, settings: dict | None = None) -> list[Sink]:
    """The run's file outputs; `settings` (run_settings) is written with the results."""
    sinks: list[Sink] = []
    try:
        if options.out is not None:
            sinks.append(AnnotatedVideoSink(options.out, source.fps, schema, draw_boxes=options.boxes,
                                            codec=options.codec))
        if options.json is not None:
            sinks.append(JsonLinesSink(options.json, schema, settings))
        if options.formats:
            sinks.extend(export_sinks(options.formats, export_base(options), schema, settings))
    except BaseException:
        discard_outputs(sinks)
        raise
    return sinks


def open_run_source(options: RunOptions) -> Source:
    """The options' source, cut to --max-frames."""
    source: Source = open_source(options.source, strict=options.strict, stream_timeout=options.stream_timeout)
    if options.max_frames is not None:
        source = LimitedSource(source, options.max_frames)
    return source


def run_model(options: RunOptions, engine: Engine | None = None,
              frame_hw: tuple[int, int] | None = None) -> tuple[Engine, Settings]:
    """The engine (loaded from the options unless given) and the settings it runs with: its model's stored
    settings under the options' layers. Without --input-size the input's shape follows frame_hw, the source's
    frames (portrait video -> portrait input). An engine loaded here is closed again if its settings fail."""
    loaded = engine is None
    if engine is None:
        from tagtrack.realtime.engines import create_engine

        engine = create_engine(options.engine, options.weights, options.device, options.fp16, options.input_hw,
                               frame_hw=frame_hw)
    try:
        return engine, resolve_settings(engine.stored_settings, options.settings)
    except BaseException:
        if loaded:
            engine.close()
        raise


def build_pipeline(options: RunOptions, engine: Engine | None = None, extra_sinks: list[Sink] | None = None, *,
                   source: Source | None = None, tracker=None,
                   wrap_sink: Callable[[Sink], Sink] | None = None,
                   sized_engines: EnginesBySize | None = None) -> Pipeline:
    """Check the options, open the source (unless given: a bench's generated frames), load the engine (unless
    given), make the tracker (unless given) and the sinks: the options' outputs (each passed through
    `wrap_sink`, a bench's timer), the progress, then `extra_sinks`. `sized_engines`: the engines of the
    options' test scales, already loaded by the caller (the API's PoseEstimator), who also closes them.

    The decoder and tracker settings start from those stored with the engine's model; a model whose keypoints
    an asked-for output cannot write is refused before any output is opened."""
    check_options(options)
    if source is None:
        source = open_run_source(options)
    sinks: list[Sink] = []
    augment = None
    try:
        engine, settings = run_model(options, engine, frame_hw=getattr(source, "frame_hw", None))
        check_export_schema(options.formats, engine.schema)
        if tracker is None:
            tracker = make_tracker(settings.tracker if options.track else None, engine.schema)
        augment = frame_augment(options, engine, sized_engines)  # other scales' engines load before any output
        # Outputs are opened (existing files replaced) only once everything else has loaded.
        sinks.extend(output_sinks(options, source, engine.schema, run_settings(settings, options, engine)))
        if wrap_sink is not None:
            sinks = [wrap_sink(sink) for sink in sinks]
        if options.progress and not source.is_live:
            sinks.append(progress_sink(getattr(source, "frame_count", None)))
        sinks.extend(extra_sinks or [])
    except BaseException:
        discard_outputs(sinks)  # nothing was processed: earlier files of the output names stay as they were
        if augment is not None and augment.release is not None:
            augment.release()
        source.close()
        raise
    return Pipeline(source, engine, engine.schema, PipelineSettings(decode=settings.decode), tracker, sinks,
                    queue_size=options.queue_size, augment=augment)


def frame_augment(options: RunOptions, engine: Engine,
                  sized_engines: EnginesBySize | None = None) -> FrameAugment | None:
    """The pipeline's test-time augmentation for --flip / --scales (None: the engine's one input), over
    `sized_engines` where given (their owner closes them), else over engines loaded here and closed with the run."""
    scales = check_scales(options.scales, "--scales")
    if not options.flip and scales == (1.0,):
        return None
    if sized_engines is not None:
        return FrameAugment(sized_engines, options.flip, scales)
    engines = EnginesBySize(engine, options, scales)
    return FrameAugment(engines, options.flip, scales, release=engines.close)


class EnginesBySize:
    """An InferFn over one model's engines at every test scale's input size (`predict.scaled_input_hw` of the
    engine's), of the run's engine's kind (ONNX Runtime and TensorRT engines run the one size they were built
    for; each size has its own cache entry): a batch goes to the engine of its size. close() closes the engines
    opened here, not the run's own."""

    def __init__(self, engine: Engine, options: RunOptions, scales: tuple[float, ...]) -> None:
        from tagtrack.realtime.engines import ENGINE_CLASSES, create_engine

        kind = next((name for name, cls in ENGINE_CLASSES.items() if isinstance(engine, cls)), "torch")
        weights = engine.weights or options.weights
        self.engines: dict[tuple[int, int], Engine] = {tuple(engine.input_hw): engine}
        self.opened: list[Engine] = []
        try:
            for size in (scaled_input_hw(tuple(engine.input_hw), scale) for scale in scales):
                if size not in self.engines:
                    self.engines[size] = create_engine(kind, weights, options.device, options.fp16, size)
                    self.opened.append(self.engines[size])
        except BaseException:
            self.close()
            raise

    def __call__(self, batch):
        return self.engines[tuple(batch.shape[2:])].infer(batch)

    def close(self) -> None:
        for engine in self.opened:
            engine.close()
        self.opened = []
