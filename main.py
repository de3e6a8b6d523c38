"""tagtrack: real-time multi-person pose estimation and tracking with associative embedding.

One CLI for everything a user runs: predict, run, view, train, eval, label, export, bench.
Each command's parser and handler sit together below; the work itself lives in the packages.
Handlers import lazily so that `tagtrack --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tagtrack.model.errors import UserFacingError

log = logging.getLogger(__name__)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
WEIGHTS_HELP = ("checkpoint (.safetensors), or a bundled model: default (the general model; also named general), "
                "pretrained (MoveNet's network and weights with our tags: far more accurate on photos, athletes and "
                "close-ups, weaker on small walkers' tracks, slower), wide (the general model widened: more accurate, "
                "about 1.6x slower) or street (street scenes only); default: default")


# ---------------------------------------------------------------- predict, export (model/)


def add_predict_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("predict", help="find the people in one image: JSON records and a drawn image")
    p.add_argument("image", help="image file (jpg, png, ...)")
    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    p.add_argument("--json", default=None, metavar="OUT_JSON",
                   help="write the image's people as one JSON Lines record (the layout `run --json` writes per frame, "
                        "realtime/pose_jsonl.schema.json; track_id null)")
    p.add_argument("--draw", default=None, metavar="OUTDIR",
                   help="write the image with the poses drawn to OUTDIR/<image name>_poses.png")
    p.add_argument("--flip", action="store_true", help="flip test: also run the mirrored image and average")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], metavar="S",
                   help="test scales, e.g. 1.0 0.5 (default 1.0)")
    _add_decode_arguments(p)
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="network input height and width, multiples of 64 (default: the checkpoint's pixels in "
                        "the shape that covers the image best, as `run` picks for a video)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(handler=_predict)


def _predict(args: argparse.Namespace) -> int:
    import dataclasses
    import time
    from pathlib import Path

    from tagtrack.model.config import check_input_size
    from tagtrack.model.files import read_image
    from tagtrack.realtime.api import PoseEstimator
    from tagtrack.realtime.draw import draw_poses
    from tagtrack.realtime.run import counted, run_settings
    from tagtrack.realtime.sinks import refuse_overwriting, write_image, write_image_record

    if args.input_size:
        from tagtrack.realtime.engines import check_input_limit

        check_input_limit(check_input_size(args.input_size, "--input-size"))
    if min(args.scales) <= 0:
        raise UserFacingError("--scales must be positive")
    layers = _settings_layers(args)
    outputs = {}
    if args.json:
        outputs["--json"] = Path(args.json)
    if args.draw:
        outputs["--draw"] = Path(args.draw) / f"{Path(args.image).stem}_poses.png"
    inputs = {"IMAGE": Path(args.image)} | ({"--weights": Path(args.weights)} if args.weights else {})
    inputs |= {"--config": Path(args.config)} if args.config else {}
    refuse_overwriting(inputs, outputs)
    image = read_image(args.image)
    # Without --input-size the image's shape picks the input, as `run` does for a video (portrait for portrait).
    estimator = PoseEstimator(args.weights, engine="torch", device=args.device, input_size=args.input_size,
                              flip=args.flip, scales=args.scales, settings_layers=layers, frame_hw=image.shape[:2])
    input_hw = estimator.input_size

    start = time.perf_counter()
    poses = estimator.predict_poses(image)
    elapsed = time.perf_counter() - start

    written = []
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        # What `run` records (no tracker: one image), and the test-time augmentation.
        untracked = dataclasses.replace(estimator.options, track=False)
        record = run_settings(estimator.settings, untracked, estimator.engine) | {"flip": args.flip,
                                                                                  "scales": list(args.scales)}
        write_image_record(out, image, str(args.image), poses, estimator.schema, settings=record)
        written.append(str(out))
    if args.draw:
        out_dir = Path(args.draw)
        out_dir.mkdir(parents=True, exist_ok=True)
        drawn_path = out_dir / f"{Path(args.image).stem}_poses.png"
        write_image(drawn_path, draw_poses(image.copy(), poses, estimator.schema, draw_boxes=False))
        written.append(str(drawn_path))
    scores = ", ".join(f"{pose.score:.2f}" for pose in poses[:10]) + (" ..." if len(poses) > 10 else "")
    print(f"{counted(len(poses), 'person', 'people')} in {args.image} ({image.shape[1]}x{image.shape[0]}, input {input_hw[0]}x{input_hw[1]}, "
          f"{elapsed * 1e3:.0f} ms){': scores ' + scores if poses else ''}")
    for path in written:
        print(f"wrote {path}")
    return 0


def add_export_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("export", help="write the network as ONNX (and a TensorRT engine with --trt)")
    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    p.add_argument("--onnx", required=True, help="output ONNX file")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="network input height and width, multiples of 64 (default: the checkpoint's)")
    p.add_argument("--batch", type=int, default=1, help="static batch size of the export (default 1)")
    p.add_argument("--trt", default=None, help="also build a TensorRT engine to this file")
    p.add_argument("--fp16", action="store_true", help="let TensorRT use fp16 kernels (with --trt)")
    p.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tagtrack.realtime.engines import export_checkpoint

    result = export_checkpoint(Path(args.weights) if args.weights else None, Path(args.onnx), args.input_size,
                               args.batch, Path(args.trt) if args.trt else None, args.fp16)
    outputs = ", ".join(f"{name} {shape}" for name, shape in result.output_shapes.items())
    print(f"wrote {result.onnx_path}: images {result.input_shape} -> {outputs} (checked with onnxruntime)")
    if result.engine_path is not None:
        print(f"wrote {result.engine_path}: TensorRT engine{' (fp16)' if args.fp16 else ''}")
    return 0


# ---------------------------------------------------------------- run, view (realtime/)


def _add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by `run`, `view` and `bench run`: the model and the engine that runs it."""
    from tagtrack.realtime.backends import AUTO, ENGINE_CHOICES, engine_help

    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    p.add_argument("--engine", choices=ENGINE_CHOICES, default=AUTO, help=engine_help())
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the network runs (auto: cuda when a GPU is usable, else cpu)")
    p.add_argument("--fp16", action="store_true", help="half precision (torch on CUDA, TensorRT)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="network input height and width, multiples of 64 (default: the checkpoint's)")


def _add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by `run` and `bench run`: the model, the engine, tracking and decoding."""
    _add_engine_arguments(p)
    p.add_argument("--no-track", action="store_true", help="no tracking: poses without IDs")
    _add_decode_arguments(p)
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames (default: all)")
    p.add_argument("--stream-timeout", type=float, default=None, metavar="SECONDS",
                   help="a stream URL that sends nothing this long is reconnected, then given up (default 30)")


def _add_decode_arguments(p: argparse.ArgumentParser) -> None:
    """The named settings flags (model/settings.py: FLAGS) and the settings options, shared by `predict`, `eval`,
    `run`, `view` and `bench run`; read by _settings_layers."""
    from tagtrack.model.settings import FLAGS, STORED_DEFAULT

    for flag in FLAGS:
        p.add_argument(flag.option, dest=flag.keyword, type=float, default=None, metavar=flag.metavar,
                       help=f"{flag.help} ({STORED_DEFAULT})")
    _add_settings_arguments(p)


def _add_settings_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="FILE",
                   help="decoder and tracker settings, JSON or TOML: {\"decode\": {\"top_k\": 20}, \"tracker\": "
                        "{\"tag_gate\": 1.0}} (defaults: the model's stored settings, else the built-in ones)")
    p.add_argument("--set", dest="set_values", action="append", default=[], metavar="SECTION.NAME=VALUE",
                   help="one setting, above --config and the flags, e.g. --set decode.top_k=20 --set tracker.tag_gate=1.0 "
                        "(names: DecodeConfig in model/codec.py, TrackerConfig in tracker/config.py) (repeatable)")


def _settings_layers(args: argparse.Namespace) -> list:
    """--config FILE, the named flags, then --set: the layers over the model's stored settings
    (model/settings.py). Every name and value is checked here, before anything is opened or loaded."""
    from tagtrack.model.settings import FLAGS, resolve_settings, user_layers

    flags = {flag.keyword: getattr(args, flag.keyword, None) for flag in FLAGS}
    layers = user_layers(args.config, flags, args.set_values)
    resolve_settings(None, layers)
    return layers


def _quiet_opencv(verbose: bool) -> None:
    """FFmpeg and OpenCV print their own warnings on stderr; keep bad input to our one line."""
    import os

    if not verbose:
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def _run_options(args: argparse.Namespace, **extra):
    from pathlib import Path

    from tagtrack.realtime.run import RunOptions

    return RunOptions(
        source=args.source, weights=Path(args.weights) if args.weights else None, engine=args.engine,
        device=args.device, fp16=args.fp16, track=not args.no_track,
        input_hw=tuple(args.input_size) if args.input_size else None, max_frames=args.max_frames,
        settings=_settings_layers(args),
        config=Path(args.config) if args.config else None, stream_timeout=args.stream_timeout, **extra)


class _StopOnSignal:
    """SIGINT / SIGTERM while a run is on: the first stops the pipeline cleanly (outputs closed and
    valid); a second one skips the frames still queued but never aborts the closing of the outputs.
    Before the pipeline exists SIGINT is an ordinary KeyboardInterrupt and SIGTERM exits 143 (nothing
    to close yet).
    exit_code(): 128 + the signal number, as a shell reports a process ended by that signal."""

    def __init__(self) -> None:
        self.pipeline = None
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "_StopOnSignal":
        import signal

        self._previous = {signum: signal.signal(signum, self._handle) for signum in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc_info) -> None:
        import signal

        if self.signum is not None:
            # Already stopping: a later interrupt must not raise KeyboardInterrupt into the summary or
            # the interpreter's exit, nor kill it there (Python resets its own handlers to the default
            # at exit, but leaves SIG_IGN alone), so the rest of the process ignores them.
            for signum in self._previous:
                signal.signal(signum, signal.SIG_IGN)
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        import signal

        name = signal.Signals(signum).name
        if self.pipeline is None:  # still loading: nothing written yet
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        if self.signum is None:
            self.signum = signum
            print(f"\n{name}: stopping, closing outputs (again: also skip the frames still queued)", file=sys.stderr)
            self.pipeline.stop()
        else:
            print(f"{name} again: skipping queued frames; still closing the outputs so they stay valid", file=sys.stderr)
            self.pipeline.skip_queued()

    def exit_code(self) -> int:
        return 128 + self.signum if self.signum is not None else 0


def _run_until_done(pipeline, signals: _StopOnSignal):
    """Run the pipeline under `signals` (see _StopOnSignal); the engine is closed at the end."""
    signals.pipeline = pipeline
    try:
        return pipeline.run()
    finally:
        close = getattr(pipeline.engine, "close", None)
        if close is not None:
            close()


class _TableNames:
    """An option's choices: the names in a table of another module (`--format`: realtime/sinks.py's EXPORT_FORMATS,
    `--preset`: training/config.py's PRESETS), read only when argparse checks a value or shows the command's help
    (importing those modules takes most of a second; `tagtrack --help` must not). The option needs a metavar, as
    argparse would otherwise read the names while the parser is built; %(choices)s in its help lists them."""

    def __init__(self, module: str, table: str) -> None:
        self.module = module
        self.table = table

    def _names(self) -> tuple[str, ...]:
        import importlib

        return tuple(getattr(importlib.import_module(self.module), self.table))

    def __iter__(self):
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()


def _add_preset_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=_TableNames("tagtrack.training.config", "PRESETS"), default="small",
                   metavar="NAME", help="model + schedule preset: %(choices)s")


def add_run_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "run", help="poses and tracks for a video, image folder, camera or stream, written to files",
        description="Process every frame of SOURCE (a video file, an image folder or glob, a camera index or an "
                    "rtsp/http URL) and write an annotated video, JSON Lines and/or exports.")
    p.add_argument("source", metavar="SOURCE", nargs="+",
                   help="video file, image folder or glob, camera index (0) or URL; several, or folders of videos, "
                        "with --out-dir")
    p.add_argument("--out", default=None, help="annotated video (.mp4); written under a temporary name "
                                                 "(OUT's stem.partial-XXXXXX.mp4) until the run completes")
    p.add_argument("--json", default=None, help="JSON Lines, one line per frame (realtime/pose_jsonl.schema.json)")
    p.add_argument("--format", dest="formats", action="append", metavar="FORMAT", default=[],
                   choices=_TableNames("tagtrack.realtime.sinks", "EXPORT_FORMATS"),
                   help="also export %(choices)s (realtime/sinks.py: EXPORT_FORMATS) beside --json (else --out, else "
                        "SOURCE's name), with the run's settings in <name>.settings.json (repeatable)")
    p.add_argument("--codec", choices=("h264", "mp4v"), default=None,
                   help="video codec of --out (default: h264 through PyAV where installed, else mp4v)")
    p.add_argument("--boxes", action="store_true", help="draw person boxes in the annotated video")
    p.add_argument("--strict", action="store_true",
                   help="stop at an unreadable image in a folder (default: warn, skip it and count it)")
    many = p.add_argument_group("many sources (realtime/batch.py)")
    many.add_argument("--out-dir", default=None, help="one <name>.mp4 and <name>.jsonl (and exports) per source here")
    many.add_argument("--no-video", action="store_true", help="with --out-dir: JSON Lines and exports only")
    many.add_argument("--workers", type=int, default=1, help="process this many files at once (processes)")
    many.add_argument("--ray", default=None, metavar="ADDRESS",
                      help="one Ray task per file on this cluster ('auto', 'ray://host:10001', 'local'; the cluster extra)")
    _add_pipeline_arguments(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    _quiet_opencv(args.verbose)
    if len(args.source) > 1 or args.out_dir or args.workers != 1 or args.ray:
        return _run_many(args)
    args.source = args.source[0]
    options = _run_options(args, out=Path(args.out) if args.out else None,
                           json=Path(args.json) if args.json else None, formats=args.formats, boxes=args.boxes,
                           codec=args.codec, strict=args.strict, progress=not args.quiet)
    nothing_saved = options.out is None and options.json is None and not options.formats
    return _run_and_report(
        options, note="no --out, --json or --format given; poses are computed but not saved" if nothing_saved else None)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _run_many(args: argparse.Namespace) -> int:
    """`run` over several sources: one job per file (realtime/batch.py), a line per finished file, a table."""
    import signal

    from tagtrack.realtime import batch
    from tagtrack.realtime.run import counted

    if not args.out_dir:
        raise UserFacingError("several sources (or --workers/--ray) need --out-dir DIR for their outputs")
    if args.out or args.json:
        raise UserFacingError("--out and --json name one file; with --out-dir every source gets <name>.mp4 and <name>.jsonl")
    sources = batch.expand_sources(args.source)
    template = _run_options(args, formats=args.formats, boxes=args.boxes, progress=args.workers == 1 and not args.ray)
    jobs = batch.plan_jobs(sources, args.out_dir, template, video=not args.no_video)
    where = f"on Ray ({args.ray})" if args.ray else f"{min(args.workers, len(jobs))} worker process(es)"
    print(f"{counted(len(jobs), 'input', 'inputs')} -> {args.out_dir}, {where}")

    def report(result) -> None:
        if result.ok:
            print(f"done {result.source}: {counted(result.frames, 'frame', 'frames')}, "
                  f"{counted(result.people, 'person', 'people')}, {counted(result.tracks, 'track', 'tracks')}",
                  flush=True)
        else:
            print(f"error: {result.source}: {result.error}", file=sys.stderr, flush=True)

    # SIGTERM stops the batch like Ctrl-C: the file being processed keeps valid outputs, the rest do not start.
    # SIGINT is set explicitly too: a process started with it ignored (a script's background job) would
    # otherwise keep ignoring it, as the single-file run does not.
    previous = {signum: signal.signal(signum, _raise_keyboard_interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        results = batch.run_jobs(jobs, args.workers, args.ray, on_result=report)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(batch.format_table(results))
    if any(result.interrupted for result in results):
        return EXIT_INTERRUPTED
    return 0 if all(result.ok for result in results) else EXIT_USER_ERROR


def _run_and_report(options, note: str | None = None) -> int:
    """Build the pipeline for `options` (checking every input first), run it to the end or a stop, then
    print the summary and the files written. `note` goes to stderr once the inputs are known to be good."""
    from tagtrack.realtime.run import build_pipeline, counted, output_paths

    with _StopOnSignal() as signals:
        pipeline = build_pipeline(options)
        if note and options.progress:
            print(f"note: {note}", file=sys.stderr)
        summary = _run_until_done(pipeline, signals)
        skipped = getattr(getattr(pipeline, "source", None), "skipped", [])
        if options.progress:  # --quiet: errors and warnings only
            print(summary.format())
            if skipped:
                print(f"skipped {counted(len(skipped), 'unreadable image', 'unreadable images')}, first {skipped[0]} "
                      "(--strict stops instead)")
            for path in output_paths(options):
                print(f"wrote {path}")
        return signals.exit_code() if summary.interrupted else 0


def add_demo_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "demo", help="the main job on a built-in default: tracked skeletons on a sample video",
        description="Run the bundled default model on the OpenCV sample street scene vtest.avi (found in "
                    "$TAGTRACK_DEMO_VIDEO, ~/.cache/tagtrack where `make vtest` puts it, Debian's opencv-doc, or "
                    "../shared/data) and write OUT_DIR/demo.mp4 (skeletons with track IDs) and OUT_DIR/demo.jsonl, "
                    "then print the run's summary. Without vtest.avi it says how to get it; --video runs any video. "
                    "(An install without the default model file runs a synthetic stick-figure model on a "
                    "generated clip instead.)")
    p.add_argument("--video", default=None, help="use this video instead of vtest.avi")
    p.add_argument("--weights", default=None, help="use this checkpoint instead of the default model")
    p.add_argument("--out-dir", default="out", help="where demo.mp4 and demo.jsonl go (default: out/)")
    p.add_argument("--codec", choices=("h264", "mp4v"), default=None,
                   help="video codec of demo.mp4 (default: h264 through PyAV where installed, else mp4v)")
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    _quiet_opencv(args.verbose)
    from tagtrack.realtime.demo import plan_demo
    from tagtrack.realtime.run import RunOptions

    out_dir = Path(args.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserFacingError(f"cannot create output folder {out_dir}: {error.strerror}") from None
    plan = plan_demo(Path(args.video) if args.video else None, Path(args.weights) if args.weights else None)
    video = plan.video
    if plan.synthetic:
        from tagtrack.training.synthetic_demo import write_demo_video

        print("note: no model for real footage is installed yet (model/weights/default.safetensors); running the "
              "synthetic demo model on a generated clip of stick figures. Use --weights W --video V for your own.")
        video = write_demo_video(out_dir / "synthetic_clip.mp4")
    if not args.quiet:
        print(f"demo: {video} with {plan.weights}")
    return _run_and_report(RunOptions(source=str(video), weights=plan.weights, out=out_dir / "demo.mp4",
                                      json=out_dir / "demo.jsonl", codec=args.codec,
                                      progress=not args.quiet))


def add_view_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "view", help="show live poses and tracks in a window",
        description="Open a window on a camera, video file, image folder or stream URL. Keys: Space pause, "
                    "N/Right step, K skeleton, I IDs, B boxes, H heatmap, R record, O open file, C camera/URL, "
                    "Q/Esc quit.")
    p.add_argument("source", metavar="SOURCE", help="camera index (0), video file, image folder or glob, or URL")
    _add_engine_arguments(p)
    _add_decode_arguments(p)
    p.add_argument("--record-dir", default=".", help="where the Record button writes mp4 files (default: here)")
    p.set_defaults(handler=_view)


def _view(args: argparse.Namespace) -> int:
    from pathlib import Path

    _quiet_opencv(args.verbose)
    from tagtrack.realtime.run import RunOptions, run_model
    from tagtrack.realtime.sources import open_source
    from tagtrack.realtime.viewer import check_display, run_viewer

    options = RunOptions(source=args.source, weights=Path(args.weights) if args.weights else None,
                         engine=args.engine, device=args.device, fp16=args.fp16,
                         input_hw=tuple(args.input_size) if args.input_size else None, settings=_settings_layers(args))
    record_dir = Path(args.record_dir)
    if not record_dir.is_dir():
        raise UserFacingError(f"--record-dir {record_dir} is not a folder")
    check_display()  # before loading anything: without a display there is nothing to show
    source = open_source(args.source)
    try:
        engine, settings = run_model(options)  # the model's stored settings, then the command line's
    except BaseException:
        source.close()
        raise
    try:
        return run_viewer(source, args.source, engine, schema=engine.schema, decode=settings.decode,
                          tracker=settings.tracker, record_dir=record_dir, engine_label=engine.name)
    finally:
        engine.close()


def add_bench_run_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "run", help="model-only and end-to-end FPS of the pipeline, per stage; --soak: memory over a long run")
    p.add_argument("source", metavar="SOURCE", nargs="?", default=None,
                   help="video file, image folder, camera or URL (default: generated frames)")
    p.add_argument("--frames", type=int, default=200, help="generated frames for the throughput run (default 200)")
    p.add_argument("--frame-size", type=int, nargs=2, metavar=("H", "W"), default=(480, 640),
                   help="size of generated frames (default 480 640)")
    p.add_argument("--soak", type=int, default=None, metavar="N",
                   help="run N generated frames with tracking and JSON Lines, report RSS at start/middle/end")
    _add_pipeline_arguments(p)
    p.set_defaults(handler=_bench_run)


def _bench_run(args: argparse.Namespace) -> int:
    _quiet_opencv(args.verbose)
    from tagtrack.bench.pipeline import bench_pipeline, soak

    options = _run_options(args, progress=False)  # settings checked here, the rest by the bench's check_options
    if args.soak is not None:
        print(soak(options, args.soak, tuple(args.frame_size)).format())
    else:
        print(bench_pipeline(options, args.frames, tuple(args.frame_size)).format())
    return 0


# ---------------------------------------------------------------- train, eval, label (training/)


def add_train_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train", help="train a model on COCO-format keypoint data (torchrun for several processes)",
        description="Train a stacked-hourglass associative-embedding model. For several GPUs or machines launch "
        "with torchrun, e.g. `torchrun --nproc_per_node 4 main.py train ...` (see docs/training.md).",
    )
    _add_preset_argument(p)
    p.add_argument("--config", help="a TrainConfig JSON (e.g. a run's config.json) instead of a preset")
    p.add_argument("--data", help="COCO-format keypoint annotation JSON")
    p.add_argument("--images", help="folder the JSON's file_name entries are relative to")
    p.add_argument("--val-data", help="validation annotation JSON (best-by-AP checkpoints)")
    p.add_argument("--val-images", help="validation image folder")
    p.add_argument("--out", required=True, help="run folder: checkpoints, logs, config.json")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--steps", type=int, help="total optimisation steps")
    p.add_argument("--batch-size", type=int, help="images per process and step (x2 views with pairs)")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--workers", type=int, help="data loading processes per training process")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    p.add_argument("--sigma-mode", choices=("fixed", "size", "embedding", "adaptive"),
                   help="heatmap gaussian sigma: fixed, per person from its size, or from its tag (Wang et al.); "
                        "adaptive = size")
    p.add_argument("--scale-loss", choices=("ours", "wang"), help="form of the grouping + scale terms")
    p.add_argument("--scale-truth", choices=("onehot", "soft"), help="scale ground truth of --scale-loss wang")
    p.add_argument("--no-pairs", action="store_true", help="single views, no cross-view temporal loss")
    p.add_argument("--init", metavar="WEIGHTS",
                   help="fine-tune: start from this checkpoint's weights and network (e.g. the default model); "
                        "a --config whose network is the same made wider keeps it, the weights embedded")
    p.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tagtrack.training.config import TrainConfig, preset
    from tagtrack.training.train import train

    out = Path(args.out)
    overrides = {
        "train_annotations": args.data, "train_images": args.images, "val_annotations": args.val_data,
        "val_images": args.val_images, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
        "workers": args.workers, "checkpoint_every": args.checkpoint_every, "sigma_mode": args.sigma_mode,
        "scale_loss": args.scale_loss, "scale_truth": args.scale_truth, "seed": args.seed, "pairs": False if args.no_pairs else None,
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if args.resume:
        # The run's own config; only the length may change (e.g. to train further).
        config = TrainConfig.load(out / "config.json")
        if args.steps:
            from dataclasses import replace

            config = replace(config, steps=args.steps)
    elif args.config:
        from dataclasses import replace

        config = replace(TrainConfig.load(args.config), **overrides)
    else:
        config = preset(args.preset, **overrides)
    if args.init and not args.resume:
        config = _with_initial_weights(config, args.init, widen=bool(args.config))
    result = train(config, out, resume=args.resume)
    if result.interrupted:
        print(f"stopped at step {result.step}; checkpoint {result.last_checkpoint}; continue with --resume")
        return 130
    print(f"trained {result.step} steps; last loss {result.losses[-1]:.5g}; weights {result.last_checkpoint}"
          + (f"; best AP {result.best_metric:.4f}" if result.best_metric is not None else ""))
    return 0


def _with_initial_weights(config: "TrainConfig", weights: str, widen: bool = False) -> "TrainConfig":
    """The run trains the checkpoint's network (at the run's own training input size) from its weights; with
    WIDEN (a --config naming its network), a config whose network is the checkpoint's made wider, or another
    family on the checkpoint's trunk (a new tag head), keeps it."""
    from dataclasses import replace

    from tagtrack.model.checkpoint import load_checkpoint
    from tagtrack.model.networks import shares_trunk

    network = load_checkpoint(weights).config
    if widen and (network.widens_to(config.model) or shares_trunk(network, config.model)):
        return replace(config, init_weights=weights)
    model = replace(network, input_height=config.model.input_height, input_width=config.model.input_width)
    return replace(config, model=model, init_weights=weights)


def add_eval_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("eval", help="COCO keypoint AP/AR (pycocotools) of a checkpoint or a teacher model")
    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    p.add_argument("--teacher", default=None,
                   help="score a MoveNet-MultiPose-format ONNX teacher instead of a checkpoint")
    p.add_argument("--data", required=True, help="COCO-format keypoint annotation JSON")
    p.add_argument("--images", required=True, help="folder holding the annotation file's images")
    p.add_argument("--flip", action="store_true", help="flip test: average with the mirrored image")
    p.add_argument("--scales", type=float, nargs="+", default=None,
                   help="checkpoint: test scales relative to the input size (e.g. 1 1.5); "
                        "teacher: input long sides in px (e.g. 256 384 512)")
    p.add_argument("--tiles", action="store_true", help="teacher only: also run on overlapping tiles")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="network input height and width at scale 1, multiples of 64 (default: per image, the "
                        "checkpoint's pixels in the shape that covers it best, as `predict` and `run` pick)")
    p.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images (by id)")
    p.add_argument("--json-out", default=None, help="write the COCO keypoint results file here")
    _add_decode_arguments(p)
    p.add_argument("--grouping", action="store_true",
                   help="also group ground-truth joint locations by the network's tags, and report the group margin")
    p.add_argument("--temporal", action="store_true",
                   help="also report the temporal group margin on pairs of frames with track ids (labelled clips)")
    p.add_argument("--device", default="cpu", help="torch device for the checkpoint (cpu, cuda, cuda:1)")
    p.set_defaults(handler=_eval)


