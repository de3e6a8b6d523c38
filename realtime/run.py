"""Assembling a pipeline for `tagtrack run` and `tagtrack bench run`: outputs checked first, then
the source, the engine, the tracker and the sinks, in the order that fails fastest on bad input."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tagtrack.model.errors import UserFacingError
from tagtrack.realtime.pipeline import Pipeline, PipelineSettings, Sink
from tagtrack.realtime.sinks import (
    EXPORT_FORMATS,
    AnnotatedVideoSink,
    JsonLinesSink,
    ProgressBarSink,
    check_output_path,
    export_sinks,
)
from tagtrack.realtime.sources import Source, open_source

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    source: str
    weights: Path | None = None
    out: Path | None = None  # annotated video
    json: Path | None = None  # JSON Lines
    formats: list[str] = field(default_factory=list)  # coco, posetrack, openpose
    engine: str = "auto"
    device: str = "auto"
    fp16: bool = False
    track: bool = True
    boxes: bool = False
    input_hw: tuple[int, int] | None = None
    detection_threshold: float | None = None
    tag_threshold: float | None = None
    max_frames: int | None = None
    progress: bool = True
    queue_size: int = 4


def export_base(options: RunOptions) -> Path:
    """Where `--format` exports go: beside --json, else beside --out, else <source name> here."""
    if options.json is not None:
        return options.json.with_suffix("")
    if options.out is not None:
        return options.out.with_suffix("")
    name = Path(options.source.rstrip("/")).stem or "poses"
    return Path(name if name.replace("_", "").isalnum() else "poses")


def output_paths(options: RunOptions) -> list[Path]:
    """Every file or folder a run writes, for the closing message."""
    paths = [path for path in (options.out, options.json) if path is not None]
    base = export_base(options)
    names = {"coco": base.name + ".coco.json", "posetrack": base.name + ".posetrack.json",
             "openpose": base.name + "_openpose", "mot": base.name + ".mot.txt"}
    paths.extend(base.with_name(names[name]) for name in dict.fromkeys(options.formats) if name in names)
    return paths


def check_options(options: RunOptions) -> None:
    """Every argument error before anything is opened or loaded."""
    for name in options.formats:
        if name not in EXPORT_FORMATS:
            raise UserFacingError(f"unknown --format {name!r} (choose from {', '.join(EXPORT_FORMATS)})")
    if options.out is not None:
        check_output_path(options.out, "--out")
        if options.out.suffix.lower() not in (".mp4", ".m4v", ".mov"):
            raise UserFacingError(f"--out {options.out}: give an .mp4 file name (mp4v codec)")
    if options.json is not None:
        check_output_path(options.json, "--json")
    if options.formats:
        check_output_path(export_base(options), "--format output")
    if options.max_frames is not None and options.max_frames < 1:
        raise UserFacingError(f"--max-frames must be at least 1, got {options.max_frames}")
    for name, value in (("--detection-threshold", options.detection_threshold),
                        ("--tag-threshold", options.tag_threshold)):
        if value is not None and not value >= 0:
            raise UserFacingError(f"{name} must be 0 or more, got {value}")


class LimitedSource:
    """The first `limit` frames of another source (--max-frames)."""

    def __init__(self, source: Source, limit: int) -> None:
        self.source = source
        self.limit = limit
        self.is_live = source.is_live
        self.fps = source.fps
        count = getattr(source, "frame_count", None)
        self.frame_count = limit if count is None else min(count, limit)
        self._read = 0

    def read(self):
        if self._read >= self.limit:
            return None
        self._read += 1
        return self.source.read()

    def close(self) -> None:
        self.source.close()


def decode_config(options: RunOptions):
    from dataclasses import replace

    from tagtrack.model.codec import DecodeConfig

    config = DecodeConfig()
    if options.detection_threshold is not None:
        config = replace(config, detection_threshold=options.detection_threshold)
    if options.tag_threshold is not None:
        config = replace(config, tag_threshold=options.tag_threshold)
    return config


def make_tracker(enabled: bool):
    if not enabled:
        return None
    from tagtrack.tracker import PoseTracker, TrackerConfig

    return PoseTracker(TrackerConfig())


def output_sinks(options: RunOptions, source: Source, schema) -> list[Sink]:
    sinks: list[Sink] = []
    try:
        if options.out is not None:
            sinks.append(AnnotatedVideoSink(options.out, source.fps, schema, draw_boxes=options.boxes))
        if options.json is not None:
            sinks.append(JsonLinesSink(options.json, schema))
        if options.formats:
            sinks.extend(export_sinks(options.formats, export_base(options), schema))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def build_pipeline(options: RunOptions, engine=None, extra_sinks: list[Sink] | None = None) -> Pipeline:
    """Check the options, open the source, create the engine (unless given), tracker and sinks."""
    from tagtrack.model.schema import COCO17

    check_options(options)
    settings = PipelineSettings(decode=decode_config(options))
    source: Source = open_source(options.source)
    sinks: list[Sink] = []
    try:
        if options.max_frames is not None:
            source = LimitedSource(source, options.max_frames)
        if engine is None:
            from tagtrack.realtime.engines import create_engine

            engine = create_engine(options.engine, options.weights, options.device, options.fp16, options.input_hw)
        schema = getattr(engine, "schema", None) or COCO17
        tracker = make_tracker(options.track)
        # Outputs are opened (existing files replaced) only once everything else has loaded.
        sinks.extend(output_sinks(options, source, schema))
        if options.progress and not source.is_live:
            sinks.append(ProgressBarSink(getattr(source, "frame_count", None)))
        sinks.extend(extra_sinks or [])
    except BaseException:
        for sink in sinks:
            sink.close()
        source.close()
        raise
    return Pipeline(source, engine, schema, settings, tracker, sinks, queue_size=options.queue_size)
