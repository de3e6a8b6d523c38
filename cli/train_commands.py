"""`train` and the data it learns from: `label`, `import-lsp`, `import-teacher`, `teacher-maps` (training/,
model/teacher_import.py). Each command's parser and handler sit together; handlers import lazily."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tagtrack.cli.common import add_preset_argument, quiet_opencv
from tagtrack.model.errors import UserFacingError

if TYPE_CHECKING:  # the CLI imports training only when a command runs
    from tagtrack.training.config import TrainConfig


def add_train_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train", help="train a model on COCO-format keypoint data (torchrun for several processes)",
        description="Train a stacked-hourglass associative-embedding model. For several GPUs or machines launch "
        "with torchrun, e.g. `torchrun --nproc_per_node 4 main.py train ...` (see docs/training.md).",
    )
    add_preset_argument(p)
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


def _with_initial_weights(config: TrainConfig, weights: str, widen: bool = False) -> TrainConfig:
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
    quiet_opencv(args.verbose)
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