def _eval(args: argparse.Namespace) -> int:
    from tagtrack.training.evaluate import evaluate_checkpoint, evaluate_teacher, format_metrics
    from tagtrack.training.tag_diagnostics import evaluate_grouping_with_gt_locations, evaluate_temporal_margin

    if args.max_images is not None and args.max_images < 1:
        raise UserFacingError("--max-images must be at least 1")
    layers = _settings_layers(args)
    if args.teacher:
        if args.weights or args.grouping or args.temporal:
            raise UserFacingError("--teacher scores the teacher alone: drop --weights, --grouping and --temporal")
        from tagtrack.training.teacher import TeacherConfig

        config = TeacherConfig(scales=tuple(int(s) for s in (args.scales or (256,))), flip=args.flip,
                               tiles=args.tiles)
        metrics = evaluate_teacher(args.teacher, args.data, args.images, config, args.max_images, args.json_out)
        print(f"teacher {args.teacher} (long sides {list(config.scales)}, flip {args.flip}, tiles {args.tiles})")
        print(format_metrics(metrics))
        return 0
    if args.tiles:
        raise UserFacingError("--tiles applies to --teacher only")
    from tagtrack.model.checkpoint import read_checkpoint_settings, resolve_weights
    from tagtrack.model.predict import PredictConfig
    from tagtrack.model.settings import resolve_settings

    weights = resolve_weights(args.weights)
    settings = resolve_settings(read_checkpoint_settings(weights), layers)
    config = PredictConfig(decode=settings.decode, flip=args.flip, scales=tuple(args.scales or (1.0,)))
    if min(config.scales) <= 0:
        raise UserFacingError("--scales must be positive")
    from tagtrack.model.config import check_input_size

    input_hw = check_input_size(args.input_size, "--input-size") if args.input_size else None
    metrics = evaluate_checkpoint(weights, args.data, args.images, config, input_hw, args.max_images,
                                  args.json_out, device=args.device)
    print(f"checkpoint {weights} (scales {list(config.scales)}, flip {args.flip})")
    print(format_metrics(metrics))
    if args.json_out:
        from dataclasses import asdict
        from pathlib import Path

        from tagtrack.realtime.sinks import write_settings_file

        # COCO results are a bare list (pycocotools loadRes), so the settings go beside them.
        settings_path = Path(args.json_out).with_suffix(".settings.json")
        write_settings_file(settings_path, {"decode": asdict(config.decode), "tracker": None,
                                            "input_hw": list(input_hw) if input_hw else None, "weights": str(weights),
                                            "flip": args.flip, "scales": list(config.scales)})
        print(f"wrote results to {args.json_out} (settings: {settings_path})")
    if args.grouping:
        result = evaluate_grouping_with_gt_locations(weights, args.data, args.images, input_hw, args.max_images,
                                                     config.decode, device=args.device)
        margin = result["group_margin"]
        print(f"grouping, single scale: AP {result['predicted']['AP']:.3f} with detected joints, "
              f"{result['gt_locations']['AP']:.3f} with ground-truth joint locations")
        if margin["count"]:
            print(f"group margin (min distance between people's reference tags - tag threshold) over "
                  f"{margin['count']} images: mean {margin['mean']:.3f}, min {margin['min']:.3f}, "
                  f"positive in {margin['fraction_positive']:.0%}")
        else:
            print("group margin: no image has two or more annotated people")
    if args.temporal:
        summary = evaluate_temporal_margin(weights, args.data, args.images, input_hw, device=args.device)
        print(f"temporal group margin over {summary['pairs']} pairs: same person {summary['same_mean']:.3f} "
              f"(max {summary['same_max']:.3f}), different people {summary['different_mean']:.3f} "
              f"(min {summary['different_min']:.3f}), margin {summary['margin']:.3f}, "
              f"nearest-tag match {summary['match_accuracy']:.0%}")
    return 0


