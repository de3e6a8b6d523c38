"""Tracker benchmark: ours against the mmpose greedy-OKS and SORT baselines, and our time per frame.

All trackers see the same synthetic detections (``tracker.synthetic``): people walking on crossing
paths, hidden by each other and by a pillar, leaving and coming back, with keypoint noise, missed
joints, weak and false people, at an irregular frame rate. Scores are motmetrics' MOTA, IDF1 and ID
switches over several seeds together, for each tag mode (consistent per-person tags with drift, and
random tags) and tag dimension.

`--poses` (`run_real_scores`): every tracker over the same real detections, scored against MOTChallenge
ground truth with TrackEval (HOTA, MOTA, IDF1; `tracker/trackeval_scores.py`) or our centroid rule, with each
tracker's CPU time per frame.

Where MOTA is lost (`mota_breakdown`; docs/tracker.md, "Where MOTA is lost"): our tracker over the same
detections, each of TrackEval's false positives and misses given a cause (a loose box, a merge, a held-back
track, an unannotated person, ...):

    python -m tagtrack.bench.track --poses vtest.jsonl --gt gt.txt [--frames 1 200] [--weights default]
        [--set tracker.NAME=VALUE ...]

Given several files of detections of one sequence (`run_detection_sets`), it prints our tracker's TrackEval
scores on each and their mean instead: how a tracker change is judged (docs/tracker.md, "Running tags that
ignore blends").
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from tagtrack.model.schema import COCO17

from tagtrack.tracker.baselines import ByteTrackBoxTracker, GreedyOksTracker, SortTracker
from tagtrack.tracker.benchmark import TrackScores, make_sequences, score, time_per_frame
from tagtrack.tracker.config import TrackerConfig
from tagtrack.tracker.association import iou_matrix
from tagtrack.tracker.mot_eval import (
    FrameObjects,
    MatchRule,
    frame_objects,
    load_results,
    pose_centroids,
    pose_frames_to_score,
    read_mot_rows,
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
    pose_frames = pose_frames_to_score(poses_path, frames)
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


# ------------------------------------------------------------------------------ over several detection sets

@dataclass
class DetectionSetRow:
    poses_path: str
    scores: TrackEvalScores


def run_detection_sets(poses_paths: list[str], gt_path: str, config: TrackerConfig,
                       frames: range | None = None) -> list[DetectionSetRow]:
    """Our tracker over each file of detections of one sequence (JSON Lines of `tagtrack run --no-track
    --json`: other checkpoints, input sizes, decoder settings), TrackEval against the same ground truth.
    On a short clip one crossing resolved the other way moves a file's HOTA by up to 13 points, so a tracker
    change is judged by its mean over many such files, not by one."""
    truth = read_mot_rows(gt_path)
    frames = scored_frames(truth, frames)
    rows = []
    for path in tqdm(poses_paths, desc="detection sets"):
        results = load_results(path, gt_path, frames, config, MatchRule().min_joint_score)
        rows.append(DetectionSetRow(path, score_with_trackeval(truth, {"ours": results}, frames)["ours"]))
    return rows


def format_detection_sets(rows: list[DetectionSetRow], title: str) -> str:
    width = max([len("detections"), *(len(r.poses_path) for r in rows)])
    lines = [title, f"{'detections':<{width}} {'HOTA':>5} {'DetA':>5} {'AssA':>5} {'MOTA':>5} {'IDF1':>5} {'IDsw':>5}"]
    values = np.array([[100 * r.scores.hota, 100 * r.scores.deta, 100 * r.scores.assa, 100 * r.scores.mota,
                        100 * r.scores.idf1, r.scores.id_switches] for r in rows]).reshape(-1, 6)
    for row, v in zip(rows, values):
        lines.append(f"{row.poses_path:<{width}} {v[0]:5.1f} {v[1]:5.1f} {v[2]:5.1f} {v[3]:5.1f} {v[4]:5.1f} {v[5]:5.0f}")
    mean = values.mean(0)
    lines.append(f"{f'mean of {len(rows)}':<{width}} {mean[0]:5.1f} {mean[1]:5.1f} {mean[2]:5.1f} {mean[3]:5.1f} "
                 f"{mean[4]:5.1f} {mean[5]:5.1f}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ where MOTA is lost

# Causes of CLEAR's false positives and misses (`mota_breakdown`), in the order they are tried.
FP_CAUSES = (
    "on a don't-care person",             # MOT15 counts a result on a conf-0 row as a false positive
    "loose box, person alone",            # a true person is near (centroid rule or IoU >= 0.3), IoU < 0.5
    "loose box, person beside another",   # ... and another person stands beside them (one detection, two people)
    "duplicate",                          # the true person near it is already matched to another result
    "nobody near, confident",             # an unannotated person or a false one, score >= high_score
    "nobody near, weak",                  # ... score < high_score (a weak person that extended a track)
)
FN_CAUSES = (
    "loose box, person alone",            # a result near the person, IoU < 0.5 (the same loose box as above)
    "loose box, person beside another",
    "merged into a neighbour",            # the result near them is matched to another true person
    "held back (tentative track)",        # detected, IoU >= 0.5 or near, in a track not confirmed yet
    "weak detection no track took",       # detected below high_score and no track extended it
    "detection under low_score",          # detected, but under the tracker's floor
    "not detected",                       # no detection near
)


@dataclass
class Detection:
    """One person of a re-tracked frame: its box, score, reported track id (None: not reported) and the
    state of the track that took it ("tentative", "confirmed", None: no track), and its joints' centroid."""

    box: np.ndarray
    score: float
    track_id: int | None
    state: str | None
    centroid: np.ndarray


