"""PoseTracker: stable identities for the people of a video, from tags, motion and pose overlap."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

import numpy as np

from tagtrack.model.codec import keypoint_boxes
from tagtrack.model.pose import Pose
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.tracker.association import (
    PoseOffsets,
    assign,
    iou_matrix,
    mahalanobis_matrix,
    oks_from_offsets,
    pose_offsets,
    spread_ratio,
    tag_distance_matrix,
)
from tagtrack.tracker.config import TrackerConfig
from tagtrack.tracker.costs import (
    GATES_FROM_TRUST,
    TagStatistics,
    learn_tag_statistics,
    match_cost,
    reid_cost,
    running_tags,
    tag_trust,
    tag_unit,
)
from tagtrack.tracker.motion import BoxMotion, MotionStep
from tagtrack.tracker.one_euro import OneEuroParams, OneEuroState, one_euro_step

log = logging.getLogger(__name__)


@dataclass
class TrackedPose:
    """A person of the current frame with its identity.

    pose: the detection as it came in (unchanged); track_id: stable id (1, 2, ...), None until the
    track is confirmed (the pipeline then writes the person without an id);
    age: seconds since the track was first seen; keypoints_smoothed: [K, 3] float32, the One-Euro
    smoothed x, y with the detection's joint scores (equal to pose.keypoints when smoothing is off);
    box_smoothed: [4] float32 (x1, y1, x2, y2), the person's box as the track reports it: the detection's
    whole-body box (`pose.box`), its width and height averaged over the track's last
    `TrackerConfig.box_size_time` seconds, a little ahead along the track's motion (`box_lead`)
    (None: not tracked, `box` is the pose's).
    """

    pose: Pose
    track_id: int | None
    age: float
    keypoints_smoothed: np.ndarray
    box_smoothed: np.ndarray | None = None

    @property
    def box(self) -> np.ndarray:
        """The box to report for this person: the track's (`box_smoothed`), else the detection's (`pose.box`)."""
        return self.pose.box if self.box_smoothed is None else self.box_smoothed


@dataclass
class RoundCues:
    """A round's [tracks, detections] cues: OKS against the predicted pose, box IoU (OKS again when IoU is
    not weighted), the Mahalanobis length of the joints' mean shift, and tag distances (None without tags;
    NaN for a track that has no tag yet)."""

    oks: np.ndarray
    iou: np.ndarray
    motion: np.ndarray
    distance: np.ndarray | None
    missed_for: np.ndarray


class TrackState(enum.Enum):
    TENTATIVE = "tentative"  # seen fewer than confirm_hits times; not reported
    CONFIRMED = "confirmed"  # matched in the latest frame it was looked for; reported when matched
    LOST = "lost"            # confirmed, then unmatched; kept for re-identification up to reid_time


class Track:
    """Everything the tracker remembers about one person."""

    def __init__(self, pose: Pose, box: np.ndarray, timestamp: float, config: TrackerConfig) -> None:
        # The public id is given at confirmation (PoseTracker._number_confirmed), so ids count the people
        # reported, 1, 2, 3, ... in order of confirmation, and tentative tracks that die burn none.
        self.track_id: int | None = None
        self.state = TrackState.TENTATIVE
        self.first_seen = timestamp
        self.last_seen = timestamp
        self.hits = 0
        self.motion = BoxMotion(box, config.measurement_noise, config.acceleration_noise)
        # How sure the filter was of the centre when the person was last seen; what prediction adds to it
        # since widens the pose comparison (PoseTracker._cues).
        self.seen_variance = self.motion.position_variance()
        num_keypoints = pose.keypoints.shape[0]
        # Each joint's last seen offset from the filtered centre, in person sizes: the track's pose
        # can then be predicted anywhere the motion model puts the person, even joints not seen lately.
        self.shape = np.zeros((num_keypoints, 2))
        self.shape_known = np.zeros(num_keypoints, dtype=bool)
        self.tag: np.ndarray | None = None
        self.pose = pose
        self.smoothing: OneEuroState | None = None
        self.keypoints_smoothed = pose.keypoints
        # The reported box's width and height, averaged over time (PoseTracker._finish_frame), and when last set.
        self.box_size: np.ndarray | None = None
        self.box_time = timestamp
        self.box_smoothed = np.asarray(pose.box, dtype=np.float32)
        # Filled by predict() each frame.
        self.predicted_box = self.motion.box()
        self.predicted_keypoints = np.zeros((num_keypoints, 2))

    def observe(self, pose: Pose, body_box: np.ndarray | None, tag: np.ndarray | None, timestamp: float,
                config: TrackerConfig) -> None:
        """Take this frame's detection: motion (body_box None at birth: the filter holds it), running tag, life cycle.
        The pose shape and the smoothed keypoints follow for all tracks at once (PoseTracker._finish_frame)."""
        if body_box is not None:
            self.motion.update(body_box)
            self.seen_variance = self.motion.position_variance()
        if tag is not None:  # the running tag, already blended by the caller when the track had one
            self.tag = tag
        self.pose = pose
        self.hits += 1
        self.last_seen = timestamp
        if self.state is TrackState.LOST or (self.state is TrackState.TENTATIVE and self.hits >= config.confirm_hits):
            self.state = TrackState.CONFIRMED

    def predict(self, step: MotionStep) -> None:
        self.motion.predict(step)
        self.predicted_box = self.motion.box()
        self.predicted_keypoints = self.motion.centre + self.shape * self.motion.size


def body_boxes(shape: np.ndarray, known: np.ndarray, keypoints: np.ndarray, visible: np.ndarray,
               sizes: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The whole bodies' boxes [M, 4], fitted from the joints found and the joints' known places in the body.

    A person half hidden (behind someone, at the picture's edge) gives a box of half a body; fed to
    the Kalman filter as it is, that box would drag the centre and shrink the size, and the person
    would be lost. Least squares for centre c and size s in keypoint = c + s * shape, over the joints
    both found and known (shape [M, K, 2], known [M, K]); the detection's own box where nothing known
    is hidden or fewer than 3 joints are shared. sizes [M]: the tracks' current sizes (bounds the fit).
    """
    usable = (visible & known).astype(np.float64)
    count = usable.sum(1)
    fit = (count >= 3) & (known & ~visible).any(1)
    if not fit.any():
        return boxes
    weight = usable[..., None]
    safe = np.maximum(count, 1.0)[:, None]
    shape_mean = (shape * weight).sum(1) / safe
    points_mean = (keypoints * weight).sum(1) / safe
    centred_shape = (shape - shape_mean[:, None, :]) * weight
    spread = (centred_shape * centred_shape).sum((1, 2))
    fit &= spread > 1e-3
    size = ((keypoints - points_mean[:, None, :]) * centred_shape).sum((1, 2)) / np.maximum(spread, 1e-3)
    size = np.clip(size, 0.5 * sizes, 2.0 * sizes)
    body = (points_mean - size[:, None] * shape_mean)[:, None, :] + size[:, None, None] * shape
    inf = np.where(known[..., None], 0.0, np.inf)
    fitted = np.concatenate([(body + inf).min(1), (body - inf).max(1)], axis=1)
    return np.where(fit[:, None], fitted, boxes)


