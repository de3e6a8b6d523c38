"""Scoring trackers on synthetic sequences with motmetrics (MOTA, IDF1, ID switches), and timing ours."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import motmetrics
import numpy as np

from model.pose import Pose
from tracker.association import iou_matrix
from tracker.config import TrackerConfig
from tracker.synthetic import SceneConfig, SyntheticSequence, generate_sequence
from tracker.tracker import PoseTracker, TrackedPose

MATCH_IOU = 0.5  # a tracker's box counts as a ground-truth person's when their IoU is at least this


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


def accumulate(tracker: Tracker, sequence: SyntheticSequence) -> motmetrics.MOTAccumulator:
    """Run a fresh tracker over a sequence; match its output to the truth by box IoU."""
    accumulator = motmetrics.MOTAccumulator(auto_id=True)
    for frame in sequence.frames:
        tracked = tracker.update(frame.poses, frame.timestamp)
        hypothesis_boxes = np.array([t.pose.box for t in tracked], dtype=np.float64).reshape(-1, 4)
        # motmetrics.distances.iou_matrix uses np.asfarray, gone in NumPy 2: same distance computed here.
        distances = 1.0 - iou_matrix(np.asarray(frame.gt_boxes, dtype=np.float64), hypothesis_boxes)
        distances[distances > 1.0 - MATCH_IOU] = np.nan
        accumulator.update(frame.gt_ids, [t.track_id for t in tracked], distances)
    return accumulator


def score(make_tracker: Callable[[], Tracker], sequences: list[SyntheticSequence]) -> TrackScores:
    """MOTA, IDF1 and ID switches of a tracker over several sequences together."""
    accumulators = [accumulate(make_tracker(), sequence) for sequence in sequences]
    metrics = motmetrics.metrics.create()
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
