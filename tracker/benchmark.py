"""Scoring trackers on synthetic sequences with motmetrics (MOTA, IDF1, ID switches), and timing ours."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from tagtrack.model.errors import import_extra
from tagtrack.model.pose import Pose
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.tracker.association import oks_matrix
from tagtrack.tracker.config import TrackerConfig
from tagtrack.tracker.synthetic import SceneConfig, SyntheticSequence, generate_sequence
from tagtrack.tracker.tracker import PoseTracker, TrackedPose

if TYPE_CHECKING:
    import motmetrics

MATCH_OKS = 0.5  # a tracker's pose counts as a true person's when their OKS is at least this


def _motmetrics():
    """motmetrics is the `bench` extra; timing alone (time_per_frame) does not need it."""
    return import_extra("motmetrics", "bench", "scoring trackers (MOTA, IDF1)")


class Tracker(Protocol):
    def update(self, poses: list[Pose], timestamp: float) -> list[TrackedPose]: ...


@dataclass
class TrackScores:
    mota: float
    idf1: float
    id_switches: int
    false_positives: int
    misses: int
    frames: int


def accumulate(tracker: Tracker, sequence: SyntheticSequence,
               schema: KeypointSchema = COCO17) -> motmetrics.MOTAccumulator:
    """Run a fresh tracker over a sequence; match its output to the truth by keypoint similarity.

    OKS (COCO) between each true person's joints (those the detection found, at their noise-free
    places; scale: the whole body's box) and the tracker's pose; a pair counts from OKS 0.5 up.
    Box IoU would miss people seen by a few joints, whose small boxes the keypoint noise dominates.
    """
    sigmas = schema.sigmas_array().astype(np.float64)
    accumulator = _motmetrics().MOTAccumulator(auto_id=True)
    for frame in sequence.frames:
        tracked = tracker.update(frame.poses, frame.timestamp)
        truth = np.asarray(frame.gt_keypoints, dtype=np.float64)
        found = np.array([t.pose.keypoints for t in tracked], dtype=np.float64).reshape(-1, schema.num_keypoints, 3)
        similarity = np.zeros((len(truth), len(found)))
        if len(truth) and len(found):
            span = truth[:, :, :2].max(1) - truth[:, :, :2].min(1)
            similarity = oks_matrix(truth[:, :, :2], truth[:, :, 2] > 0, span[:, 0] * span[:, 1],
                                    found[:, :, :2], found[:, :, 2] > 0, sigmas)
        distances = 1.0 - similarity
        distances[similarity < MATCH_OKS] = np.nan
        accumulator.update(frame.gt_ids, [t.track_id for t in tracked], distances)
    return accumulator


def score(make_tracker: Callable[[], Tracker], sequences: list[SyntheticSequence]) -> TrackScores:
    """MOTA, IDF1 and ID switches of a tracker over several sequences together."""
    accumulators = [accumulate(make_tracker(), sequence) for sequence in sequences]
    metrics = _motmetrics().metrics.create()
    logging.disable(logging.INFO)  # motmetrics logs its own timings at INFO on the root logger
    try:
        summary = metrics.compute_many(
            accumulators, metrics=["mota", "idf1", "num_switches", "num_false_positives", "num_misses", "num_frames"],
            names=[str(i) for i in range(len(accumulators))], generate_overall=True,
        )
    finally:
        logging.disable(logging.NOTSET)
    overall = summary.loc["OVERALL"]
    return TrackScores(
        mota=float(overall["mota"]), idf1=float(overall["idf1"]), id_switches=int(overall["num_switches"]),
        false_positives=int(overall["num_false_positives"]), misses=int(overall["num_misses"]),
        frames=int(overall["num_frames"]),
    )


def make_sequences(scene: SceneConfig, seeds: list[int]) -> list[SyntheticSequence]:
    return [generate_sequence(scene, seed) for seed in seeds]


def time_per_frame(num_people: int, config: TrackerConfig | None = None, frames: int = 300, seed: int = 0,
                   repeats: int = 2) -> float:
    """Seconds per `update` of our tracker with `num_people` people in view (best of `repeats` runs).

    The scene is a wide crowd at 30 fps without false people, so every person is tracked every frame.
    """
    scene = SceneConfig(width=max(1280, 200 * num_people), num_people=num_people, duration=frames / 30.0,
                        false_people=0.0, occluders=0, frame_drop=0.0, weak_person=0.0)
    sequence = generate_sequence(scene, seed)
    best = float("inf")
    for _ in range(repeats):
        tracker = PoseTracker(config or TrackerConfig())
        start = time.process_time()
        for frame in sequence.frames:
            tracker.update(frame.poses, frame.timestamp)
        best = min(best, (time.process_time() - start) / len(sequence.frames))
    return best


@dataclass
class SmoothingError:
    raw: float       # mean distance of the detected joints from the truth, in pixels
    smoothed: float  # the same for the tracker's smoothed joints


def smoothing_error(config: TrackerConfig, sequences: list[SyntheticSequence]) -> SmoothingError:
    """How far the output joints lie from the true ones, with and without the One-Euro smoothing."""
    raw, smoothed = [], []
    for sequence in sequences:
        tracker = PoseTracker(config)
        for frame in sequence.frames:
            truth_of = dict(zip(frame.gt_ids, frame.gt_keypoints))
            person_of = {id(pose): person for pose, person in zip(frame.poses, frame.truth_ids)}
            for tracked in tracker.update(frame.poses, frame.timestamp):
                person = person_of[id(tracked.pose)]
                if person < 0:
                    continue
                found = tracked.pose.keypoints[:, 2] > 0
                truth = truth_of[person][found, :2]
                raw.append(np.linalg.norm(tracked.pose.keypoints[found, :2] - truth, axis=1))
                smoothed.append(np.linalg.norm(tracked.keypoints_smoothed[found, :2] - truth, axis=1))
    return SmoothingError(raw=float(np.concatenate(raw).mean()), smoothed=float(np.concatenate(smoothed).mean()))