@dataclass
class MotaBreakdown:
    """CLEAR MOTA's loss, TrackEval's matching (IoU >= 0.5, a match of the previous frame kept first), with each
    false positive and miss given one cause (FP_CAUSES, FN_CAUSES)."""

    truth: int                              # ground-truth boxes scored
    id_switches: int
    false_positives: dict[str, int]
    misses: dict[str, int]

    @property
    def mota(self) -> float:
        return 1.0 - (sum(self.false_positives.values()) + sum(self.misses.values()) + self.id_switches) / self.truth


def retrack_detections(pose_frames: list, config: TrackerConfig,
                       min_joint_score: float = 0.2) -> list[tuple[int, list[Detection]]]:
    """Our tracker over every person of every frame, keeping the people it does not report and why (a reported
    person has the box the tracker reports, `TrackedPose.box`)."""
    tracker = PoseTracker(config)
    out = []
    for frame in pose_frames:
        tracked = tracker.update(frame.poses, frame.timestamp)
        reported = {id(t.pose): t.track_id for t in tracked}
        boxes = {id(t.pose): t.box for t in tracked}
        states = {id(t.pose): t.state.value for t in tracker.tracks if t.last_seen == frame.timestamp}
        centroids = pose_centroids(np.array([p.keypoints for p in frame.poses]).reshape(-1, COCO17.num_keypoints, 3)
                                   if frame.poses else np.zeros((0, 1, 3)), min_joint_score)
        out.append((frame.frame, [Detection(np.asarray(boxes.get(id(p), p.box), dtype=np.float64), float(p.score),
                                            reported.get(id(p)),
                                            states.get(id(p)), centroids[i]) for i, p in enumerate(frame.poses)]))
    return out


def _near(truth_boxes: np.ndarray, centroids: np.ndarray, iou: np.ndarray, max_distance: float = 0.5) -> np.ndarray:
    """[truth, detections]: the detection's joint centroid within max_distance box heights of the box centre
    (our centroid rule), or box IoU >= 0.3."""
    heights = np.maximum(truth_boxes[:, 3] - truth_boxes[:, 1], 1.0)
    centres = 0.5 * (truth_boxes[:, :2] + truth_boxes[:, 2:])
    distance = np.linalg.norm(centroids[None, :, :] - centres[:, None, :], axis=-1) / heights[:, None]
    return (distance <= max_distance) | (iou >= 0.3)


