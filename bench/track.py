"""Tracker benchmark: ours against the mmpose greedy-OKS and SORT baselines, and our time per frame.

All trackers see the same synthetic detections (``tracker.synthetic``): people walking on crossing
paths, hidden by each other and by a pillar, leaving and coming back, with keypoint noise, missed
joints, weak and false people, at an irregular frame rate. Scores are motmetrics' MOTA, IDF1 and ID
switches over several seeds together, for each tag mode (consistent per-person tags with drift, and
random tags) and tag dimension.

`--poses` (`run_real_scores`): every tracker over the same real detections, scored against MOTChallenge
ground truth with TrackEval (HOTA, MOTA, IDF1; `tracker/trackeval_scores.py`) or our centroid rule, with each
tracker's CPU time per frame.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from tqdm import tqdm

from tagtrack.tracker.baselines import ByteTrackBoxTracker, GreedyOksTracker, SortTracker
from tagtrack.tracker.benchmark import TrackScores, make_sequences, score, time_per_frame
from tagtrack.tracker.config import TrackerConfig
from tagtrack.tracker.mot_eval import (
    MatchRule,
    check_pose_frames,
    frame_objects,
    read_mot_rows,
    read_pose_frames,
    retrack,
    score_tracks,
    scored_frames,
)
from tagtrack.tracker.synthetic import SceneConfig
from tagtrack.tracker.tracker import PoseTracker
from tagtrack.tracker.trackeval_scores import TrackEvalScores, score_with_trackeval

TAG_MODES = ("consistent", "random")


@dataclass
class TableRow:
    tag_mode: str
    tag_dim: int
    tracker: str
    scores: TrackScores


def trackers(config: TrackerConfig) -> dict[str, object]:
    """Name -> factory of a fresh tracker, for every tracker in the table."""
    geometry = dataclasses.replace(config, use_tags=False)
    return {
        "ours": lambda: PoseTracker(config),
        "ours, geometry only": lambda: PoseTracker(geometry),
        "greedy OKS (mmpose)": GreedyOksTracker,
        "SORT": SortTracker,
        "ByteTrack (boxes)": ByteTrackBoxTracker,
    }


def run_scores(seeds: list[int], tag_dims: list[int], config: TrackerConfig | None = None,
               scene: SceneConfig | None = None, progress: bool = True) -> list[TableRow]:
    config = config or TrackerConfig()
    scene = scene or SceneConfig()
    rows = []
    cases = [(mode, dim) for mode in TAG_MODES for dim in tag_dims]
    for mode, dim in tqdm(cases, desc="scenes", disable=not progress):
        sequences = make_sequences(dataclasses.replace(scene, tag_mode=mode, tag_dim=dim), seeds)
        for name, make in trackers(config).items():
            rows.append(TableRow(mode, dim, name, score(make, sequences)))
    return rows


def run_timing(people: list[int], config: TrackerConfig | None = None, frames: int = 300) -> dict[int, float]:
    """Seconds of CPU time per update of our tracker with n people in view."""
    return {n: time_per_frame(n, config, frames=frames) for n in people}


def format_scores(rows: list[TableRow], seeds: list[int]) -> str:
    lines = [f"tracking on synthetic scenes, seeds {seeds} together (a pose counts as found from OKS 0.5)",
             f"{'tags':<11} {'L':>2}  {'tracker':<22} {'IDF1':>6} {'MOTA':>6} {'ID sw':>6} {'FP':>5} {'miss':>5}"]
    for row in rows:
        s = row.scores
        lines.append(f"{row.tag_mode:<11} {row.tag_dim:>2}  {row.tracker:<22} {s.idf1:6.3f} {s.mota:6.3f} "
                     f"{s.id_switches:6d} {s.false_positives:5d} {s.misses:5d}")
    return "\n".join(lines)


def format_timing(timing: dict[int, float]) -> str:
    lines = ["our tracker, CPU time per frame (best of 2 runs of 300 frames)", f"{'people':>6} {'ms':>7}"]
    lines += [f"{n:>6} {seconds * 1e3:7.3f}" for n, seconds in timing.items()]
    return "\n".join(lines)


@dataclass
class RealRow:
    """One tracker over real detections: its scores (TrackEvalScores, or MotScores with the centroid rule) and
    its CPU time per frame (update only; the detections are given)."""

    tracker: str
    scores: object
    seconds_per_frame: float


def _timed_retrack(pose_frames, tracker, min_joint_score: float) -> tuple[dict, float]:
    started = time.process_time()
    results = retrack(pose_frames, tracker, min_joint_score)
    return results, (time.process_time() - started) / max(len(pose_frames), 1)


def run_real_scores(poses_path: str, gt_path: str, config: TrackerConfig | None = None,
                    frames: range | None = None, rule: MatchRule | None = None, protocol: str = "trackeval",
                    progress: bool = True) -> list[RealRow]:
    """Every tracker of the table over the same real detections (JSON Lines of `tagtrack run --no-track
    --json`), scored against MOTChallenge ground truth: TrackEval's HOTA / CLEAR / Identity on the people's
    boxes (protocol "trackeval"), or our centroid rule with py-motmetrics ("motmetrics", `rule`). Each tracker
    sees every frame of the file up to the last scored one (state carries over), and only the scored frames
    count. Note: every tracker reports the people's boxes (`Pose.box`) as they are in the file."""
    config = config or TrackerConfig()
    rule = rule or MatchRule()
    truth = read_mot_rows(gt_path)
    frames = scored_frames(truth, frames)
    pose_frames = read_pose_frames(poses_path)
    check_pose_frames(poses_path, pose_frames, frames)
    pose_frames = [f for f in pose_frames if f.frame < frames.stop]  # nothing after the last scored frame
    results, times = {}, {}
    for name, make in tqdm(trackers(config).items(), desc="trackers", disable=not progress):
        results[name], times[name] = _timed_retrack(pose_frames, make(), rule.min_joint_score)
    if protocol == "trackeval":
        scores = score_with_trackeval(truth, results, frames)
    else:
        scores = {name: score_tracks(frame_objects(truth), found, frames, rule) for name, found in results.items()}
    return [RealRow(name, scores[name], times[name]) for name in results]


