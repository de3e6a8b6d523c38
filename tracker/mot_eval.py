"""Tracks scored against MOTChallenge ground truth: reading and checking the files, and our centroid rule.

Ground truth and box results are MOTChallenge text files (`frame,id,left,top,width,height,conf,x,y,z`,
frames 1-based; ground-truth rows with conf 0 are people not to be scored). Our poses come from the
JSON Lines of `tagtrack run --json` (frame_index 0-based: MOT frame = frame_index + 1), scored by their boxes.

The default protocol is TrackEval's (HOTA, CLEAR MOTA, Identity IDF1 on boxes at IoU >= 0.5:
`tracker/trackeval_scores.py`), what published trackers report. This module also keeps our own rule, scored
with py-motmetrics: a pose is a ground-truth person's when the centroid of its confident joints lies within
`max_distance` (0.5) box heights of the box centre (it ignores how good the box is); box results can be
matched by IoU >= `min_iou` the same way. As in the MOTChallenge devkit, a result matched to a don't-care
person is dropped before scoring (neither a hit nor a false positive).
(`motmetrics.distances.iou_matrix` calls `np.asfarray`, gone in NumPy 2, so distances are computed here.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import motmetrics
import numpy as np

from tagtrack.model.errors import UserFacingError
from tagtrack.model.pose import Pose
from tagtrack.model.records import read_pose_file
from tagtrack.tracker.association import FORBIDDEN, assign, iou_matrix

MATCH_MODES = ("centroid", "iou")


@dataclass
class FrameObjects:
    """The people of one frame: ids [N], boxes [N, 4] (x1, y1, x2, y2), points [N, 2] (where each is),
    scored [N] (False: don't care)."""

    ids: np.ndarray
    boxes: np.ndarray
    points: np.ndarray
    scored: np.ndarray

    @staticmethod
    def empty() -> FrameObjects:
        return FrameObjects(np.zeros(0, dtype=np.int64), np.zeros((0, 4)), np.zeros((0, 2)), np.zeros(0, dtype=bool))


@dataclass
class PoseFrame:
    """One frame of a JSON Lines file: its MOT frame number (1-based), time, poses, their track ids, its line."""

    frame: int
    timestamp: float
    poses: list[Pose]
    track_ids: list[int | None]
    line: int = 0


@dataclass
class MatchRule:
    mode: str = "centroid"        # centroid (poses against pedestrian boxes) or iou (box results)
    max_distance: float = 0.5     # centroid mode: at most this many box heights from the box centre
    min_iou: float = 0.5          # iou mode
    min_joint_score: float = 0.2  # joints at least this confident make the centroid

    def __post_init__(self) -> None:
        if self.mode not in MATCH_MODES:
            raise ValueError(f"match mode must be one of {MATCH_MODES}, got {self.mode!r}")


@dataclass
class MotScores:
    mota: float
    idf1: float
    id_switches: int
    fragmentations: int
    recall: float
    precision: float
    false_positives: int
    misses: int
    mostly_tracked: int
    partially_tracked: int
    mostly_lost: int
    num_objects: int       # ground-truth people scored
    num_track_ids: int     # distinct ids the tracker reported in the scored frames
    max_track_id: int
    frames: int


# ---------------------------------------------------------------------------------------------- reading


MOT_COLUMNS = 10  # frame, id, left, top, width, height, conf, x, y, z (class, visibility in MOT16/17 files)
_MOT_DEFAULTS = (1.0, -1.0, -1.0, -1.0)  # conf, x, y, z of a row with only the first six columns


@dataclass
class MotRows:
    """A MOTChallenge file as read: values [N, 10] (short rows padded with conf 1 and -1) and the line of each."""

    path: Path
    values: np.ndarray
    lines: np.ndarray

    def frames(self) -> np.ndarray:
        return self.values[:, 0].astype(np.int64)

    def line_of_frame(self, frame: int, last: bool = True) -> int:
        """The line of the last (or first) row of `frame`, 0 when it has none."""
        lines = self.lines[self.frames() == frame]
        return int(lines.max() if last else lines.min()) if len(lines) else 0


def read_mot_rows(path: str | Path) -> MotRows:
    """Every row of a MOTChallenge text file, checked: numbers, whole frame (>= 1) and id, width and height
    >= 0, and no id twice in one frame. Bad input is one UserFacingError naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise UserFacingError(f"MOT file {path} does not exist")
    values, lines, seen = [], [], {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserFacingError(f"{path} is not a MOTChallenge file (frame,id,left,top,width,height,...): {error}")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        try:
            row = [float(field) for field in fields]
        except ValueError:
            row = []
        if len(row) < 6 or not np.all(np.isfinite(row)):
            raise UserFacingError(f"{path} is not a MOTChallenge file: line {number} ({line.strip()[:60]!r}) is not "
                                  f"frame,id,left,top,width,height[,conf,x,y,z] numbers")
        frame, track = row[0], row[1]
        if frame != int(frame) or frame < 1 or track != int(track):
            raise UserFacingError(f"{path} line {number}: the frame ({fields[0]}) must be a whole number >= 1 and "
                                  f"the id ({fields[1]}) a whole number")
        if row[4] < 0 or row[5] < 0:
            raise UserFacingError(f"{path} line {number}: negative box width or height ({fields[4]}, {fields[5]})")
        key = (int(frame), int(track))
        if key in seen:
            raise UserFacingError(f"{path} line {number}: id {key[1]} appears twice in frame {key[0]} "
                                  f"(also line {seen[key]})")
        seen[key] = number
        row = row[:MOT_COLUMNS] + list(_MOT_DEFAULTS[max(len(row) - 6, 0):MOT_COLUMNS - 6])
        values.append(row)
        lines.append(number)
    return MotRows(path, np.array(values, dtype=np.float64).reshape(-1, MOT_COLUMNS),
                   np.array(lines, dtype=np.int64))


def frame_objects(rows: MotRows) -> dict[int, FrameObjects]:
    """MOTChallenge rows -> {frame: FrameObjects}; conf 0 rows are don't care; points are box centres."""
    values = rows.values
    frames: dict[int, FrameObjects] = {}
    for frame in np.unique(values[:, 0]).astype(np.int64):
        part = values[values[:, 0] == frame]
        boxes = np.concatenate([part[:, 2:4], part[:, 2:4] + part[:, 4:6]], axis=1)
        frames[int(frame)] = FrameObjects(part[:, 1].astype(np.int64), boxes, 0.5 * (boxes[:, :2] + boxes[:, 2:]),
                                          part[:, 6] != 0)
    return frames


def read_mot_file(path: str | Path) -> dict[int, FrameObjects]:
    """A MOTChallenge file -> {frame: FrameObjects}; conf 0 rows are don't care; points are box centres."""
    return frame_objects(read_mot_rows(path))


def read_pose_frames(path: str | Path, keypoint_names: Sequence[str] | None = None) -> list[PoseFrame]:
    """The frames of a `tagtrack run --json` file, with every person as a Pose and its track id (or None).
    Read by model/records.py, with the file's own keypoints (any keypoint set) unless `keypoint_names` says
    which to read."""
    return [PoseFrame(record.index + 1, record.timestamp, [person.pose for person in record.people],
                      [person.track_id for person in record.people], record.line)
            for record in read_pose_file(path, keypoint_names).frames]


# ---------------------------------------------------------------------------------------------- matching


def pose_centroids(keypoints: np.ndarray, min_joint_score: float) -> np.ndarray:
    """[N, K, 3] -> [N, 2]: mean of the joints scoring at least min_joint_score (of all found ones if none)."""
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, keypoints.shape[-2] if keypoints.size else 1, 3)
    confident = keypoints[:, :, 2] >= min_joint_score
    fallback = ~confident.any(1)
    confident[fallback] = keypoints[fallback, :, 2] > 0
    weight = confident.astype(np.float64)
    return (keypoints[:, :, :2] * weight[..., None]).sum(1) / np.maximum(weight.sum(1), 1.0)[:, None]


