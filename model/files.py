"""Writing a file whole or not at all."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tagtrack.model.errors import UserFacingError


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` through `write(temporary)` beside it, renamed into place only when complete, so a full
    disk or a kill never leaves a cut file under the final name; an OSError is one UserFacingError naming it."""
    path = Path(path)
    temporary = path.with_name(f"{path.name}.tmp{path.suffix}")  # same suffix: np.save keeps the name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(temporary)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise UserFacingError(f"cannot write {path}: {error.strerror or error}") from None
