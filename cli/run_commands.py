"""`predict`, `run`, `demo`, `view` and `export`: a model on images, videos, cameras and streams
(realtime/, model/). Each command's parser and handler sit together; handlers import lazily."""

from __future__ import annotations

import argparse
import sys

from tagtrack.cli.common import (
    EXIT_INTERRUPTED, EXIT_USER_ERROR, WEIGHTS_HELP, TableNames, add_decode_arguments, add_engine_arguments,
    add_pipeline_arguments, quiet_opencv, run_options, settings_layers,
)
from tagtrack.model.errors import UserFacingError


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
    add_decode_arguments(p)
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
    from tagtrack.model.predict import check_scales
    from tagtrack.realtime.api import PoseEstimator
    from tagtrack.realtime.draw import draw_poses
    from tagtrack.realtime.run import counted, run_settings
    from tagtrack.realtime.sinks import refuse_overwriting, write_image, write_image_record

    if args.input_size:
        from tagtrack.realtime.engines import check_input_limit

        check_input_limit(check_input_size(args.input_size, "--input-size"))
    check_scales(args.scales, "--scales")
    layers = settings_layers(args)
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

    from tagtrack.realtime.model_export import export_checkpoint

    result = export_checkpoint(Path(args.weights) if args.weights else None, Path(args.onnx), args.input_size,
                               args.batch, Path(args.trt) if args.trt else None, args.fp16)
    outputs = ", ".join(f"{name} {shape}" for name, shape in result.output_shapes.items())
    print(f"wrote {result.onnx_path}: images {result.input_shape} -> {outputs} (checked with onnxruntime)")
    if result.engine_path is not None:
        print(f"wrote {result.engine_path}: TensorRT engine{' (fp16)' if args.fp16 else ''}")
    return 0


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
                   choices=TableNames("tagtrack.realtime.sinks", "EXPORT_FORMATS"),
                   help="also export %(choices)s (realtime/exports.py: EXPORT_FORMATS) beside --json (else --out, else "
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
    add_pipeline_arguments(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    quiet_opencv(args.verbose)
    if len(args.source) > 1 or args.out_dir or args.workers != 1 or args.ray:
        return _run_many(args)
    args.source = args.source[0]
    options = run_options(args, out=Path(args.out) if args.out else None,
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
    template = run_options(args, formats=args.formats, boxes=args.boxes, progress=args.workers == 1 and not args.ray)
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

    quiet_opencv(args.verbose)
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
    add_engine_arguments(p)
    add_decode_arguments(p)
    p.add_argument("--record-dir", default=".", help="where the Record button writes mp4 files (default: here)")
    p.set_defaults(handler=_view)


def _view(args: argparse.Namespace) -> int:
    from pathlib import Path

    quiet_opencv(args.verbose)
    from tagtrack.realtime.run import RunOptions, run_model
    from tagtrack.realtime.sources import open_source
    from tagtrack.realtime.viewer import check_display, run_viewer

    options = RunOptions(source=args.source, weights=Path(args.weights) if args.weights else None,
                         engine=args.engine, device=args.device, fp16=args.fp16,
                         input_hw=tuple(args.input_size) if args.input_size else None, settings=settings_layers(args))
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