def tracked_objects(poses: list[Pose], track_ids: list[int], min_joint_score: float,
                    boxes: list[np.ndarray] | None = None) -> FrameObjects:
    """A tracker's output of one frame as FrameObjects (points: the confident joints' centroids; boxes: the
    poses' own unless given, e.g. the tracker's `TrackedPose.box`)."""
    if not poses:
        return FrameObjects.empty()
    keypoints = np.array([p.keypoints for p in poses], dtype=np.float64)
    boxes = np.array([p.box for p in poses] if boxes is None else boxes, dtype=np.float64).reshape(-1, 4)
    return FrameObjects(np.asarray(track_ids, dtype=np.int64), boxes, pose_centroids(keypoints, min_joint_score),
                        np.ones(len(poses), dtype=bool))


def distance_matrix(truth: FrameObjects, found: FrameObjects, rule: MatchRule) -> np.ndarray:
    """[truth, found] distances, NaN where a pair may not match (motmetrics' convention)."""
    if rule.mode == "centroid":
        heights = np.maximum(truth.boxes[:, 3] - truth.boxes[:, 1], 1.0)
        distance = np.linalg.norm(found.points[None, :, :] - truth.points[:, None, :], axis=-1) / heights[:, None]
        return np.where(distance <= rule.max_distance, distance, np.nan)
    distance = 1.0 - iou_matrix(truth.boxes, found.boxes)
    return np.where(distance <= 1.0 - rule.min_iou, distance, np.nan)