def _add_frames_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, nargs=2, metavar=("FIRST", "LAST"), default=None,
                   help="score MOT frames FIRST..LAST, 1-based (default: the ground truth's span)")


def _frame_range(frames: list[int] | None) -> range | None:
    if frames is None:
        return None
    if not 1 <= frames[0] <= frames[1]:
        raise UserFacingError(f"--frames needs 1 <= FIRST <= LAST, got {frames[0]} {frames[1]}")
    return range(frames[0], frames[1] + 1)


def add_eval_track_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "eval-track", help="HOTA, MOTA, IDF1 of tracks against MOTChallenge ground truth (TrackEval)",
        description="Score tracks against MOTChallenge ground truth. By default as trackers are compared in the "
                    "literature: TrackEval's HOTA (DetA, AssA, LocA), CLEAR (MOTA, MOTP, ID switches, MT/ML) and "
                    "Identity (IDF1) on boxes matched at IoU >= 0.5, MOT15 or MOT17 protocol as the ground truth's "
                    "columns say. Poses (JSON Lines of `tagtrack run --json`) are scored by their boxes. "
                    "--match centroid is our own rule (py-motmetrics): a pose matches a person when the centroid "
                    "of its confident joints lies within --max-distance box heights of the box centre.")
    p.add_argument("results", metavar="RESULTS", help="JSON Lines of poses, or a MOTChallenge result file (.txt)")
    p.add_argument("--gt", required=True, help="ground truth, MOTChallenge format (conf 0 rows: don't care)")
    p.add_argument("--match", choices=("trackeval", "centroid", "iou"), default="trackeval",
                   help="trackeval: TrackEval on boxes (default); centroid: ours, py-motmetrics, poses by joint "
                        "centroid; iou: py-motmetrics on boxes at --min-iou")
    p.add_argument("--max-distance", type=float, default=0.5, help="centroid: box heights (default 0.5)")
    p.add_argument("--min-iou", type=float, default=0.5, help="iou: least IoU of a match (default 0.5)")
    p.add_argument("--min-joint-score", type=float, default=0.2, help="joints making the centroid (default 0.2)")
    _add_frames_argument(p)
    p.add_argument("--retrack", action="store_true",
                   help="run the tracker again over every person of the JSON Lines (write it with --no-track), with "
                        "the tracker settings its header records, else those stored with the model it names")
    p.add_argument("--no-tags", action="store_true", help="with --retrack: geometry only")
    p.add_argument("--weights", default=None,
                   help="with --retrack: start from this model's stored tracker settings instead (" + WEIGHTS_HELP + ")")
    _add_settings_arguments(p)
    p.set_defaults(handler=_eval_track)


