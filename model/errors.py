"""The error type that the CLI turns into one clear line and a non-zero exit code, and the one place
that imports an optional dependency (a pip extra) and says which extra to install when it is missing."""

from __future__ import annotations

import importlib
from types import ModuleType


class UserFacingError(Exception):
    """Bad input from the user (file, checkpoint, source, argument); the message is shown as is."""


class MissingExtraError(UserFacingError, ImportError):
    """An optional dependency is not installed; the message names the pip extra that brings it.

    Also an ImportError, so code that falls back when a package is absent (the `auto` engine) keeps
    catching it."""


def import_extra(module: str, extra: str, needed_for: str) -> ModuleType:
    """Import `module`, or raise MissingExtraError naming `pip install 'tagtrack[extra]'`.

    Optional packages (training, benchmarks, ONNX export, TensorRT, Ray) are imported through this at
    the point of use, so that the core install (inference, tracking, outputs, viewer) never needs them.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = getattr(error, "name", None) or module
        raise MissingExtraError(f"{needed_for} needs the '{extra}' extra ({missing} is not installed): "
                                f"pip install 'tagtrack[{extra}]'") from error
