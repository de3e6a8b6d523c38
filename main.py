"""tagtrack: real-time multi-person pose estimation and tracking with associative embedding.

One CLI for everything a user runs: predict, run, view, train, eval, label, export, bench.
The commands' parsers and handlers sit by group in cli/ (run_commands, train_commands, eval_commands,
bench_commands; what they share in cli/common.py); this file builds the parser from them and dispatches.
The work itself lives in the packages. Handlers import lazily so that `tagtrack --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tagtrack.cli.bench_commands import (
    add_bench_decode_command, add_bench_run_command, add_bench_teacher_command, add_bench_track_command,
    add_bench_train_command,
)
from tagtrack.cli.common import EXIT_INTERRUPTED, EXIT_USER_ERROR
from tagtrack.cli.eval_commands import add_eval_command, add_eval_track_command
from tagtrack.cli.run_commands import (
    add_demo_command, add_export_command, add_predict_command, add_run_command, add_view_command,
)
from tagtrack.cli.train_commands import (
    add_import_lsp_command, add_import_teacher_command, add_label_command, add_teacher_maps_command,
    add_train_command,
)
from tagtrack.model.errors import UserFacingError

__all__ = ["EXIT_INTERRUPTED", "EXIT_USER_ERROR", "UserFacingError", "build_parser", "main"]


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