def _beside_another(boxes: np.ndarray) -> np.ndarray:
    """[N]: another person's box centre within 0.45 heights across and 0.3 heights up or down (two people whom a
    detector at this scale often finds as one)."""
    centres = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    heights = np.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
    gap = np.abs(centres[None, :, :] - centres[:, None, :]) / heights[:, None, None]
    close = (gap[..., 0] < 0.45) & (gap[..., 1] < 0.3)
    np.fill_diagonal(close, False)
    return close.any(1)


def mota_breakdown(truth: dict[int, FrameObjects], detections: list[tuple[int, list[Detection]]], frames: range,
                   config: TrackerConfig) -> MotaBreakdown:
    """Replays TrackEval's CLEAR matching on the reported people (its FP, FN and IDSW exactly) and gives each
    false positive and miss a cause."""
    fp = dict.fromkeys(FP_CAUSES, 0)
    fn = dict.fromkeys(FN_CAUSES, 0)
    switches, scored_total = 0, 0
    last_match: dict[int, int] = {}      # true id -> track id of its latest match (for switches)
    previous: dict[int, int] = {}        # true id -> track id matched in the previous frame (kept first)
    for frame, people in detections:
        if frame not in frames:
            continue
        everyone = truth.get(frame, FrameObjects.empty())
        boxes, ids = everyone.boxes[everyone.scored], everyone.ids[everyone.scored]
        dont_care = everyone.boxes[~everyone.scored]
        scored_total += len(ids)
        reported = [d for d in people if d.track_id is not None]
        found = np.array([d.box for d in reported]).reshape(-1, 4)
        iou = iou_matrix(boxes, found) if len(ids) and len(reported) else np.zeros((len(ids), len(reported)))
        keep = np.array([[previous.get(int(g)) == d.track_id for d in reported] for g in ids]).reshape(iou.shape)
        gain = np.where(iou >= 0.5 - np.finfo(float).eps, 1000.0 * keep + iou, 0.0)
        rows, cols = linear_sum_assignment(-gain)
        good = gain[rows, cols] > np.finfo(float).eps
        rows, cols = rows[good], cols[good]
        previous = {}
        for row, col in zip(rows, cols):
            true_id, track_id = int(ids[row]), int(reported[col].track_id)
            switches += true_id in last_match and last_match[true_id] != track_id
            last_match[true_id] = previous[true_id] = track_id
        matched_truth, matched_found = set(rows.tolist()), set(cols.tolist())
        centroids = np.array([d.centroid for d in reported]).reshape(-1, 2)
        near = _near(boxes, centroids, iou)
        beside = _beside_another(np.concatenate([boxes, dont_care]))[:len(ids)]
        if len(dont_care):
            dc_iou = iou_matrix(dont_care, found)
            on_dont_care = _near(dont_care, centroids, dc_iou).any(0) | (dc_iou >= 0.5).any(0)
        else:
            on_dont_care = np.zeros(len(reported), dtype=bool)
        for col, person in enumerate(reported):
            if col in matched_found:
                continue
            free = [row for row in np.flatnonzero(near[:, col]) if row not in matched_truth]
            if on_dont_care[col]:
                fp["on a don't-care person"] += 1
            elif free:
                fp["loose box, person beside another" if beside[free].any() else "loose box, person alone"] += 1
            elif near[:, col].any():
                fp["duplicate"] += 1
            else:
                fp["nobody near, confident" if person.score >= config.high_score else "nobody near, weak"] += 1
        unreported = [d for d in people if d.track_id is None]
        if unreported:
            other = np.array([d.box for d in unreported])
            other_iou = iou_matrix(boxes, other) if len(ids) else np.zeros((0, len(other)))
            other_near = _near(boxes, np.array([d.centroid for d in unreported]), other_iou) | (other_iou >= 0.5)
        for row in range(len(ids)):
            if row in matched_truth:
                continue
            cols_near = np.flatnonzero(near[row])
            if any(col not in matched_found for col in cols_near):
                fn["loose box, person beside another" if beside[row] else "loose box, person alone"] += 1
                continue
            candidates = [unreported[k] for k in np.flatnonzero(other_near[row])] if unreported else []
            if candidates:
                best = max(candidates, key=lambda d: d.score)
                if best.state == "tentative":
                    fn["held back (tentative track)"] += 1
                elif best.score < config.low_score:
                    fn["detection under low_score"] += 1
                else:
                    fn["weak detection no track took"] += 1
            elif len(cols_near):
                fn["merged into a neighbour"] += 1
            else:
                fn["not detected"] += 1
    return MotaBreakdown(scored_total, switches, fp, fn)