def _without_dont_care(truth: FrameObjects, found: FrameObjects, rule: MatchRule) -> tuple[FrameObjects, np.ndarray]:
    """Drop the results that the best one-to-one matching gives to don't-care people (MOTChallenge)."""
    keep = np.ones(len(found.ids), dtype=bool)
    if (~truth.scored).any() and len(found.ids):
        distance = distance_matrix(truth, found, rule)
        for row, col in assign(np.where(np.isnan(distance), FORBIDDEN, distance)):
            if not truth.scored[row]:
                keep[col] = False
    scored = truth.scored
    care = FrameObjects(truth.ids[scored], truth.boxes[scored], truth.points[scored], scored[scored])
    return care, keep


def accumulate(truth: dict[int, FrameObjects], results: dict[int, FrameObjects], frames: range,
               rule: MatchRule) -> motmetrics.MOTAccumulator:
    """One motmetrics accumulator over `frames` (MOT frame numbers); a frame missing from either is empty."""
    accumulator = motmetrics.MOTAccumulator(auto_id=False)
    for frame in frames:
        care, keep = _without_dont_care(truth.get(frame, FrameObjects.empty()),
                                        results.get(frame, FrameObjects.empty()), rule)
        found = results.get(frame, FrameObjects.empty())
        found = FrameObjects(found.ids[keep], found.boxes[keep], found.points[keep], found.scored[keep])
        accumulator.update(care.ids.tolist(), found.ids.tolist(), distance_matrix(care, found, rule), frameid=frame)
    return accumulator


_METRICS = ["mota", "idf1", "num_switches", "num_fragmentations", "recall", "precision", "num_false_positives",
            "num_misses", "mostly_tracked", "partially_tracked", "mostly_lost", "num_unique_objects", "num_frames"]


def summarise(accumulator: motmetrics.MOTAccumulator, results: dict[int, FrameObjects], frames: range) -> MotScores:
    metrics = motmetrics.metrics.create()
    logging.disable(logging.INFO)  # motmetrics logs its own timings at INFO on the root logger
    try:
        row = metrics.compute(accumulator, metrics=_METRICS, name="all").iloc[0]
    finally:
        logging.disable(logging.NOTSET)
    ids = set()
    for frame in frames:
        if frame in results:
            ids.update(int(i) for i in results[frame].ids)
    return MotScores(
        mota=float(row["mota"]), idf1=float(row["idf1"]), id_switches=int(row["num_switches"]),
        fragmentations=int(row["num_fragmentations"]), recall=float(row["recall"]),
        precision=float(row["precision"]), false_positives=int(row["num_false_positives"]),
        misses=int(row["num_misses"]), mostly_tracked=int(row["mostly_tracked"]),
        partially_tracked=int(row["partially_tracked"]), mostly_lost=int(row["mostly_lost"]),
        num_objects=int(row["num_unique_objects"]), num_track_ids=len(ids), max_track_id=max(ids, default=0),
        frames=int(row["num_frames"]),
    )


