"""Progress of a run: a tqdm bar on a terminal, a few plain lines otherwise (a log file, CI)."""

from __future__ import annotations

import sys

from tagtrack.realtime.pipeline import FrameResult


class ProgressBarSink:
    """A tqdm progress bar advanced by one per written frame (files: with the total frame count)."""

    def __init__(self, total: int | None, description: str = "frames", stream=None) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=description, unit="frame", dynamic_ncols=True, file=stream)

    def write(self, result: FrameResult) -> None:
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


class ProgressLinesSink:
    """Progress for a log file or CI: one plain line at each quarter of a known frame count, no
    carriage returns (a bar redrawn ten times a second makes a log unreadable)."""

    def __init__(self, total: int | None, stream=None, steps: int = 4) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self._marks = [round(total * k / steps) for k in range(1, steps)] if total else []
        self._done = 0

    def write(self, result: FrameResult) -> None:
        self._done += 1
        if self._marks and self._done >= self._marks[0]:
            self._marks.pop(0)
            # Written to the stream the caller chose (stderr by default), not logged: this is the run's
            # progress display, shown whatever the log level.
            self.stream.write(f"frames {self._done} of {self.total} ({100 * self._done / self.total:.0f} %)\n")
            self.stream.flush()

    def close(self) -> None:
        pass


def progress_sink(total: int | None, stream=None) -> ProgressBarSink | ProgressLinesSink:
    """A bar on a terminal, a few lines otherwise."""
    stream = stream if stream is not None else sys.stderr
    is_terminal = getattr(stream, "isatty", lambda: False)()
    return ProgressBarSink(total, stream=stream) if is_terminal else ProgressLinesSink(total, stream)
