"""tagtrack: real-time multi-person pose estimation and tracking with associative embedding.

    import tagtrack

    estimator = tagtrack.PoseEstimator()              # the bundled default model
    people = estimator(image_bgr)                     # list[Person]: keypoints by name, score, box, tag
    for frame in tagtrack.track("video.mp4"):         # or 0 (camera), a folder, rtsp://...
        frame.index, frame.timestamp, frame.people    # people with track_id
    tagtrack.track("video.mp4", out="annotated.mp4", json="poses.jsonl")   # the files `tagtrack run` writes

The public API is the names below (documented in `tagtrack.realtime.api`); everything else is
internal. The repository root is this package: its folders install as `tagtrack.model`,
`tagtrack.training`, `tagtrack.tracker`, `tagtrack.realtime` and `tagtrack.bench`; the command line
is `tagtrack.main`. The API is imported on first use, so `tagtrack --help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> the module that defines it (imported when the name is first used).
_PUBLIC = {
    "PoseEstimator": "tagtrack.realtime.api",
    "track": "tagtrack.realtime.api",
    "demo_video": "tagtrack.realtime.api",
    "Person": "tagtrack.realtime.api",
    "Keypoint": "tagtrack.realtime.api",
    "TrackedFrame": "tagtrack.realtime.api",
    "FrameStream": "tagtrack.realtime.api",
    "RunSummary": "tagtrack.realtime.pipeline",
    "UserFacingError": "tagtrack.model.errors",
    "MissingExtraError": "tagtrack.model.errors",
    "run_many": "tagtrack.realtime.batch",
    "FileResult": "tagtrack.realtime.batch",
}

__all__ = sorted(_PUBLIC)

if TYPE_CHECKING:
    from tagtrack.model.errors import MissingExtraError, UserFacingError
    from tagtrack.realtime.api import FrameStream, Keypoint, Person, PoseEstimator, TrackedFrame, track
    from tagtrack.realtime.batch import FileResult, run_many
    from tagtrack.realtime.pipeline import RunSummary


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'tagtrack' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
