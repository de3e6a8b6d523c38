"""Where outputs are written, so that nothing the user had is lost and no output is left broken under its name.

- every file output is written under a `Temporary` name beside the final one (`a.mp4` ->
  `a.partial-3f9c2a.mp4`): new, created exclusively, so never an input or a file the user had;
- a run's outputs are renamed into place together, only when every one of them is complete
  (`FileSink`: finish, then publish; the pipeline does both steps for all its sinks); a run that
  fails replaces nothing, keeps what is valid of its outputs under the temporary names and says so;
- output paths are checked before anything is opened (`check_output_path`: a read-only or missing
  folder is one UserFacingError, so a run never processes a whole video only to fail at the end;
  `refuse_overwriting`: no output may be an input or another output);
- a failed write or close raises `OutputError` naming the file, and the run exits non-zero.

The sinks themselves live beside this module: realtime/jsonl.py, realtime/video_sink.py, realtime/exports.py.
"""

from __future__ import annotations

import glob
import logging
import os
import secrets
import shutil
from pathlib import Path

import numpy as np

from tagtrack.model.errors import UserFacingError

try:
    import fcntl  # locks on temporaries (Unix); without it two runs onto one output are not detected
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)


class OutputError(UserFacingError):
    """Writing or closing an output failed (disk full, device gone); the message names the file."""


def output_error(path: Path, error: BaseException, kept: str = "") -> OutputError:
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return OutputError(f"cannot write {path}: {reason}{'; ' + kept if kept else ''}")


# The longest file name most file systems take, in bytes (a temporary's name is shortened to fit).
NAME_MAX = 255


class Temporary:
    """Where an output is written until it is complete: a new file beside `final`, `a.mp4` ->
    `a.partial-3f9c2a.mp4`, `poses.coco.json` -> `poses.coco.partial-3f9c2a.json`.

    The name is new: it is created exclusively (O_EXCL), so it is never a file the user had, an input
    of the run, or another run's temporary. It says what it is, sits in the same folder (the final
    rename is atomic) and keeps the suffix (a player opens a video that a kill left behind). `tail`
    goes before the suffix (a second temporary of one output: `.images`); `folder` makes a folder.
    publish() renames it into place, discard() removes it, keep() leaves it (a failed run's partial
    result, named to the user).

    While it is written the temporary is locked (flock, released when the process ends, however it ends),
    and a new one first looks for a locked temporary of the same output: another run writing that output
    right now. Two runs writing one output would each rename a complete file into place, but a set of
    outputs could then mix files of both; so the second run is refused (UserFacingError) before it writes
    anything. Unlocked temporaries (a killed run's) are left alone.
    """

    def __init__(self, final: Path, tail: str = "", folder: bool = False) -> None:
        self.final = Path(final)
        self.folder = folder
        self._lock: int | None = None  # the locked file descriptor while this is written
        self.path = self._create(tail)
        self.done = False  # published, discarded or kept

    def _create(self, tail: str) -> Path:
        stem, suffix = self.final.stem, self.final.suffix
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)  # a missing output folder is made
        except OSError as error:
            raise output_error(self.final, error) from None
        for _ in range(100):
            ending = f".partial-{secrets.token_hex(3)}{tail}{suffix}"
            # A long name stays within the file system's limit: shorten the stem, not the ending.
            room = NAME_MAX - len(os.fsencode(ending))
            while stem and len(os.fsencode(stem)) > room:
                stem = stem[:-1]
            path = self.final.with_name(stem + ending)
            try:
                if self.folder:
                    os.mkdir(path)
                    self._lock = os.open(path, os.O_RDONLY)
                else:
                    self._lock = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue  # someone's file (or another run's temporary) has this name: draw another
            except OSError as error:
                raise output_error(self.final, error) from None
            if fcntl is not None:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
                pattern = f"{glob.escape(stem)}.partial-{'[0-9a-f]' * 6}{glob.escape(tail + suffix)}"
                for other in self.final.parent.glob(pattern):
                    if other != path and _locked(other):
                        self._release()
                        self._remove(path)
                        raise UserFacingError(
                            f"{self.final} is being written by another run right now (its temporary {other} is in "
                            "use): wait until that run ends, or choose another output name")
            return path
        raise OutputError(f"cannot write {self.final}: no free temporary name beside it")

    def publish(self) -> None:
        """Rename into place (replacing an earlier file of that name: the output the user asked for)."""
        self.done = True
        try:
            os.replace(self.path, self.final)
        except OSError as error:
            self._remove(self.path)
            raise output_error(self.final, error) from None
        finally:
            self._release()

    def discard(self) -> None:
        self.done = True
        self._release()
        self._remove(self.path)

    def keep(self) -> Path:
        self.done = True
        self._release()
        return self.path

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = None

    def _remove(self, path: Path) -> None:
        try:
            if self.folder:
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            log.warning("could not remove the temporary %s", path)


def _locked(path: Path) -> bool:
    """Another process holds `path`'s flock (a temporary being written), as far as we may look."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(descriptor)
    return False


def check_output_path(path: str | Path, what: str = "output") -> Path:
    """Fail early, with one line, when `path` cannot be written (a read-only folder, a file where a folder
    should be, a name that is not UTF-8). A missing folder is no error: it is made when the output is
    opened (`Temporary`), as `predict --draw` always did, if the nearest folder that exists is writable."""
    from tagtrack.realtime.sources import check_name, check_not_a_loop

    check_name(path, what)
    check_not_a_loop(path, what)
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UserFacingError(f"{what} {path} is a folder, expected a file name")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserFacingError(f"{what} folder {folder} cannot be made: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserFacingError(f"{what} folder {existing} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserFacingError(f"{what} {path} exists and is not writable")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _resolved(path: str | Path, label: str) -> Path:
    """The path with symlinks and `..` resolved; a symlink loop is one error line naming it."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError on a loop, later versions OSError
        raise UserFacingError(f"{label.removeprefix('the ')} {path}: too many levels of symbolic links "
                              "(a symbolic link loop)") from None


