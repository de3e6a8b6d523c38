"""The JSON Lines record of poses (`tagtrack run --json`, `predict --json`, the API): written and read here only.

A file is a header line, {"schema_version", "settings"}, then one line per frame (layout:
realtime/pose_jsonl.schema.json). Each person is `{"track_id", "score", "box", "keypoints": {name: {x, y,
score}}, "tag"}`, with the model's own keypoint names, so any keypoint set is written and read back: a reader
takes the names from the header (`settings["keypoints"]`), else from the file's first person.

Numbers are rounded once, here: pixels to 0.01, scores and tags to 1e-4, scores clipped to [0, 1] (a network's
heatmap peak can overshoot 1 a little), and a non-finite number written as 0 (JSON has no NaN). The exports
(realtime/exports.py) round with the same two functions, so every output of a run carries the same numbers.

This module lives in model/ because the realtime sinks, the API and the tracker's `eval-track` reader all
use it, and tracker/ may import from model/ only (docs/design.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagtrack.model.errors import UserFacingError
from tagtrack.model.pose import Pose
from tagtrack.model.schema import KeypointSchema

# Version of the record layout (realtime/pose_jsonl.schema.json). Bump on any change that could break a
# reader. 2: every detected person is written; track_id is null until the tracker confirms the person (and
# always without tracking); scores are clipped to [0, 1]. 3: a file written by a run starts with a header
# line, {"schema_version", "settings"} (no frame_index).
JSONL_SCHEMA_VERSION = 3
PIXEL_DIGITS = 2
SCORE_DIGITS = 4


# ---------------------------------------------------------------------------------------------- numbers


def rounded(value: float, digits: int = PIXEL_DIGITS) -> float:
    """A number as the outputs write it: rounded, and 0 where it is not finite (JSON has no NaN)."""
    value = float(value)
    return round(value, digits) if math.isfinite(value) else 0.0


def unit_score(value: float, digits: int = SCORE_DIGITS) -> float:
    """A score as the outputs write it: rounded and clipped to [0, 1]."""
    return min(1.0, max(0.0, rounded(value, digits)))


# ---------------------------------------------------------------------------------------------- writing


def person_record(pose: Pose, schema: KeypointSchema, track_id: int | None = None,
                  box: np.ndarray | None = None) -> dict:
    """One person: track_id (None: no confirmed track), score, box (the given one, as the tracker reports it;
    else the pose's), keypoints by the schema's names, tag."""
    keypoints = np.asarray(pose.keypoints, dtype=np.float64)
    return {
        "track_id": None if track_id is None else int(track_id),
        "score": unit_score(pose.score),
        "box": [rounded(v) for v in np.asarray(pose.box if box is None else box).reshape(4)],
        "keypoints": {
            name: {"x": rounded(keypoints[k, 0]), "y": rounded(keypoints[k, 1]), "score": unit_score(keypoints[k, 2])}
            for k, name in enumerate(schema.keypoint_names)
        },
        "tag": [rounded(v, SCORE_DIGITS) for v in np.asarray(pose.tag).reshape(-1)],
    }


def frame_record(index: int, timestamp: float, source_id: str, image_hw: tuple[int, int], people: list[dict],
                 dropped: int = 0) -> dict:
    """One frame: its 0-based index, source time in seconds, source, image size, dropped count and people
    (`person_record`s)."""
    height, width = image_hw
    return {
        "schema_version": JSONL_SCHEMA_VERSION,
        "frame_index": int(index),
        "timestamp": rounded(timestamp, 6),
        "source_id": source_id,
        "image": {"width": int(width), "height": int(height)},
        "dropped": int(dropped),
        "people": people,
    }


def header_record(settings: dict) -> dict:
    """The first line of a run's file: the effective settings (realtime/run.py: run_settings)."""
    return {"schema_version": JSONL_SCHEMA_VERSION, "settings": settings}


def is_header(record: dict) -> bool:
    """A record that describes the run rather than a frame."""
    return "frame_index" not in record


def json_line(record: dict) -> str:
    """A record as one line of the file (compact, no NaN)."""
    return json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class PersonRecord:
    """A person as read back: the pose (keypoints [K,3] float32 in the file's keypoint order) and its track id."""

    pose: Pose
    track_id: int | None


@dataclass
class FrameRecord:
    """A frame as read back; `line` is its line in the file (1-based), for messages."""

    index: int
    timestamp: float
    source_id: str
    width: int
    height: int
    dropped: int
    people: list[PersonRecord]
    line: int = 0


@dataclass
class PoseFile:
    """A whole file: the header's settings (None in files without one), the keypoint names the people were read
    with (None when the file names none: no header and nobody in it) and the frames in file order."""

    path: Path
    settings: dict | None
    keypoint_names: tuple[str, ...] | None
    frames: list[FrameRecord]


def person_from_record(record: dict, keypoint_names: Sequence[str]) -> PersonRecord:
    """A person record -> PersonRecord, its joints in the order of `keypoint_names` (KeyError when one is missing)."""
    keypoints = np.array([[record["keypoints"][name][k] for k in ("x", "y", "score")] for name in keypoint_names],
                         dtype=np.float32).reshape(len(keypoint_names), 3)
    pose = Pose(keypoints=keypoints, score=float(record["score"]), box=np.asarray(record["box"], dtype=np.float32),
                tag=np.asarray(record.get("tag", []), dtype=np.float32))
    track_id = record.get("track_id")
    return PersonRecord(pose, None if track_id is None else int(track_id))


def frame_from_record(record: dict, keypoint_names: Sequence[str], line: int = 0) -> FrameRecord:
    """A frame record -> FrameRecord (KeyError, TypeError or ValueError when it is not one)."""
    image = record.get("image", {})
    return FrameRecord(
        index=int(record["frame_index"]), timestamp=float(record["timestamp"]),
        source_id=str(record.get("source_id", "")), width=int(image.get("width", 0)),
        height=int(image.get("height", 0)), dropped=int(record.get("dropped", 0)),
        people=[person_from_record(person, keypoint_names) for person in record["people"]], line=line)


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) of every non-empty line; a line that is not a JSON object is one UserFacingError."""
    if not path.is_file():
        raise UserFacingError(f"poses file {path} does not exist")
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                raise UserFacingError(f"{path} line {number} is not a tagtrack JSON Lines record ({error!r})")
            if not isinstance(record, dict):
                raise UserFacingError(f"{path} line {number} is not a tagtrack JSON Lines record (not an object)")
            yield number, record


def read_pose_lines(path: str | Path) -> tuple[dict | None, list[dict]]:
    """The file's records as they are: (the header's settings or None for files without one, the frame records)."""
    settings, frames = None, []
    for _, record in _records(Path(path)):
        if is_header(record):
            settings = record.get("settings")
        else:
            frames.append(record)
    return settings, frames


def _file_keypoint_names(settings: dict | None, frames: list[tuple[int, dict]]) -> tuple[str, ...] | None:
    """The names the file was written with: the header's, else the first person's (JSON keeps their order)."""
    if isinstance(settings, dict) and settings.get("keypoints"):
        return tuple(settings["keypoints"])
    for _, record in frames:
        for person in record.get("people") or ():
            if isinstance(person, dict) and isinstance(person.get("keypoints"), dict):
                return tuple(person["keypoints"])
    return None


def read_pose_file(path: str | Path, keypoint_names: Sequence[str] | None = None) -> PoseFile:
    """A file of poses, every person as a Pose with its track id.

    keypoint_names: the joints to read, in this order (e.g. a schema's, to refuse a file of another keypoint
    set); None: the file's own (`_file_keypoint_names`). A record that is not a frame of this layout, or a person
    without one of the names, is one UserFacingError naming the file and the line."""
    path = Path(path)
    settings, raw = None, []
    for number, record in _records(path):
        if is_header(record):
            settings = record.get("settings")
        else:
            raw.append((number, record))
    names = tuple(keypoint_names) if keypoint_names is not None else _file_keypoint_names(settings, raw)
    frames = []
    for number, record in raw:
        try:
            frames.append(frame_from_record(record, names or (), number))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise UserFacingError(f"{path} line {number} is not a tagtrack JSON Lines record ({error!r})")
    return PoseFile(path, settings, names, frames)
