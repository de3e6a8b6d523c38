"""Files: writing one whole or not at all, and reading an image or a JSON file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tagtrack.model.errors import UserFacingError


def _existing_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserFacingError(f"{what} not found: {path}")
    if not path.is_file():
        raise UserFacingError(f"{what} {path} is not a file")
    return path


def read_image(path: str | Path) -> np.ndarray:
    """An image file as BGR uint8 [H,W,3], or UserFacingError with one clear line naming it."""
    import cv2

    path = _existing_file(path, "image")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # imdecode, unlike imread, handles any file name
    except OSError as error:
        raise UserFacingError(f"cannot read image {path}: {error.strerror or error}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise UserFacingError(f"cannot read image {path}: not an image, or an unsupported or corrupt image file")
    return image


def read_json(path: str | Path, what: str) -> object:
    """The parsed contents of a JSON file, or UserFacingError with one line naming WHAT (e.g. "annotation file")
    and the file: not found, not a file, unreadable, or not valid JSON. What the contents must hold is the
    caller's check."""
    path = _existing_file(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UserFacingError(f"cannot read {what} {path}: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserFacingError(f"{what} {path} is not valid JSON: {error}") from None


def write_atomically(path: str | Path, write: Callable[[Path], None], what: str = "",
                     temporary: Path | None = None) -> Path:
    """Write `path` through `write(temporary)` beside it, renamed into place only when complete, so a full
    disk, an error or a kill never leaves a cut file under the final name (nor, but for a kill, a temporary).

    The temporary is unique to this call (concurrent writers of one cache file never mix their bytes) and
    keeps the suffix (np.save and exporters keep the name), unless `temporary` names one. An OSError becomes
    one UserFacingError "cannot write [what ]PATH: reason"; anything else raised by `write` passes through.
    """
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    if path.is_dir():
        raise UserFacingError(f"cannot write {label}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if temporary is None:
            handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
            os.close(handle)
            temporary = Path(name)
        write(temporary)
        os.replace(temporary, path)
    except OSError as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise UserFacingError(f"cannot write {label}: {error.strerror or error}") from None
    except BaseException:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise
    return path
