"""tagtrack: real-time multi-person pose estimation and tracking with associative embedding.

One CLI for everything a user runs: predict, run, view, train, eval, label, export, bench.
Each command's parser and handler sit together below; the work itself lives in the packages.
Handlers import lazily so that `tagtrack --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from model.errors import UserFacingError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


# ---------------------------------------------------------------- predict, export (model/)


def add_predict_command(commands: argparse._SubParsersAction) -> None:
    raise NotImplementedError("predict: being built")


def add_export_command(commands: argparse._SubParsersAction) -> None:
    raise NotImplementedError("export: being built")


# ---------------------------------------------------------------- run, view (realtime/)


def add_run_command(commands: argparse._SubParsersAction) -> None:
    raise NotImplementedError("run: being built")


def add_view_command(commands: argparse._SubParsersAction) -> None:
    raise NotImplementedError("view: being built")


def add_bench_run_command(commands: argparse._SubParsersAction) -> None:
    raise NotImplementedError("bench_run: being built")


# ---------------------------------------------------------------- train, eval, label (training/)


def add_train_command(commands: argparse._SubParsersAction) -> None:
    raise NotImplementedError("train: being built")


def add_eval_command(commands: argparse._SubParsersAction) -> None:
    raise NotImplementedError("eval: being built")


def add_label_command(commands: argparse._SubParsersAction) -> None:
    raise NotImplementedError("label: being built")


def add_bench_train_command(commands: argparse._SubParsersAction) -> None:
    raise NotImplementedError("bench_train: being built")


# ---------------------------------------------------------------- bench (decode: model/, track: tracker/)


def add_bench_decode_command(commands: argparse._SubParsersAction) -> None:
    raise NotImplementedError("bench decode: being built")


def add_bench_track_command(commands: argparse._SubParsersAction) -> None:
    raise NotImplementedError("bench track: being built")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tagtrack", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = commands.add_parser("bench", help="print measured speed numbers").add_subparsers(
        dest="bench", required=True, metavar="WHAT"
    )
    for add_command in (add_predict_command, add_export_command, add_run_command, add_view_command,
                        add_train_command, add_eval_command, add_label_command):
        try:
            add_command(commands)
        except NotImplementedError:
            pass
    for add_command in (add_bench_decode_command, add_bench_track_command, add_bench_run_command,
                        add_bench_train_command):
        try:
            add_command(bench)
        except NotImplementedError:
            pass
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
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