def _retrack_config(args: argparse.Namespace):
    """The TrackerConfig `eval-track --retrack` runs: --weights' stored settings if given, else the tracker settings
    the JSON Lines header records (the run's effective ones), else those stored with the model the header names;
    then --config, --no-tags, --set (model/settings.py)."""
    from pathlib import Path

    from tagtrack.model.checkpoint import read_checkpoint_settings, resolve_weights
    from tagtrack.model.settings import recorded_settings, resolve_settings, user_layers
    from tagtrack.realtime.sinks import read_pose_lines
    from tagtrack.tracker.mot_eval import is_pose_file

    header = None
    if is_pose_file(args.results) and Path(args.results).is_file():  # else evaluate_file says what is wrong
        header = read_pose_lines(args.results)[0]
    recorded = recorded_settings(header, f"{args.results} header") if isinstance(header, dict) else {}
    stored, origin = {}, "built-in tracker settings"
    if args.weights is None and "tracker" in recorded:
        stored, origin = {"tracker": recorded["tracker"]}, f"tracker settings recorded in {args.results}"
    else:
        weights = args.weights or (header or {}).get("weights")
        if weights is not None and (args.weights is not None or Path(weights).is_file()):
            path = resolve_weights(weights)
            stored, origin = read_checkpoint_settings(path), f"settings stored in checkpoint {path}"
        elif weights is not None:
            log.warning("%s names the model %s, which is not here: re-tracking with the built-in tracker settings "
                        "(give --weights)", args.results, weights)
    no_tags = [("--no-tags", {"tracker": {"use_tags": False}})] if args.no_tags else []
    layers = user_layers(config=args.config) + no_tags + user_layers(assignments=args.set_values)
    return resolve_settings(stored, layers, stored_origin=origin).tracker