def format_real_scores(rows: list[RealRow], title: str) -> str:
    if rows and isinstance(rows[0].scores, TrackEvalScores):
        protocol = rows[0].scores.protocol
        lines = [title, f"TrackEval, {protocol} protocol (boxes matched at IoU >= 0.5); ms: CPU time per frame of "
                        f"the tracker alone",
                 f"{'tracker':<22} {'HOTA':>5} {'DetA':>5} {'AssA':>5} {'MOTA':>5} {'IDF1':>5} {'IDsw':>4} "
                 f"{'frag':>4} {'FP':>5} {'FN':>5} {'MT':>3} {'ML':>3} {'ids':>4} {'ms':>5}"]
        for row in rows:
            s = row.scores
            lines.append(f"{row.tracker:<22} {100 * s.hota:5.1f} {100 * s.deta:5.1f} {100 * s.assa:5.1f} "
                         f"{100 * s.mota:5.1f} {100 * s.idf1:5.1f} {s.id_switches:4d} {s.fragmentations:4d} "
                         f"{s.false_positives:5d} {s.misses:5d} {s.mostly_tracked:3d} {s.mostly_lost:3d} "
                         f"{s.num_track_ids:4d} {1e3 * row.seconds_per_frame:5.2f}")
        return "\n".join(lines)
    lines = [title, "our centroid rule (py-motmetrics); ms: CPU time per frame of the tracker alone",
             f"{'tracker':<22} {'MOTA':>5} {'IDF1':>5} {'ID sw':>5} {'frag':>5} {'recall':>6} {'prec':>5} "
             f"{'FP':>4} {'miss':>5} {'MT':>3} {'ML':>3} {'ids':>4} {'ms':>5}"]
    for row in rows:
        s = row.scores
        lines.append(f"{row.tracker:<22} {100 * s.mota:5.1f} {100 * s.idf1:5.1f} {s.id_switches:5d} "
                     f"{s.fragmentations:5d} {100 * s.recall:6.1f} {100 * s.precision:5.1f} {s.false_positives:4d} "
                     f"{s.misses:5d} {s.mostly_tracked:3d} {s.mostly_lost:3d} {s.num_track_ids:4d} "
                     f"{1e3 * row.seconds_per_frame:5.2f}")
    return "\n".join(lines)