def score_tracks(truth: dict[int, FrameObjects], results: dict[int, FrameObjects], frames: range | None = None,
                 rule: MatchRule | None = None) -> MotScores:
    """MOTChallenge scores of `results` against `truth` over `frames` (default: the ground truth's span)."""
    if frames is None:
        if not truth:
            raise UserFacingError("the ground truth has no rows")
        frames = range(min(truth), max(truth) + 1)
    rule = rule or MatchRule()
    return summarise(accumulate(truth, results, frames, rule), results, frames)


def pose_results(frames: list[PoseFrame], min_joint_score: float) -> dict[int, FrameObjects]:
    """The tracked people of a JSON Lines file (people without a track id are not results)."""
    results = {}
    for frame in frames:
        chosen = [i for i, track_id in enumerate(frame.track_ids) if track_id is not None]
        results[frame.frame] = tracked_objects([frame.poses[i] for i in chosen],
                                               [int(frame.track_ids[i]) for i in chosen], min_joint_score)
    return results


def retrack(frames: list[PoseFrame], tracker, min_joint_score: float) -> dict[int, FrameObjects]:
    """Run a fresh tracker over the detections of every frame (their stored track ids ignored); each person is
    scored with the box the tracker reports (`TrackedPose.box`)."""
    results = {}
    for frame in frames:
        tracked = tracker.update(frame.poses, frame.timestamp)
        results[frame.frame] = tracked_objects([t.pose for t in tracked], [t.track_id for t in tracked],
                                               min_joint_score, [t.box for t in tracked])
    return results


def is_pose_file(path: str | Path) -> bool:
    """JSON Lines of poses (.jsonl / .json) rather than a MOTChallenge text file of boxes."""
    return Path(path).suffix.lower() in (".jsonl", ".json", ".ndjson")


def scored_frames(truth: MotRows, frames: range | None) -> range:
    """The MOT frames to score: `frames`, which must lie within the ground truth's, or all of the ground truth's."""
    if not len(truth.values):
        raise UserFacingError(f"the ground truth {truth.path} has no rows")
    first, last = int(truth.frames().min()), int(truth.frames().max())
    if frames is None:
        return range(first, last + 1)
    if frames.start < first or frames.stop - 1 > last:
        raise UserFacingError(f"frames {frames.start}-{frames.stop - 1} lie outside {truth.path}: its rows cover "
                              f"frames {first} (line {truth.line_of_frame(first, last=False)}) to {last} "
                              f"(line {truth.line_of_frame(last)})")
    return frames


def sequence_length(gt_path: str | Path) -> int | None:
    """seqLength of the MOTChallenge seqinfo.ini of a ground truth laid out as SEQ/gt/gt.txt, if there is one."""
    import configparser

    ini = Path(gt_path).resolve().parent.parent / "seqinfo.ini"
    if Path(gt_path).resolve().parent.name != "gt" or not ini.is_file():
        return None
    parser = configparser.ConfigParser()
    try:
        parser.read(ini, encoding="utf-8")
        return int(parser["Sequence"]["seqLength"])
    except (configparser.Error, KeyError, ValueError) as error:
        raise UserFacingError(f"{ini} has no [Sequence] seqLength: {error!r}")


def check_pose_frames(path: str | Path, pose_frames: list[PoseFrame], frames: range) -> None:
    """JSON Lines hold one record per frame of their video: a file that stops before the scored frames end (or
    starts after they start) is the run of another (shorter) sequence, not a tracker that found nobody."""
    if not pose_frames:
        raise UserFacingError(f"{path} holds no frame records")
    first, last = pose_frames[0], pose_frames[-1]
    if first.frame > frames.start or last.frame < frames.stop - 1:
        raise UserFacingError(f"{path} line {last.line if last.frame < frames.stop - 1 else first.line}: its frames "
                              f"run from {first.frame} to {last.frame} (MOT numbering), but frames {frames.start}-"
                              f"{frames.stop - 1} are scored: results of another sequence? (--frames scores a part)")