def _eval_track(args: argparse.Namespace) -> int:
    from tagtrack.tracker.mot_eval import MatchRule, evaluate_file, format_scores

    if args.max_distance <= 0 or not 0 < args.min_iou <= 1 or args.min_joint_score < 0:
        raise UserFacingError("--max-distance > 0, 0 < --min-iou <= 1 and --min-joint-score >= 0")
    rule = MatchRule(mode="iou" if args.match == "iou" else "centroid", max_distance=args.max_distance,
                     min_iou=args.min_iou, min_joint_score=args.min_joint_score)
    frames = _frame_range(args.frames)
    if not args.retrack and (args.weights or args.config or args.set_values or args.no_tags):
        raise UserFacingError("--weights, --config, --set and --no-tags apply to --retrack only")
    config = _retrack_config(args) if args.retrack else None
    protocol = "trackeval" if args.match == "trackeval" else "motmetrics"
    scores = evaluate_file(args.results, args.gt, rule, frames, retrack_config=config, protocol=protocol)
    title = f"{args.results} against {args.gt} ({args.match} matching{', re-tracked' if args.retrack else ''})"
    if protocol == "trackeval":
        from tagtrack.tracker.trackeval_scores import format_trackeval_scores

        print(format_trackeval_scores(scores, title=title))
    else:
        print(format_scores(scores, title=title))
    return 0