def refuse_overwriting(inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """Refuse any output that would destroy an input or another output, before anything is opened.

    inputs: label -> a file or folder that is read (a folder's images are inputs). outputs: label ->
    a file or folder that is written. Paths are compared resolved (symlinks, `..`, relative paths),
    and by inode for hard links. An output inside an input folder is refused when it has an image
    suffix (the run would read it back, or overwrite one of the images). The bundled models are
    inputs of every command: no command ever writes over one.
    """
    from tagtrack.model.checkpoint import BUNDLED_WEIGHTS
    from tagtrack.realtime.sources import IMAGE_SUFFIXES

    bundled = {}
    for name, path in BUNDLED_WEIGHTS.items():
        bundled.setdefault(Path(path), f"the bundled model {name!r}")  # "default" before its alias "general"
    inputs = {**{label: path for path, label in bundled.items()}, **inputs}
    resolved_outputs = {label: _resolved(path, label) for label, path in outputs.items()}
    for in_label, in_path in inputs.items():
        source = _resolved(in_path, in_label)
        for out_label, target in resolved_outputs.items():
            if target == source or _same_file(target, source):
                what = in_label if in_label.startswith("the ") else f"the input {in_label}"
                raise UserFacingError(f"{out_label} {outputs[out_label]} is {what}; "
                                      "it would be overwritten: choose another output name")
            if source.is_dir() and target.parent == source and target.suffix.lower() in IMAGE_SUFFIXES:
                raise UserFacingError(f"{out_label} {outputs[out_label]} is an image inside the input folder "
                                      f"{in_path}: choose another output name or folder")
    seen: dict[Path, str] = {}
    for label, target in resolved_outputs.items():
        if target in seen:
            raise UserFacingError(f"{label} and {seen[target]} name the same file {outputs[label]}")
        seen[target] = label

def write_whole_file(path: Path, write) -> None:
    """Write `path` through `write(temporary_path)` and rename it into place only when complete, so a
    full disk or a kill never leaves a cut file under the final name (see `Temporary`)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    temporary = Temporary(path)
    try:
        write(temporary.path)
    except OSError as error:
        temporary.discard()
        raise output_error(path, error) from None
    except BaseException:
        temporary.discard()
        raise
    temporary.publish()


def write_image(path: Path, image: np.ndarray) -> None:
    """An image file (suffix picks the format), complete or not at all."""
    import cv2  # here, not at the top: the exports and the JSON Lines sink need no OpenCV

    def encode(temporary: Path) -> None:
        ok, data = cv2.imencode(path.suffix, image)
        if not ok:
            raise OSError(f"OpenCV cannot encode {path.suffix} images")
        temporary.write_bytes(data.tobytes())

    write_whole_file(path, encode)


class FileSink:
    """What every file output shares: written under `Temporary` names, then, in two steps so that a run
    replaces its earlier results only when all of them are complete:

    - finish(): complete the file(s) under the temporary names (flush, close, check); raises OutputError;
    - publish(): rename them into place (the run succeeded, or was stopped by the user);
    - abandon(): the run failed: leave every earlier file of the final names as it was, keep what is valid
      of this run under its temporary name (returned, so the user is told) and remove the rest;
    - discard(): remove the temporaries (the run failed before it processed anything).

    close() is finish() then publish() (abandon() when this output itself failed), for a caller that
    holds one sink; the pipeline calls the steps itself for all its sinks (pipeline.close_outputs)."""

    failed: bool = False

    def finish(self) -> None:
        raise NotImplementedError

    def publish(self) -> None:
        raise NotImplementedError

    def abandon(self) -> list[Path]:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        try:
            self.finish()
        except BaseException:
            self.abandon()
            raise
        if self.failed:  # a write failed (reported then): its output must not replace an earlier file
            self.abandon()
        else:
            self.publish()


class StreamedFileSink(FileSink):
    """A FileSink writing one file (`self._file`) to a `Temporary` (`self._temporary`) as it goes: closing,
    renaming and the abandon rule are the same for every such output; `_worth_keeping()` says whether what
    was written is valid to keep under the temporary name when the run fails."""

    path: Path
    _file: object
    _temporary: Temporary

    def _worth_keeping(self) -> bool:
        raise NotImplementedError

    def finish(self) -> None:
        if self._file.closed:
            return
        try:
            self._file.close()
        except OSError as error:
            self.failed = True
            raise output_error(self.path, error) from None

    def publish(self) -> None:
        if not self._temporary.done:
            self._temporary.publish()

    def abandon(self) -> list[Path]:
        self._close_quietly()
        if self._temporary.done:
            return []
        if self._worth_keeping():
            return [self._temporary.keep()]
        self._temporary.discard()
        return []

    def discard(self) -> None:
        self._close_quietly()
        if not self._temporary.done:
            self._temporary.discard()

    def _close_quietly(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass


def discard_outputs(sinks) -> None:
    """Remove what `sinks` wrote so far (a run that failed before it processed a frame); a sink without
    temporaries is closed."""
    for sink in sinks:
        try:
            discard = getattr(sink, "discard", None)
            discard() if discard is not None else sink.close()
        except Exception:  # noqa: BLE001 - the error being raised is the one to report
            log.debug("discarding %r failed", sink, exc_info=True)