def pose_frames_to_score(path: str | Path, frames: range) -> list[PoseFrame]:
    """The frame records of a JSON Lines file up to the last scored frame (a tracker runs from the file's first
    frame, and nothing after the scored ones can change their scores), checked by `check_pose_frames`."""
    pose_frames = read_pose_frames(path)
    check_pose_frames(path, pose_frames, frames)
    return [f for f in pose_frames if f.frame < frames.stop]


def _check_sequence_length(results: MotRows, gt_path: str | Path) -> None:
    length = sequence_length(gt_path)
    beyond = results.frames() > length if length is not None else np.zeros(len(results.values), dtype=bool)
    if beyond.any():
        line = int(results.lines[beyond].min())
        raise UserFacingError(f"{results.path} line {line}: frame {int(results.values[results.lines == line, 0][0])} "
                              f"is past the sequence's {length} frames (seqinfo.ini beside {gt_path}): results of "
                              f"another sequence?")


def load_results(results_path: str | Path, gt_path: str | Path, frames: range, retrack_config=None,
                 min_joint_score: float = 0.2) -> dict[int, FrameObjects]:
    """The tracks to score: a MOTChallenge file of boxes, or JSON Lines of poses (their stored track ids, or our
    tracker run again over every person in it when `retrack_config` is a TrackerConfig). Checked against the
    scored frames (see `check_pose_frames`, `_check_sequence_length`)."""
    if is_pose_file(results_path):
        pose_frames = pose_frames_to_score(results_path, frames)
        if retrack_config is not None:
            from tagtrack.tracker.tracker import PoseTracker

            return retrack(pose_frames, PoseTracker(retrack_config), min_joint_score)
        return pose_results(pose_frames, min_joint_score)
    if retrack_config is not None:
        raise UserFacingError("re-tracking needs poses (JSON Lines), not a file of boxes")
    rows = read_mot_rows(results_path)
    _check_sequence_length(rows, gt_path)
    return frame_objects(rows)


def evaluate_file(results_path: str | Path, gt_path: str | Path, rule: MatchRule | None = None,
                  frames: range | None = None, retrack_config=None, protocol: str = "trackeval"):
    """Score a results file (see `load_results`) against MOTChallenge ground truth over `frames` (default: the
    ground truth's). protocol "trackeval": TrackEval's HOTA, CLEAR and Identity on boxes (TrackEvalScores);
    "motmetrics": py-motmetrics with `rule` (centroid for poses, IoU for boxes by default; MotScores)."""
    truth = read_mot_rows(gt_path)
    frames = scored_frames(truth, frames)
    rule = rule or MatchRule(mode="centroid" if is_pose_file(results_path) else "iou")
    results = load_results(results_path, gt_path, frames, retrack_config, rule.min_joint_score)
    if protocol == "trackeval":
        from tagtrack.tracker.trackeval_scores import score_with_trackeval

        return score_with_trackeval(truth, {"results": results}, frames)["results"]
    if protocol != "motmetrics":
        raise ValueError(f"protocol must be trackeval or motmetrics, got {protocol!r}")
    return score_tracks(frame_objects(truth), results, frames, rule)


def format_scores(scores: MotScores, title: str = "") -> str:
    s = scores
    lines = [title] if title else []
    lines += [
        f"MOTA {100 * s.mota:.1f}  IDF1 {100 * s.idf1:.1f}  ID switches {s.id_switches}  "
        f"fragmentations {s.fragmentations}",
        f"recall {100 * s.recall:.1f} %  precision {100 * s.precision:.1f} %  false positives {s.false_positives}  "
        f"misses {s.misses}",
        f"people {s.num_objects}: mostly tracked {s.mostly_tracked}, partly {s.partially_tracked}, "
        f"mostly lost {s.mostly_lost}; track ids {s.num_track_ids} (highest {s.max_track_id}) over {s.frames} frames",
    ]
    return "\n".join(lines)
