"""The JSON Lines output: `JsonLinesSink` (`run --json`) and `write_image_record` (`predict --json`).

The record layout is model/records.py's (writer and reader, the one place it is defined); this module turns a
pipeline `FrameResult` into a record and writes it safely: one whole line at a time, flushed per frame to a
`Temporary`, a failed write cut back to the last complete line (realtime/output_paths.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from tagtrack.model.records import frame_record, header_record, json_line, person_record
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.realtime.output_paths import (
    OutputError,
    StreamedFileSink,
    Temporary,
    check_output_path,
    output_error,
    write_whole_file,
)
from tagtrack.realtime.pipeline import FrameResult

log = logging.getLogger(__name__)

# The JSON Schema of the records (validated by the tests; shipped beside this module).
JSONL_SCHEMA_PATH = Path(__file__).with_name("pose_jsonl.schema.json")


def result_record(result: FrameResult, schema: KeypointSchema) -> dict:
    """The record of one processed frame: every person, with its track id where the tracker confirmed it."""
    frame = result.frame
    people = [person_record(tracked.pose, schema, tracked.track_id, tracked.box) for tracked in result.tracked]
    return frame_record(frame.index, frame.timestamp, frame.source_id, frame.image.shape[:2], people, result.dropped)


def write_image_record(path: Path, image: np.ndarray, source_id: str, poses: list,
                       schema: KeypointSchema = COCO17, settings: dict | None = None) -> None:
    """`predict --json`: one image's people as one JSON Lines record (frame 0, no track IDs), after the
    header line with `settings` when given."""
    people = [person_record(pose, schema) for pose in poses]
    record = frame_record(0, 0.0, source_id, image.shape[:2], people)
    text = (json_line(header_record(settings)) if settings is not None else "") + json_line(record)
    write_whole_file(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))



class JsonLinesSink(StreamedFileSink):
    """One JSON object per frame, one line each, on disk as soon as the frame is done; with `settings`,
    a header line first (`header_record`).

    Written to a `Temporary` (a run killed mid-way keeps every finished line there) and renamed into place
    when the run ends. A write that fails part-way (disk full) is cut back to the last complete line before
    the error is raised.
    """

    def __init__(self, path: str | Path, schema: KeypointSchema = COCO17, settings: dict | None = None) -> None:
        self.path = check_output_path(path, "JSON output")
        self.schema = schema
        self._temporary = Temporary(self.path)
        self.partial = self._temporary.path
        try:
            self._file = open(self.partial, "wb", buffering=0)  # noqa: SIM115 - closed in finish()
        except OSError as error:
            self._temporary.discard()
            raise output_error(self.path, error) from None
        self._complete_bytes = 0  # size of the file up to the last whole line
        self.frames_written = 0
        self.failed = False
        if settings is not None:
            try:
                self._write_line(json_line(header_record(settings)))
            except OutputError:
                self.discard()
                raise

    def write(self, result: FrameResult) -> None:
        if self.failed:
            return
        self._write_line(json_line(result_record(result, self.schema)))
        self.frames_written += 1

    def _write_line(self, line: str) -> None:
        data = memoryview(line.encode("utf-8"))
        try:
            while data:
                written = self._file.write(data)
                data = data[written:]
        except OSError as error:
            self.failed = True
            self._cut_back()
            kept = (f"its first {self.frames_written} frames are kept in {self.partial}" if self.frames_written
                    else "no frame had been written")
            raise output_error(self.path, error, kept) from None
        self._complete_bytes += len(line.encode("utf-8"))

    def _cut_back(self) -> None:
        try:
            os.ftruncate(self._file.fileno(), self._complete_bytes)
        except OSError:
            log.warning("could not cut %s back to its last complete line", self.partial)

    def _worth_keeping(self) -> bool:
        return self.frames_written > 0  # whole lines only (cut back on a failed write)

