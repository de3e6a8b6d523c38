"""The two trackers ours is measured against, on the same detections.

GreedyOksTracker: each person takes the id of the unclaimed person of the previous frame with the
highest OKS, if above a threshold (the mmpose demo's tracking). SortTracker: SORT (Bewley et al. 2016),
box IoU + Hungarian + a constant-velocity Kalman filter, frame-based, with its published settings.
Both return `TrackedPose`s like `PoseTracker` (no smoothing) so the benchmark treats all alike.
Both keep people from score 0.1 up (the same floor as our second round): on the benchmark that is
their best setting (at 0.5 they lose the weak people and score far lower).
"""

from __future__ import annotations

import numpy as np
from filterpy.kalman import KalmanFilter

from tagtrack.model.pose import Pose
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.tracker.association import FORBIDDEN, assign, iou_matrix, oks_matrix
from tagtrack.tracker.tracker import TrackedPose, joint_boxes, widened_boxes


class GreedyOksTracker:
    """mmpose demo tracking: greedy best OKS to the previous frame's people, else a new id."""

    def __init__(self, min_score: float = 0.1, oks_threshold: float = 0.3, schema: KeypointSchema = COCO17) -> None:
        self.min_score = min_score
        self.oks_threshold = oks_threshold
        self._sigmas = schema.sigmas_array().astype(np.float64)
        self.reset()

    def reset(self) -> None:
        self._previous: list[tuple[int, Pose]] = []
        self._first_seen: dict[int, float] = {}
        self._next_id = 1

    def update(self, poses: list[Pose], timestamp: float) -> list[TrackedPose]:
        current = sorted((p for p in poses if p.score >= self.min_score), key=lambda p: -p.score)
        similarity = np.zeros((len(current), len(self._previous)))
        if current and self._previous:
            previous = [p for _, p in self._previous]
            boxes = joint_boxes(previous)
            similarity = oks_matrix(
                np.stack([p.keypoints[:, :2] for p in previous]).astype(np.float64),
                np.stack([p.keypoints[:, 2] > 0 for p in previous]),
                (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
                np.stack([p.keypoints[:, :2] for p in current]).astype(np.float64),
                np.stack([p.keypoints[:, 2] > 0 for p in current]),
                self._sigmas,
            ).T
        claimed = np.zeros(len(self._previous), dtype=bool)
        out = []
        for row, pose in enumerate(current):
            candidates = np.where(claimed, -1.0, similarity[row]) if len(self._previous) else np.zeros(0)
            best = int(np.argmax(candidates)) if candidates.size else -1
            if best >= 0 and candidates[best] > self.oks_threshold:
                claimed[best] = True
                track_id = self._previous[best][0]
            else:
                track_id = self._next_id
                self._next_id += 1
                self._first_seen[track_id] = timestamp
            out.append(TrackedPose(pose, track_id, timestamp - self._first_seen[track_id], pose.keypoints))
        self._previous = [(t.track_id, t.pose) for t in out]
        return out


def _box_to_z(box: np.ndarray) -> np.ndarray:
    w, h = max(float(box[2] - box[0]), 1.0), max(float(box[3] - box[1]), 1.0)
    return np.array([[box[0] + w / 2], [box[1] + h / 2], [w * h], [w / h]])


def _x_to_box(x: np.ndarray) -> np.ndarray:
    area = max(float(x[2, 0]), 1.0)
    w = np.sqrt(area * max(float(x[3, 0]), 1e-3))
    h = area / w
    return np.array([x[0, 0] - w / 2, x[1, 0] - h / 2, x[0, 0] + w / 2, x[1, 0] + h / 2])


class _SortTrack:
    def __init__(self, track_id: int, box: np.ndarray, timestamp: float) -> None:
        kf = KalmanFilter(dim_x=7, dim_z=4)
        kf.F = np.eye(7)
        kf.F[0, 4] = kf.F[1, 5] = kf.F[2, 6] = 1.0
        kf.H = np.eye(4, 7)
        # SORT's published noise settings.
        kf.R[2:, 2:] *= 10.0
        kf.P[4:, 4:] *= 1000.0
        kf.P *= 10.0
        kf.Q[-1, -1] *= 0.01
        kf.Q[4:, 4:] *= 0.01
        kf.x[:4] = _box_to_z(box)
        self.kf = kf
        self.track_id = track_id
        self.confirmed = False  # ByteTrack baseline: matched at least once after its birth
        self.first_seen = timestamp
        self.time_since_update = 0
        self.hit_streak = 0

    def predict(self) -> np.ndarray:
        if self.kf.x[6, 0] + self.kf.x[2, 0] <= 0:
            self.kf.x[6, 0] = 0.0
        self.kf.predict()
        if self.time_since_update > 0:
            self.hit_streak = 0
        self.time_since_update += 1
        return _x_to_box(self.kf.x)


class SortTracker:
    """SORT: IoU + Hungarian + Kalman; tracks die after max_age missed frames, report after min_hits."""

    def __init__(self, min_score: float = 0.1, max_age: int = 1, min_hits: int = 3, iou_threshold: float = 0.3,
                 min_box_aspect: float = 0.4) -> None:
        self.min_score = min_score
        # The same person boxes as ours (`widened_boxes`): on real video the box around a walker's joints
        # is often a few pixels wide, and IoU between such slivers is near 0 after any step.
        self.min_box_aspect = min_box_aspect
        self.max_age = max_age
        self.min_hits = min_hits
        self.iou_threshold = iou_threshold
        self.reset()

    def reset(self) -> None:
        self._tracks: list[_SortTrack] = []
        self._frame_count = 0
        self._next_id = 1

    def update(self, poses: list[Pose], timestamp: float) -> list[TrackedPose]:
        self._frame_count += 1
        detections = [p for p in poses if p.score >= self.min_score]
        boxes = widened_boxes(joint_boxes(detections), self.min_box_aspect)
        predicted = [t.predict() for t in self._tracks]
        pairs: list[tuple[int, int]] = []
        if predicted and detections:
            iou = iou_matrix(np.stack(predicted), boxes)
            cost = np.where(iou >= self.iou_threshold, -iou, FORBIDDEN)
            pairs = assign(cost)
        matched_detection = {}
        for row, col in pairs:
            track = self._tracks[row]
            track.kf.update(_box_to_z(boxes[col]))
            track.time_since_update = 0
            track.hit_streak += 1
            matched_detection[id(track)] = detections[col]
        claimed = {col for _, col in pairs}
        for col, pose in enumerate(detections):
            if col not in claimed:
                track = _SortTrack(self._next_id, boxes[col], timestamp)
                self._next_id += 1
                self._tracks.append(track)
                matched_detection[id(track)] = pose
        out = []
        for track in self._tracks:
            reported = track.hit_streak >= self.min_hits or self._frame_count <= self.min_hits
            if track.time_since_update < 1 and reported and id(track) in matched_detection:
                pose = matched_detection[id(track)]
                out.append(TrackedPose(pose, track.track_id, timestamp - track.first_seen, pose.keypoints))
        self._tracks = [t for t in self._tracks if t.time_since_update <= self.max_age]
        return out


class ByteTrackBoxTracker:
    """ByteTrack's association (Zhang et al. 2022) on person boxes: SORT's Kalman filter, confident boxes
    (score >= high_score) matched first to every track, lost ones included, at IoU >= 0.2; then weak boxes
    (low_score..high_score) to the tracks left at IoU >= 0.5; a new track needs score >= high_score + 0.1
    and a match in the next frame; lost tracks are kept `track_buffer` frames. No tags, no poses."""

    def __init__(self, high_score: float = 0.5, low_score: float = 0.1, track_buffer: int = 30,
                 min_box_aspect: float = 0.4) -> None:
        self.high_score = high_score
        self.low_score = low_score
        self.track_buffer = track_buffer
        self.min_box_aspect = min_box_aspect
        self.reset()

    def reset(self) -> None:
        self._tracks: list[_SortTrack] = []
        self._next_id = 1
        self._first_frame = True

    def _round(self, tracks: list[_SortTrack], predicted: list[np.ndarray], boxes: np.ndarray,
               columns: list[int], min_iou: float) -> list[tuple[int, int]]:
        if not tracks or not columns:
            return []
        iou = iou_matrix(np.stack(predicted), boxes[columns])
        return [(row, columns[col]) for row, col in assign(np.where(iou >= min_iou, 1.0 - iou, FORBIDDEN))]

    def update(self, poses: list[Pose], timestamp: float) -> list[TrackedPose]:
        scores = np.array([p.score for p in poses])
        boxes = widened_boxes(joint_boxes(poses), self.min_box_aspect)
        predicted = [t.predict() for t in self._tracks]
        high = [i for i in range(len(poses)) if scores[i] >= self.high_score]
        low = [i for i in range(len(poses)) if self.low_score <= scores[i] < self.high_score]
        matched: dict[int, int] = {}  # index of track -> detection
        for row, col in self._round(self._tracks, predicted, boxes, high, 0.2):
            matched[row] = col
        rest = [row for row in range(len(self._tracks)) if row not in matched and self._tracks[row].confirmed]
        for row, col in self._round([self._tracks[r] for r in rest], [predicted[r] for r in rest], boxes, low, 0.5):
            matched[rest[row]] = col
        out = []
        for row, col in matched.items():
            track = self._tracks[row]
            track.kf.update(_box_to_z(boxes[col]))
            track.time_since_update = 0
            track.confirmed = True
            if track.track_id == 0:  # ids in order of confirmation, as ours
                track.track_id = self._next_id
                self._next_id += 1
            out.append((col, TrackedPose(poses[col], track.track_id, timestamp - track.first_seen,
                                         poses[col].keypoints)))
        # Unconfirmed tracks get one chance; confirmed ones wait track_buffer frames.
        self._tracks = [t for row, t in enumerate(self._tracks) if row in matched
                        or (t.confirmed and t.time_since_update <= self.track_buffer)]
        taken = set(matched.values())
        for col in high:
            if col not in taken and scores[col] >= self.high_score + 0.1:
                track = _SortTrack(0, boxes[col], timestamp)
                self._tracks.append(track)
                if self._first_frame:  # ByteTrack activates the first frame's people at once
                    track.confirmed = True
                    track.track_id = self._next_id
                    self._next_id += 1
                    out.append((col, TrackedPose(poses[col], track.track_id, 0.0, poses[col].keypoints)))
        self._first_frame = False
        return [tracked for _, tracked in sorted(out, key=lambda pair: pair[0])]
