"""`eval` (COCO keypoint AP, training/evaluate.py) and `eval-track` (tracking scores, tracker/mot_eval.py).
Each command's parser and handler sit together; handlers import lazily."""

from __future__ import annotations

import argparse
import logging

from tagtrack.cli.common import (
    WEIGHTS_HELP, add_decode_arguments, add_frames_argument, add_settings_arguments, frame_range, settings_layers,
)
from tagtrack.model.errors import UserFacingError

log = logging.getLogger(__name__)


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
    add_decode_arguments(p)
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
    layers = settings_layers(args)
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
    from tagtrack.model.predict import PredictConfig, check_scales
    from tagtrack.model.settings import resolve_settings

    weights = resolve_weights(args.weights)
    settings = resolve_settings(read_checkpoint_settings(weights), layers)
    config = PredictConfig(decode=settings.decode, flip=args.flip, scales=tuple(args.scales or (1.0,)))
    check_scales(config.scales, "--scales")
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
    add_frames_argument(p)
    p.add_argument("--retrack", action="store_true",
                   help="run the tracker again over every person of the JSON Lines (write it with --no-track), with "
                        "the tracker settings its header records, else those stored with the model it names")
    p.add_argument("--no-tags", action="store_true", help="with --retrack: geometry only")
    p.add_argument("--weights", default=None,
                   help="with --retrack: start from this model's stored tracker settings instead (" + WEIGHTS_HELP + ")")
    add_settings_arguments(p)
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
    frames = frame_range(args.frames)
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