def add_label_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("label", help="pseudo-label videos / image folders with a teacher into a COCO set")
    p.add_argument("--teacher", required=True, help="MoveNet-MultiPose-format ONNX model")
    p.add_argument("--input", required=True, nargs="+", help="video files, image folders or images")
    p.add_argument("--out", required=True, help="output folder: images/ and annotations.json")
    p.add_argument("--every", type=int, default=1, help="label every Nth frame (default 1)")
    p.add_argument("--max-frames", type=int, default=None, help="at most this many labelled frames per input")
    p.add_argument("--scales", type=int, nargs="+", default=[256],
                   help="teacher input long sides in px, multiples of 32 (default 256; try 256 384 512)")
    p.add_argument("--flip", action="store_true", help="also run the teacher on the mirrored frame")
    p.add_argument("--tiles", action="store_true", help="also run on overlapping 2x2 tiles of large frames")
    p.add_argument("--person-threshold", type=float, default=0.3, help="min teacher score of a labelled person")
    p.add_argument("--joint-threshold", type=float, default=0.3, help="min score of a labelled joint")
    p.add_argument("--min-joints", type=int, default=4, help="fewer confident joints: an ignore region")
    p.add_argument("--ignore-threshold", type=float, default=0.1,
                   help="people scoring between this and --person-threshold become ignore regions")
    p.add_argument("--sequence", action="store_true", help="treat image folders as frame sequences (track ids)")
    p.set_defaults(handler=_label)