def joint_boxes(poses: list[Pose]) -> np.ndarray:
    """[N, 4] float64 boxes around each pose's found joints.

    Not `Pose.box`: that is the whole-body box estimated from the joints (`model.body_box`) for the outputs;
    the tracker's motion, OKS scale and half-hidden-body fit were tuned on the joints' own extent, so they
    keep it (the baselines too, so that every tracker sees the same boxes)."""
    if not poses:
        return np.zeros((0, 4))
    return keypoint_boxes(np.array([p.keypoints for p in poses], dtype=np.float32)).astype(np.float64)


def widened_boxes(boxes: np.ndarray, min_aspect: float) -> np.ndarray:
    """Boxes [M, 4] with the short side widened (about the centre) to at least min_aspect of the long side.

    A box around a pose's joints is a person's box only when the limbs spread: a walker seen from the
    side, or a small person whose joints the model places on one column of its map, gives a box a few
    pixels wide (on vtest.avi many are 0-9 px wide and 60-80 px tall). Its area, the OKS scale, would then
    be a tenth of the person's, so any movement would look like another person.
    """
    centre = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    wh = boxes[:, 2:] - boxes[:, :2]
    wh = np.maximum(wh, min_aspect * wh.max(1, keepdims=True))
    return np.concatenate([centre - 0.5 * wh, centre + 0.5 * wh], axis=1)


