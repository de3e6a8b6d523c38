"""`bench decode`, `bench track`, `bench run`, `bench train`, `bench teacher`: measured speed numbers (bench/).
Each command's parser and handler sit together; handlers import lazily."""

from __future__ import annotations

import argparse

from tagtrack.cli.common import (
    add_engine_arguments, add_frames_argument, add_pipeline_arguments, add_preset_argument, frame_range,
    quiet_opencv, run_options,
)
from tagtrack.model.errors import UserFacingError


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
    add_pipeline_arguments(p)
    p.set_defaults(handler=_bench_run)


def _bench_run(args: argparse.Namespace) -> int:
    quiet_opencv(args.verbose)
    from tagtrack.bench.pipeline import bench_pipeline, soak

    options = run_options(args, progress=False)  # settings checked here, the rest by the bench's check_options
    if args.soak is not None:
        print(soak(options, args.soak, tuple(args.frame_size)).format())
    else:
        print(bench_pipeline(options, args.frames, tuple(args.frame_size)).format())
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
    add_engine_arguments(p)
    p.set_defaults(handler=_bench_teacher)


def _bench_teacher(args: argparse.Namespace) -> int:
    quiet_opencv(args.verbose)
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
    add_preset_argument(p)
    p.add_argument("--steps", type=int, default=5, help="measured steps (after 2 warm-up steps)")
    p.add_argument("--batch-size", type=int, default=4, help="images per step")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.set_defaults(handler=_bench_train)


def _bench_train(args: argparse.Namespace) -> int:
    from tagtrack.bench.train import benchmark_training

    result = benchmark_training(args.preset, steps=args.steps, batch_size=args.batch_size, threads=args.threads)
    print(result.summary())
    return 0


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
    add_frames_argument(p)
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

        rows = run_real_scores(args.poses, args.gt, frames=frame_range(args.frames),
                               protocol="trackeval" if args.match == "trackeval" else "motmetrics")
        print(format_real_scores(rows, f"trackers on the detections of {args.poses}, scored against {args.gt}"))
        return 0
    if not args.timing_only:
        rows = run_scores(list(args.seeds), list(args.tag_dims), scene=SceneConfig(duration=args.duration))
        print(format_scores(rows, list(args.seeds)))
        print()
    print(format_timing(run_timing(list(args.people))))
    return 0