def _label(args: argparse.Namespace) -> int:
    _quiet_opencv(args.verbose)
    from tagtrack.training.label import LabelConfig, label_inputs
    from tagtrack.training.teacher import TeacherConfig

    if args.max_frames is not None and args.max_frames < 1:
        raise UserFacingError("--max-frames must be at least 1")
    teacher = TeacherConfig(scales=tuple(args.scales), flip=args.flip, tiles=args.tiles)
    config = LabelConfig(teacher=teacher, every=args.every, max_frames=args.max_frames,
                         person_threshold=args.person_threshold, joint_threshold=args.joint_threshold,
                         min_joints=args.min_joints, ignore_threshold=args.ignore_threshold,
                         folder_is_sequence=args.sequence)
    summary = label_inputs(args.teacher, args.input, args.out, config)
    print(f"wrote {summary.annotations_path}: {summary.images} images, {summary.people} people with keypoints, "
          f"{summary.ignore_regions} ignore regions, {summary.tracks} tracks from {summary.sources} input(s)")
    return 0


def add_import_lsp_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("import-lsp", help="LSP / LSP Extended / MPII-style 14-joint labels -> a COCO keypoint set")
    p.add_argument("--joints", required=True, help="the label file (joints.mat: 14 x 3 x N or N x 14 x 3)")
    p.add_argument("--images", required=True, help="the image folder")
    p.add_argument("--out", required=True, help="COCO keypoint JSON to write")
    p.add_argument("--list", default=None, help="file naming the images to import, one per line (default: every "
                   "image of the folder named like im00001.jpg)")
    p.add_argument("--teacher", default=None, help="MoveNet-MultiPose-format ONNX model: other people, face points, "
                   "left/right check (default: none, labels only)")
    p.add_argument("--maps", default=None, help="also write the teacher's dense maps here (for distillation)")
    p.set_defaults(handler=_import_lsp)


def _import_lsp(args: argparse.Namespace) -> int:
    from tagtrack.training.lsp import import_lsp

    summary = import_lsp(args.joints, args.images, args.out, image_list=args.list, teacher_path=args.teacher,
                         maps_dir=args.maps)
    print(f"wrote {summary.annotations_path}: {summary.images} images, {summary.labelled_people} labelled people "
          f"({summary.teacher_matched} matched by the teacher, {summary.face_points_filled} face points filled, "
          f"left/right fixed: {summary.arm_swaps_fixed} arms, {summary.leg_swaps_fixed} legs), "
          f"{summary.other_people} other people and {summary.ignore_regions} ignore regions from the teacher"
          + (f", {summary.maps_written} teacher maps" if args.maps else ""))
    return 0


def add_import_teacher_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("import-teacher", help="a pretrained start: MoveNet MultiPose's ONNX weights in a "
                            "mobilenet_fpn checkpoint with a new tag head (train it with `train --init`)")
    p.add_argument("--onnx", required=True, help="MoveNet MultiPose Lightning ONNX file")
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    p.add_argument("--tag-dim", type=int, default=4, help="tag length L (default 4)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=(256, 256),
                   help="input size stored in the checkpoint, multiples of 32 (default 256 256)")
    p.set_defaults(handler=_import_teacher)


def _import_teacher(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tagtrack.model.checkpoint import BUNDLED_WEIGHTS, save_checkpoint
    from tagtrack.model.config import check_input_size
    from tagtrack.model.schema import COCO17
    from tagtrack.model.teacher_import import LINEAGE, import_teacher
    from tagtrack.realtime.sinks import refuse_overwriting

    if args.tag_dim < 1:
        raise UserFacingError(f"--tag-dim must be at least 1, got {args.tag_dim}")
    input_hw = check_input_size(args.input_size, "--input-size", multiple=32)
    refuse_overwriting({"--onnx": Path(args.onnx), **{f"bundled model {name}": path for name, path
                                                     in BUNDLED_WEIGHTS.items()}}, {"--out": Path(args.out)})
    net = import_teacher(args.onnx, args.tag_dim, input_hw)
    metadata = {"lineage": LINEAGE, "source_onnx": Path(args.onnx).name, "step": 0}
    save_checkpoint(args.out, net, COCO17, metadata)
    print(f"wrote {args.out}: {net.config.describe()} network, heatmaps from {Path(args.onnx).name}, new tag head")
    return 0


def add_teacher_maps_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("teacher-maps", help="store a teacher's dense heatmaps for every image of a COCO set "
                            "(dense distillation: train with train_teacher_maps)")
    p.add_argument("--teacher", required=True, help="MoveNet-MultiPose-format ONNX model")
    p.add_argument("--data", required=True, help="COCO keypoint JSON")
    p.add_argument("--images", required=True, help="its image folder")
    p.add_argument("--out", required=True, help="maps folder (image file_name + .npy); existing maps are kept")
    p.add_argument("--long-side", type=int, default=384, help="teacher input long side in px (default 384)")
    p.set_defaults(handler=_teacher_maps)


def _teacher_maps(args: argparse.Namespace) -> int:
    from tagtrack.training.distill import write_teacher_maps

    written = write_teacher_maps(args.teacher, args.data, args.images, args.out, args.long_side)
    print(f"wrote {written} teacher map files into {args.out}")
    return 0


def add_bench_teacher_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "teacher", help="our model next to MoveNet MultiPose on the same frames: speed and people found")
    p.add_argument("source", metavar="SOURCE", help="video file or image folder")
    p.add_argument("--teacher", required=True, help="MoveNet-MultiPose-format ONNX model")
    p.add_argument("--long-side", type=int, default=384, help="teacher input long side in px (default 384)")
    p.add_argument("--person-score", type=float, default=0.3, help="count people scoring at least this (both)")
    p.add_argument("--threads", type=int, default=None, help="teacher ONNX Runtime threads (default: all cores)")
    p.add_argument("--every", type=int, default=1, help="use every Nth frame")
    p.add_argument("--max-frames", type=int, default=None, help="compare on at most this many frames")
    _add_engine_arguments(p)
    p.set_defaults(handler=_bench_teacher)