def steadied_boxes(boxes: np.ndarray, sizes: list[np.ndarray | None], elapsed: np.ndarray,
                   time_constant: float, max_jump: float = 2.0, velocity_x: np.ndarray | None = None,
                   lead: float = 0.0, lead_speed: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The boxes to report for tracks matched now: [M, 4] float32 boxes and their [M, 2] (width, height).

    Each detection's whole-body box (`boxes`, from its joints) is kept where it is (but for `lead`), its width
    and height an exponential average over the track (weight exp(-elapsed / time_constant) on the track's
    `sizes`, None for a track without one yet; `elapsed`: seconds since they were set). On small walkers the joints
    sit on a coarse grid (4.5 px on vtest.avi, 0.06 of a 75 px walker), so the height fitted to
    them jumps from frame to frame while the person's does not. A width or height more than `max_jump` times
    the average (or less than 1 / max_jump of it) restarts it: that is a different extent (a person found whole
    after half, or two people found as one), not the grid. Only the size: averaging the position too lags a
    walker and cost more than it gained (docs/tracker.md, "Where MOTA is lost").

    With `velocity_x` ([M] px/s, the tracks' horizontal speed) and `lead` > 0 the box moves ahead along the
    walker's motion by lead * height * tanh(speed / lead_speed), speed in heights per second: a walker's joints
    lie along the body's axis, while the person's box spans the stride and reaches forward.
    """
    centre = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    size = boxes[:, 2:] - boxes[:, :2]
    if time_constant > 0.0 and len(boxes):
        keep = np.exp(-np.maximum(elapsed, 0.0) / time_constant)
        previous = np.array([size[m] if s is None else s for m, s in enumerate(sizes)]).reshape(-1, 2)
        jump = np.abs(np.log(np.maximum(size, 1.0) / np.maximum(previous, 1.0))).max(1)
        keep = np.where(jump > np.log(max_jump), 0.0, keep)
        size = keep[:, None] * previous + (1.0 - keep[:, None]) * size
    if velocity_x is not None and lead > 0.0 and len(boxes):
        height = np.maximum(size[:, 1], 1.0)
        centre = centre.copy()
        centre[:, 0] += lead * height * np.tanh(velocity_x / height / lead_speed)
    return np.concatenate([centre - 0.5 * size, centre + 0.5 * size], axis=1).astype(np.float32), size


class _Detections:
    """The frame's poses as stacked arrays, so every cost is one vectorised expression."""

    def __init__(self, poses: list[Pose], num_keypoints: int, min_keypoint_score: float,
                 min_box_aspect: float) -> None:
        count = len(poses)
        self.scores = np.array([float(p.score) for p in poses], dtype=np.float64)
        if count:
            keypoints = np.array([p.keypoints for p in poses], dtype=np.float64)
            if keypoints.shape[1:] != (num_keypoints, 3):
                raise ValueError(f"poses must have keypoints [{num_keypoints}, 3], got {keypoints.shape[1:]}")
            self.keypoints = keypoints[:, :, :2]
            self.visible = keypoints[:, :, 2] > min_keypoint_score
            self.boxes = widened_boxes(joint_boxes(poses), min_box_aspect)
            tags = [np.asarray(p.tag, dtype=np.float64).reshape(-1) for p in poses]
            dims = {t.shape[0] for t in tags}
            if len(dims) != 1:
                raise ValueError(f"all poses of a frame must have the same tag length, got {sorted(dims)}")
            self.tags = np.stack(tags) if dims != {0} else None
        else:
            self.keypoints = np.zeros((0, num_keypoints, 2))
            self.visible = np.zeros((0, num_keypoints), dtype=bool)
            self.boxes = np.zeros((0, 4))
            self.tags = None
        self.centres = 0.5 * (self.boxes[:, :2] + self.boxes[:, 2:])
        wh = np.maximum(self.boxes[:, 2:] - self.boxes[:, :2], 4.0)
        self.sizes = np.sqrt(wh[:, 0] * wh[:, 1])


class PoseTracker:
    """Links the people of successive frames into tracks.

    `update(poses, timestamp)` returns the confirmed tracks matched in this frame, in the order of
    `poses` (tentative tracks are never reported). A track is tentative until matched `confirm_hits`
    times, confirmed while it is found, lost when it is not (kept `reid_time` seconds for
    re-identification), then removed. Per frame:

    1. predict every track's box (Kalman, constant velocity) and pose to the frame's timestamp;
    2. round 1: confident people (score >= high_score) against every track, on a cost of tag distance
       to the track's running tag, OKS against the predicted pose and box IoU; each cue can forbid a
       pair (tag gate, motion gate, overlap gate, cost ceiling), none can force one;
    3. round 2: weak people (low_score <= score < high_score) may extend confirmed or lost tracks
       left over, never start one;
    4. round 3: lost tracks are re-identified by tag among the people left (weak ones too) and the
       people only tentative tracks took (the tentative track is then dropped); by nearness alone when
       the tags are off or not trusted;
    5. confident people nobody took (score >= new_track_score) start tentative tracks.

    Tags count as far as they have been seen to separate people across frames (`tag_trust`), so a
    model whose tags mean nothing over time degrades to geometry alone; `use_tags=False` forces that.
    """

    def __init__(self, config: TrackerConfig | None = None, schema: KeypointSchema = COCO17) -> None:
        self.config = config or TrackerConfig()
        self.schema = schema
        self._sigmas = schema.sigmas_array().astype(np.float64)
        self._smoothing = OneEuroParams(self.config.smooth_min_cutoff, self.config.smooth_beta,
                                        self.config.smooth_d_cutoff)
        self.reset()

    def reset(self) -> None:
        """Forget every track (a new video); ids start again at 1."""
        self.tracks: list[Track] = []
        self._next_id = 1
        self._last_timestamp: float | None = None
        self._tag_dim: int | None = None
        # What the tags have been seen to mean across frames (tracker.costs.learn_tag_statistics).
        self.tag_stats = TagStatistics()

    @property
    def tag_trust(self) -> float:
        """0..1: how far the tags separate the same person from others, as measured so far (costs.tag_trust)."""
        return tag_trust(self.tag_stats, self.config)

    @property
    def tag_unit(self) -> float:
        """The learned same-person tag distance the tag settings are measured in (costs.tag_unit)."""
        return tag_unit(self.tag_stats)

    # ------------------------------------------------------------------ public

    def update(self, poses: list[Pose], timestamp: float) -> list[TrackedPose]:
        timestamp = float(timestamp)
        if self._last_timestamp is not None and timestamp < self._last_timestamp:
            raise ValueError(f"timestamps must not go backwards ({timestamp} after {self._last_timestamp}); "
                             "call reset() for a new video")
        previous = timestamp if self._last_timestamp is None else self._last_timestamp
        dt = timestamp - previous
        self._last_timestamp = timestamp
        config = self.config

        detections = _Detections(poses, self.schema.num_keypoints, config.min_keypoint_score, config.min_box_aspect)
        self._check_tag_dim(detections)
        have_tags = config.use_tags and detections.tags is not None
        trust = self.tag_trust if have_tags else 0.0

        step = MotionStep(dt)
        for track in self.tracks:
            track.predict(step)

        high = np.flatnonzero(detections.scores >= config.high_score)
        low = np.flatnonzero((detections.scores >= config.low_score) & (detections.scores < config.high_score))
        matched: dict[int, Track] = {}  # detection index -> track

        # Round 1: confident people against every track. Its unambiguous pairs first teach the tag
        # statistics (before the costs, which measure tags in the learned units).
        candidates = list(self.tracks)
        cues = self._cues(candidates, detections, high, have_tags, previous)
        if cues is not None and cues.distance is not None and not np.isnan(cues.distance).any():
            self.tag_stats = learn_tag_statistics(self.tag_stats, cues.oks, cues.distance, config)
        pairs = self._match(cues, trust)
        self._apply(pairs, candidates, high, poses, detections, timestamp, matched)

        # Round 2: weak people may only extend confirmed (or lost) tracks, never start one (ByteTrack).
        taken = {id(t) for t in matched.values()}
        candidates = [t for t in self.tracks if t.state is not TrackState.TENTATIVE and id(t) not in taken]
        pairs = self._match(self._cues(candidates, detections, low, have_tags, previous), trust)
        self._apply(pairs, candidates, low, poses, detections, timestamp, matched)

        # Round 3: re-identify lost tracks from the people left, weak ones included, and from the people
        # that only tentative tracks took: a person who came back too far from where the old track expected
        # starts a tentative track, and the old track takes it back (the tentative one is dropped).
        taken = {id(t) for t in matched.values()}
        candidates = [t for t in self.tracks if t.state is not TrackState.TENTATIVE and id(t) not in taken]
        rest = np.array([i for i in np.concatenate([high, low])
                         if i not in matched or matched[i].state is TrackState.TENTATIVE], dtype=np.int64)
        pairs = self._reidentify(candidates, detections, rest, timestamp, trust >= GATES_FROM_TRUST)
        replaced = {id(matched[int(rest[col])]) for _, col in pairs if int(rest[col]) in matched}
        if replaced:
            self.tracks = [t for t in self.tracks if id(t) not in replaced]
        self._apply(pairs, candidates, rest, poses, detections, timestamp, matched)

        self._age_unmatched(set(id(t) for t in matched.values()), timestamp)

        # Confident people nobody claimed start tentative tracks.
        born: dict[int, Track] = {}
        for index in high:
            if index not in matched and detections.scores[index] >= config.new_track_score:
                track = Track(poses[index], detections.boxes[index], timestamp, config)
                tag = None if detections.tags is None else detections.tags[index]
                track.observe(poses[index], None, tag, timestamp, config)
                self.tracks.append(track)
                born[int(index)] = track
        self._finish_frame({**matched, **born}, detections, timestamp)
        self._number_confirmed([*matched.values(), *born.values()])

        return [
            TrackedPose(pose=poses[i], track_id=t.track_id, age=timestamp - t.first_seen,
                        keypoints_smoothed=t.keypoints_smoothed, box_smoothed=t.box_smoothed)
            for i, t in sorted(matched.items())
            if t.state is TrackState.CONFIRMED
        ]

    # ------------------------------------------------------------------ steps

    def _check_tag_dim(self, detections: _Detections) -> None:
        if detections.tags is None:
            return
        dim = detections.tags.shape[1]
        if self._tag_dim is None:
            self._tag_dim = dim
        elif dim != self._tag_dim:
            raise ValueError(f"tag length changed from {self._tag_dim} to {dim}; call reset() for a new model")

    def _compare(self, tracks: list[Track], detections: _Detections, indices: np.ndarray,
                 with_sizes: bool = False) -> tuple[PoseOffsets, np.ndarray | None]:
        """Joint-wise offsets of detections from the tracks' predicted poses (and size ratios if asked)."""
        predicted = np.array([t.predicted_keypoints for t in tracks])
        keypoints = detections.keypoints[indices]
        offsets = pose_offsets(predicted, np.array([t.shape_known for t in tracks]),
                               keypoints, detections.visible[indices])
        sizes = spread_ratio(offsets, predicted, keypoints) if with_sizes else None
        # Where a pair shares no joint, fall back on the box centres and sizes.
        none = offsets.count == 0
        if none.any():
            centres = np.array([t.motion.centre for t in tracks])
            box_shift = detections.centres[indices][None, :, :] - centres[:, None, :]
            offsets.shift[none] = box_shift[none]
            if sizes is not None:
                track_sizes = np.array([t.motion.size for t in tracks])
                sizes[none] = np.log(detections.sizes[indices][None, :] / track_sizes[:, None])[none]
        return offsets, sizes

    def _cues(self, tracks: list[Track], detections: _Detections, indices: np.ndarray, have_tags: bool,
              previous: float) -> RoundCues | None:
        """OKS, IoU, motion and tag distances of the tracks against detections[indices], and how long each
        track had gone unseen by the previous frame (at `previous`); None: nothing to match."""
        if not tracks or len(indices) == 0:
            return None
        config = self.config
        boxes = np.array([t.predicted_box for t in tracks])
        wh = boxes[:, 2:] - boxes[:, :2]
        offsets, _ = self._compare(tracks, detections, indices)
        # A track's predicted pose is as uncertain as its predicted centre: OKS at COCO's scale alone would
        # refuse a person back after half a second unseen (the prediction is off by more than a joint's
        # spread), and a track that was matched in the previous frame would take that person instead. So each
        # joint's spread is widened by the variance the prediction gained since the person was last seen
        # (about nothing for a track found in the previous frame).
        spread = np.array([max(t.motion.position_variance() - t.seen_variance, 0.0) for t in tracks])
        oks = oks_from_offsets(offsets, wh[:, 0] * wh[:, 1], self._sigmas, spread)
        # IoU only when it is weighted (it is not by default); then it can also open the overlap gate.
        iou = iou_matrix(boxes, detections.boxes[indices]) if config.iou_weight > 0.0 else oks
        # Uncertainty of the predicted centre (P) plus that of a measured one (R), for the motion gate.
        covariance = np.array([t.motion.kf.P[:2, :2] for t in tracks])
        measured = (config.measurement_noise * np.array([t.motion.size for t in tracks])) ** 2
        covariance[:, 0, 0] += measured
        covariance[:, 1, 1] += measured
        motion = mahalanobis_matrix(offsets.shift, covariance)
        distance = self._tag_distances(tracks, detections, indices) if have_tags else None
        missed_for = np.array([max(previous - t.last_seen, 0.0) for t in tracks])
        return RoundCues(oks, iou, motion, distance, missed_for)

    def _match(self, cues: RoundCues | None, trust: float) -> list[tuple[int, int]]:
        if cues is None:
            return []
        # A track with no tag yet (NaN) gets neither tag cost nor tag gate.
        distance = None if cues.distance is None else np.where(np.isnan(cues.distance), 0.0, cues.distance)
        return assign(match_cost(cues.oks, cues.iou, cues.motion, distance, trust, self.tag_stats, self.config,
                                 cues.missed_for))

    def _reidentify(self, tracks: list[Track], detections: _Detections, indices: np.ndarray, timestamp: float,
                    by_tag: bool) -> list[tuple[int, int]]:
        if not tracks or len(indices) == 0:
            return []
        config = self.config
        track_sizes = np.array([t.motion.size for t in tracks])
        lost_for = np.array([timestamp - t.last_seen for t in tracks])
        reach = (config.reid_radius + config.reid_speed * lost_for) * track_sizes
        offsets, log_size_ratio = self._compare(tracks, detections, indices, with_sizes=True)
        near = np.linalg.norm(offsets.shift, axis=-1) / reach[:, None]
        distance = self._tag_distances(tracks, detections, indices) if by_tag else None
        confident = detections.scores[indices] >= config.high_score
        return assign(reid_cost(near, log_size_ratio, distance, confident, self.tag_stats, config))

    def _tag_distances(self, tracks: list[Track], detections: _Detections, indices: np.ndarray) -> np.ndarray:
        """[tracks, detections] tag distances; NaN for a track that has no tag yet (born in tagless frames)."""
        new = detections.tags[indices]
        if all(t.tag is not None for t in tracks):
            return tag_distance_matrix(np.array([t.tag for t in tracks]), new)
        zero = np.zeros(new.shape[1])
        distance = tag_distance_matrix(np.array([zero if t.tag is None else t.tag for t in tracks]), new)
        distance[[t.tag is None for t in tracks]] = np.nan
        return distance

    def _apply(self, pairs: list[tuple[int, int]], tracks: list[Track], indices: np.ndarray, poses: list[Pose],
               detections: _Detections, timestamp: float, matched: dict[int, Track]) -> None:
        if not pairs:
            return
        chosen = [tracks[row] for row, _ in pairs]
        index = np.array([int(indices[col]) for _, col in pairs])
        known = np.array([t.shape_known for t in chosen])
        visible = detections.visible[index]
        boxes = detections.boxes[index]
        if (known & ~visible).any():  # someone is partly hidden: fit their whole bodies
            boxes = body_boxes(np.array([t.shape for t in chosen]), known, detections.keypoints[index], visible,
                               np.array([t.motion.size for t in chosen]), boxes)
        tags: list[np.ndarray | None] = [None] * len(chosen)
        if detections.tags is not None:
            new_tags = detections.tags[index]
            if all(t.tag is not None for t in chosen):  # running tags, all at once
                new_tags = running_tags(np.array([t.tag for t in chosen]), new_tags, self.tag_trust, self.tag_stats,
                                        self.config)
            tags = list(new_tags)
        for m, (track, i) in enumerate(zip(chosen, index)):
            track.observe(poses[i], boxes[m], tags[m], timestamp, self.config)
            matched[int(i)] = track

    def _finish_frame(self, matched: dict[int, Track], detections: _Detections, timestamp: float) -> None:
        """Update the matched tracks' pose shapes and smoothed keypoints, all in one go."""
        if not matched:
            return
        index = np.fromiter(matched.keys(), dtype=np.int64, count=len(matched))
        tracks = list(matched.values())
        keypoints = detections.keypoints[index]
        visible = detections.visible[index]
        centres = np.array([t.motion.centre for t in tracks])
        sizes = np.array([t.motion.size for t in tracks])
        old_shapes = np.array([t.shape for t in tracks])
        shapes = np.where(visible[..., None], (keypoints - centres[:, None, :]) / sizes[:, None, None], old_shapes)
        if self.config.smoothing:
            smoothed_xy, states = one_euro_step([t.smoothing for t in tracks], keypoints, visible, timestamp,
                                                sizes, self._smoothing)
        reported_boxes, box_sizes = steadied_boxes(np.array([t.pose.box for t in tracks], dtype=np.float64),
                                                   [t.box_size for t in tracks],
                                                   np.array([timestamp - t.box_time for t in tracks]),
                                                   self.config.box_size_time, self.config.box_size_jump,
                                                   np.array([t.motion.velocity_x for t in tracks]),
                                                   self.config.box_lead, self.config.box_lead_speed)
        for m, track in enumerate(tracks):
            track.box_smoothed = reported_boxes[m]
            track.box_size = box_sizes[m]
            track.box_time = timestamp
            track.shape = shapes[m]
            track.shape_known = track.shape_known | visible[m]
            if self.config.smoothing:
                track.smoothing = states[m]
                smoothed = track.pose.keypoints.astype(np.float32, copy=True)
                smoothed[:, :2] = smoothed_xy[m]
                track.keypoints_smoothed = smoothed
            else:
                track.keypoints_smoothed = track.pose.keypoints

    def _number_confirmed(self, tracks: list[Track]) -> None:
        for track in tracks:
            if track.track_id is None and track.state is TrackState.CONFIRMED:
                track.track_id = self._next_id
                self._next_id += 1

    def _age_unmatched(self, matched_ids: set[int], timestamp: float) -> None:
        config = self.config
        kept = []
        for track in self.tracks:
            if id(track) not in matched_ids:
                missing = timestamp - track.last_seen
                if track.state is TrackState.CONFIRMED:
                    track.state = TrackState.LOST
                    track.motion.hold_size()
                if track.state is TrackState.TENTATIVE and missing > config.tentative_max_gap:
                    continue
                if track.state is TrackState.LOST and missing > config.reid_time:
                    log.debug("track %s removed after %.2f s lost", track.track_id, missing)
                    continue
            kept.append(track)
        self.tracks = kept