def run_breakdown(poses_path: str, gt_path: str, config: TrackerConfig, frames: range | None = None) -> MotaBreakdown:
    """`mota_breakdown` of our tracker over a `tagtrack run --no-track --json` file (state from its first frame)."""
    truth_rows = read_mot_rows(gt_path)
    frames = scored_frames(truth_rows, frames)
    pose_frames = pose_frames_to_score(poses_path, frames)
    return mota_breakdown(frame_objects(truth_rows), retrack_detections(pose_frames, config), frames, config)


def format_breakdown(breakdown: MotaBreakdown, title: str = "") -> str:
    b = breakdown
    points = 100.0 / max(b.truth, 1)
    lines = [title] if title else []
    lines += [f"{b.truth} true boxes; MOTA {100 * b.mota:.1f} = 100 - FP {sum(b.false_positives.values())} - FN "
              f"{sum(b.misses.values())} - IDSW {b.id_switches} (MOTA points lost in brackets)"]
    for kind, causes in (("FP", b.false_positives), ("FN", b.misses)):
        lines += [f"  {kind} {cause:<36} {count:5d}  ({points * count:4.1f})" for cause, count in causes.items()]
    lines.append(f"  IDSW {'':<35} {b.id_switches:5d}  ({points * b.id_switches:4.1f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from tagtrack.model.checkpoint import read_checkpoint_settings, resolve_weights
    from tagtrack.model.settings import resolve_settings, user_layers

    parser = argparse.ArgumentParser(description="Where our tracker's MOTA is lost on real detections: TrackEval's "
                                                 "false positives and misses, each with a cause.")
    parser.add_argument("--poses", required=True, nargs="+",
                        help="JSON Lines of `tagtrack run --no-track --json`; several files (of one sequence): our "
                             "tracker's TrackEval scores on each and their mean instead of the breakdown")
    parser.add_argument("--gt", required=True, help="MOTChallenge ground truth")
    parser.add_argument("--frames", type=int, nargs=2, default=None, metavar=("FIRST", "LAST"),
                        help="scored frames (the tracker runs from the file's first frame); default: the ground "
                             "truth's")
    parser.add_argument("--weights", default="default", help="the model whose stored tracker settings to start from")
    parser.add_argument("--set", dest="set_values", action="append", default=[], metavar="tracker.NAME=VALUE")
    args = parser.parse_args(argv)
    stored = read_checkpoint_settings(resolve_weights(args.weights))
    config = resolve_settings(stored, user_layers(assignments=args.set_values)).tracker
    frames = None if args.frames is None else range(args.frames[0], args.frames[1] + 1)
    if len(args.poses) > 1:
        print(format_detection_sets(run_detection_sets(args.poses, args.gt, config, frames),
                                    f"our tracker ({args.weights} model's settings) against {args.gt}"))
        return 0
    print(format_breakdown(run_breakdown(args.poses[0], args.gt, config, frames),
                           f"{args.poses[0]} against {args.gt}, our tracker ({args.weights} model's settings)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