def _bench_teacher(args: argparse.Namespace) -> int:
    _quiet_opencv(args.verbose)
    from pathlib import Path

    from tagtrack.bench.teacher import compare_with_teacher
    from tagtrack.realtime.run import RunOptions, run_model
    from tagtrack.realtime.sources import open_source
    from tagtrack.training.teacher import MoveNetTeacher

    if args.every < 1 or (args.max_frames is not None and args.max_frames < 1):
        raise UserFacingError("--every and --max-frames must be at least 1")
    teacher = MoveNetTeacher(args.teacher, threads=args.threads)
    source = open_source(args.source)
    options = RunOptions(source=args.source, weights=Path(args.weights) if args.weights else None,
                         engine=args.engine, device=args.device, fp16=args.fp16,
                         input_hw=tuple(args.input_size) if args.input_size else None)
    try:
        engine, settings = run_model(options)  # decoded as `run` decodes: the model's stored settings
    except BaseException:
        source.close()
        raise
    try:
        comparison = compare_with_teacher(engine, teacher, source, args.max_frames, args.every, args.long_side,
                                          args.person_score, schema=engine.schema, decode=settings.decode)
    finally:
        engine.close()
        source.close()
    print(comparison.format())
    return 0


def add_bench_train_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="training images/s of a preset on this machine (synthetic data)")
    _add_preset_argument(p)
    p.add_argument("--steps", type=int, default=5, help="measured steps (after 2 warm-up steps)")
    p.add_argument("--batch-size", type=int, default=4, help="images per step")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.set_defaults(handler=_bench_train)


def _bench_train(args: argparse.Namespace) -> int:
    from tagtrack.bench.train import benchmark_training

    result = benchmark_training(args.preset, steps=args.steps, batch_size=args.batch_size, threads=args.threads)
    print(result.summary())
    return 0


# ---------------------------------------------------------------- bench (decode: model/, track: tracker/)


def add_bench_decode_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("decode", help="decoder time per frame on synthetic maps with 1..30 people")
    p.add_argument("--people", type=int, nargs="+", default=[1, 5, 10, 20, 30], help="people per frame")
    p.add_argument("--tag-dims", type=int, nargs="+", default=[1, 8], help="tag dimensions L")
    p.add_argument("--size", type=int, default=128, help="map height and width (default 128)")
    p.add_argument("--repeats", type=int, default=200, help="timed runs per case (default 200)")
    p.set_defaults(handler=_bench_decode)


def _bench_decode(args: argparse.Namespace) -> int:
    from tagtrack.bench.decode import format_table, run_decode_benchmark

    if min(args.people) < 0 or min(args.tag_dims) < 1 or args.size < 16 or args.repeats < 1:
        raise UserFacingError("--people >= 0, --tag-dims >= 1, --size >= 16 and --repeats >= 1")
    timings = run_decode_benchmark(tuple(args.people), tuple(args.tag_dims), args.size, args.repeats)
    print(format_table(timings, args.size))
    return 0


def add_bench_track_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("track", help="tracker vs greedy-OKS and SORT on synthetic scenes; time per frame")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="scene seeds, scored together")
    p.add_argument("--tag-dims", type=int, nargs="+", default=[1, 4], help="tag dimensions L")
    p.add_argument("--duration", type=float, default=12.0, help="seconds per scene (default 12)")
    p.add_argument("--people", type=int, nargs="+", default=[1, 10, 30], help="people in view for the timing")
    p.add_argument("--timing-only", action="store_true", help="skip the scores")
    p.add_argument("--poses", default=None,
                   help="instead: every tracker over these real detections (JSON Lines of `run --no-track --json`)")
    p.add_argument("--gt", default=None, help="with --poses: MOTChallenge ground truth to score against")
    p.add_argument("--match", choices=("trackeval", "centroid"), default="trackeval",
                   help="with --poses: TrackEval HOTA/MOTA/IDF1 on boxes (default), or our centroid rule")
    _add_frames_argument(p)
    p.set_defaults(handler=_bench_track)


def _bench_track(args: argparse.Namespace) -> int:
    from tagtrack.bench.track import format_scores, format_timing, run_scores, run_timing
    from tagtrack.tracker.synthetic import SceneConfig

    if min(args.tag_dims) < 1 or args.duration <= 0 or min(args.people) < 1 or not args.seeds:
        raise UserFacingError("--tag-dims >= 1, --duration > 0, --people >= 1 and at least one seed")
    if (args.poses is None) != (args.gt is None):
        raise UserFacingError("--poses and --gt go together")
    if args.poses is not None:
        from tagtrack.bench.track import format_real_scores, run_real_scores

        rows = run_real_scores(args.poses, args.gt, frames=_frame_range(args.frames),
                               protocol="trackeval" if args.match == "trackeval" else "motmetrics")
        print(format_real_scores(rows, f"trackers on the detections of {args.poses}, scored against {args.gt}"))
        return 0
    if not args.timing_only:
        rows = run_scores(list(args.seeds), list(args.tag_dims), scene=SceneConfig(duration=args.duration))
        print(format_scores(rows, list(args.seeds)))
        print()
    print(format_timing(run_timing(list(args.people))))
    return 0


class _HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the text already states one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS, []) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tagtrack")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _all_parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _all_parsers(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tagtrack", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tagtrack {_package_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="info lines on the console (which checkpoint, engine, cache); -vv: debug lines too")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress, summary or info lines: only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = commands.add_parser("bench", help="print measured speed numbers").add_subparsers(
        dest="bench", required=True, metavar="WHAT"
    )
    add_predict_command(commands)
    add_run_command(commands)
    add_demo_command(commands)
    add_view_command(commands)
    add_train_command(commands)
    add_eval_command(commands)
    add_eval_track_command(commands)
    add_label_command(commands)
    add_import_lsp_command(commands)
    add_import_teacher_command(commands)
    add_teacher_maps_command(commands)
    add_export_command(commands)
    add_bench_decode_command(bench)
    add_bench_track_command(bench)
    add_bench_run_command(bench)
    add_bench_train_command(bench)
    add_bench_teacher_command(bench)
    for each in _all_parsers(parser):
        each.formatter_class = _HelpWithDefaults
        if each is not parser and each.get_default("handler") is not None:
            # Also after the command (`tagtrack run x.mp4 --quiet`); SUPPRESS keeps a global -q.
            each.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                              help="no progress, summary or info lines: only warnings and errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Warnings only unless asked: a command's result is its printed summary, not the library's info lines.
    level = logging.DEBUG if args.verbose >= 2 else logging.INFO if args.verbose == 1 else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:  # disk full, permission denied, ... after the handlers' own checks
        print(f"error: {error.strerror or error} ({error.filename or 'I/O'})", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
