"""What several commands share: the model, engine and settings arguments, reading the settings layers,
the lazily read choices, the exit codes. Argument handling only; the work lives in the packages."""

from __future__ import annotations

import argparse

from tagtrack.model.errors import UserFacingError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
WEIGHTS_HELP = ("checkpoint (.safetensors), or a bundled model: default (the general model; also named general), "
                "pretrained (MoveNet's network and weights with our tags: far more accurate on photos, athletes and "
                "close-ups, weaker on small walkers' tracks, slower), wide (the general model widened: more accurate, "
                "about 1.6x slower) or street (street scenes only); default: default")


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by `run`, `view` and `bench run`: the model and the engine that runs it."""
    from tagtrack.realtime.backends import AUTO, ENGINE_CHOICES, engine_help

    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    p.add_argument("--engine", choices=ENGINE_CHOICES, default=AUTO, help=engine_help())
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the network runs (auto: cuda when a GPU is usable, else cpu)")
    p.add_argument("--fp16", action="store_true", help="half precision (torch on CUDA, TensorRT)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="network input height and width, multiples of 64 (default: the checkpoint's)")


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by `run` and `bench run`: the model, the engine, tracking and decoding."""
    add_engine_arguments(p)
    p.add_argument("--no-track", action="store_true", help="no tracking: poses without IDs")
    p.add_argument("--flip", action="store_true",
                   help="flip test on every frame: also run the mirrored frame and average (about twice the work)")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], metavar="S",
                   help="test scales on every frame, multiples of the input size, e.g. 1 1.75: heatmaps averaged, "
                        "tags concatenated; each size runs its own engine (default 1)")
    add_decode_arguments(p)
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames (default: all)")
    p.add_argument("--stream-timeout", type=float, default=None, metavar="SECONDS",
                   help="a stream URL that sends nothing this long is reconnected, then given up (default 30)")


def add_decode_arguments(p: argparse.ArgumentParser) -> None:
    """The named settings flags (model/settings.py: FLAGS) and the settings options, shared by `predict`, `eval`,
    `run`, `view` and `bench run`; read by settings_layers."""
    from tagtrack.model.settings import FLAGS, STORED_DEFAULT

    for flag in FLAGS:
        p.add_argument(flag.option, dest=flag.keyword, type=float, default=None, metavar=flag.metavar,
                       help=f"{flag.help} ({STORED_DEFAULT})")
    add_settings_arguments(p)


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="FILE",
                   help="decoder and tracker settings, JSON or TOML: {\"decode\": {\"top_k\": 20}, \"tracker\": "
                        "{\"tag_gate\": 1.0}} (defaults: the model's stored settings, else the built-in ones)")
    p.add_argument("--set", dest="set_values", action="append", default=[], metavar="SECTION.NAME=VALUE",
                   help="one setting, above --config and the flags, e.g. --set decode.top_k=20 --set tracker.tag_gate=1.0 "
                        "(names: DecodeConfig in model/codec.py, TrackerConfig in tracker/config.py) (repeatable)")


def settings_layers(args: argparse.Namespace) -> list:
    """--config FILE, the named flags, then --set: the layers over the model's stored settings
    (model/settings.py). Every name and value is checked here, before anything is opened or loaded."""
    from tagtrack.model.settings import FLAGS, resolve_settings, user_layers

    flags = {flag.keyword: getattr(args, flag.keyword, None) for flag in FLAGS}
    layers = user_layers(args.config, flags, args.set_values)
    resolve_settings(None, layers)
    return layers


def quiet_opencv(verbose: bool) -> None:
    """FFmpeg and OpenCV print their own warnings on stderr; keep bad input to our one line."""
    import os

    if not verbose:
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def run_options(args: argparse.Namespace, **extra):
    from pathlib import Path

    from tagtrack.realtime.run import RunOptions

    return RunOptions(
        source=args.source, weights=Path(args.weights) if args.weights else None, engine=args.engine,
        device=args.device, fp16=args.fp16, track=not args.no_track,
        input_hw=tuple(args.input_size) if args.input_size else None, max_frames=args.max_frames,
        settings=settings_layers(args), flip=args.flip, scales=tuple(args.scales),
        config=Path(args.config) if args.config else None, stream_timeout=args.stream_timeout, **extra)


class TableNames:
    """An option's choices: the names in a table of another module (`--format`: realtime/exports.py's EXPORT_FORMATS,
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


def add_preset_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=TableNames("tagtrack.training.config", "PRESETS"), default="small",
                   metavar="NAME", help="model + schedule preset: %(choices)s")


def add_frames_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, nargs=2, metavar=("FIRST", "LAST"), default=None,
                   help="score MOT frames FIRST..LAST, 1-based (default: the ground truth's span)")


def frame_range(frames: list[int] | None) -> range | None:
    if frames is None:
        return None
    if not 1 <= frames[0] <= frames[1]:
        raise UserFacingError(f"--frames needs 1 <= FIRST <= LAST, got {frames[0]} {frames[1]}")
    return range(frames[0], frames[1] + 1)
