"""Pseudo-labels: a teacher model turns unlabelled videos and image folders into a COCO-format keypoint set.

Confident people become keypoint annotations; doubtful ones (low person score, or too few confident
joints) become ignore regions (an annotation with num_keypoints 0 and a box polygon, which the dataset
masks out instead of teaching "background"); doubtful joints of a confident person get visibility 0.
People in a video (or a folder marked as a sequence) are linked across the sampled frames by Hungarian
matching on keypoint/box similarity, so every annotation carries a `track_id` and any two frames of a clip
form a pair of views with known identities.

Output: OUT/images/*.jpg and OUT/annotations.json (COCO keypoints; images carry video_id, frame_id (the
sampled frame's position, what `training.dataset` pairs frames by) and source_frame (its number in the
video); annotations carry track_id; a top-level "videos" list names the sources).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from tagtrack.model.errors import UserFacingError
from tagtrack.model.files import read_image
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.training.teacher import (
    MoveNetTeacher,
    TeacherConfig,
    TeacherPerson,
    box_iou,
    keypoint_similarity,
    predict_teacher,
)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
ANNOTATIONS_NAME = "annotations.json"
IMAGES_NAME = "images"


@dataclass(frozen=True)
class LabelConfig:
    """What counts as a confident person and joint, and how people are linked over time.

    A person is kept as an annotation when its score >= person_threshold and at least min_joints joints
    have score >= joint_threshold (the others get visibility 0). A person with score >= ignore_threshold
    that is not confident becomes an ignore region (its box grown by box_margin on each side); lower
    scores are dropped. Linking: people of consecutive sampled frames match when max(OKS, box IoU) >=
    link_threshold; a track that was not seen for max_gap sampled frames ends.
    """

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    every: int = 1
    max_frames: int | None = None
    person_threshold: float = 0.3
    joint_threshold: float = 0.3
    min_joints: int = 4
    ignore_threshold: float = 0.1
    box_margin: float = 0.1
    link_threshold: float = 0.2
    max_gap: int = 3
    folder_is_sequence: bool = False
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.every < 1:
            raise UserFacingError(f"--every must be at least 1, got {self.every}")
        if self.ignore_threshold > self.person_threshold:
            raise UserFacingError("the ignore threshold must not exceed the person threshold")


@dataclass
class LabelSummary:
    annotations_path: Path
    images: int = 0
    people: int = 0
    ignore_regions: int = 0
    tracks: int = 0
    sources: int = 0


# ---------------------------------------------------------------- inputs


@dataclass
class _SourceFrame:
    index: int          # frame number in the video / position in the folder
    image: np.ndarray   # BGR uint8
    original: Path | None  # the image file, when the frame came from one


def _source_kind(path: Path) -> str:
    if path.is_dir():
        return "folder"
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    if path.is_file():
        return "video"
    raise UserFacingError(f"input not found: {path}")


def _probe_video(path: Path) -> tuple[float | None, int]:
    """The video's frame rate and frame count (0 if unknown); UserFacingError naming the file when it
    cannot be opened."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise UserFacingError(f"video {path} could not be opened (unreadable or not a video)")
        return float(capture.get(cv2.CAP_PROP_FPS)) or None, max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    finally:
        capture.release()


def _expected_frames(path: Path, kind: str, frame_count: int, config: LabelConfig) -> int | None:
    """How many frames the source will give (for the progress bar); None when unknown."""
    if kind == "image":
        return 1
    if kind == "folder":
        count = sum(1 for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        count = frame_count
    if not count:
        return None
    count = -(-count // config.every)
    return min(count, config.max_frames) if config.max_frames is not None else count


def _iter_video(path: Path, every: int, max_frames: int | None) -> Iterator[_SourceFrame]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UserFacingError(f"video {path} could not be opened (unreadable or not a video)")
    try:
        index, produced = 0, 0
        while max_frames is None or produced < max_frames:
            if index % every == 0:
                ok, image = capture.read()
                if not ok:
                    break
                produced += 1
                yield _SourceFrame(index, image, None)
            elif not capture.grab():  # skipped frames are not decoded into images
                break
            index += 1
        if produced == 0:
            raise UserFacingError(f"video {path} has no readable frames")
    finally:
        capture.release()




def _iter_folder(path: Path, every: int, max_frames: int | None) -> Iterator[_SourceFrame]:
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserFacingError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    files = files[::every]
    if max_frames is not None:
        files = files[:max_frames]
    for index, file in enumerate(files):
        yield _SourceFrame(index * every, read_image(file), file)


def _iter_source(path: Path, kind: str, config: LabelConfig) -> Iterator[_SourceFrame]:
    if kind == "video":
        return _iter_video(path, config.every, config.max_frames)
    if kind == "folder":
        return _iter_folder(path, config.every, config.max_frames)
    return iter([_SourceFrame(0, read_image(path), path)])


# ---------------------------------------------------------------- linking people over time


class TrackLinker:
    """Links the people of consecutive sampled frames by Hungarian matching (scipy).

    Each track predicts where its person is now (last position plus its last per-step motion), and the
    similarity of a person to a track is max(OKS, box IoU) against that prediction, with the OKS object
    area multiplied by area_scale: sampled frames can be far apart, so distances are judged leniently.
    """

    def __init__(self, schema: KeypointSchema, threshold: float, max_gap: int, first_id: int = 1,
                 area_scale: float = 4.0) -> None:
        self.sigmas = schema.sigmas_array()
        self.threshold = threshold
        self.max_gap = max_gap
        self.area_scale = area_scale
        self.next_id = first_id
        self.tracks: dict[int, _Track] = {}
        self.step = 0

    def similarity(self, person: TeacherPerson, track: "_Track") -> float:
        gap = self.step - track.seen
        shift = track.velocity * gap
        predicted = TeacherPerson(track.person.keypoints.copy(), track.person.score,
                                  track.person.box + np.array([shift[0], shift[1], shift[0], shift[1]]))
        predicted.keypoints[:, :2] += shift
        widened = TeacherPerson(person.keypoints, person.score, person.box)
        oks = keypoint_similarity(widened, predicted, self.sigmas / np.sqrt(self.area_scale))
        return max(oks, box_iou(person.box, predicted.box))

    def update(self, people: Sequence[TeacherPerson]) -> list[int]:
        """The track id of each person of this frame (new ids for people no track matches)."""
        self.step += 1
        active = [(tid, track) for tid, track in self.tracks.items() if self.step - track.seen <= self.max_gap]
        ids = [0] * len(people)
        if active and people:
            similarity = np.array([[self.similarity(p, track) for _, track in active] for p in people])
            rows, cols = linear_sum_assignment(-similarity)
            for r, c in zip(rows, cols):
                if similarity[r, c] >= self.threshold:
                    ids[r] = active[c][0]
        for i, person in enumerate(people):
            if ids[i] == 0:
                ids[i] = self.next_id
                self.next_id += 1
                self.tracks[ids[i]] = _Track(person, self.step, np.zeros(2))
            else:
                track = self.tracks[ids[i]]
                motion = (_centre(person) - _centre(track.person)) / (self.step - track.seen)
                self.tracks[ids[i]] = _Track(person, self.step, motion)
        return ids


@dataclass
class _Track:
    person: TeacherPerson
    seen: int              # the linker step this person was last seen
    velocity: np.ndarray   # box-centre motion per step, px


def _centre(person: TeacherPerson) -> np.ndarray:
    return np.array([(person.box[0] + person.box[2]) / 2, (person.box[1] + person.box[3]) / 2])


# ---------------------------------------------------------------- people -> annotations


def _grown_box(person: TeacherPerson, margin: float, image_hw: tuple[int, int], min_score: float) -> list[float]:
    height, width = image_hw
    seen = person.keypoints[person.keypoints[:, 2] >= min_score, :2]
    x1, y1, x2, y2 = person.box
    if len(seen):
        x1, y1 = min(x1, seen[:, 0].min()), min(y1, seen[:, 1].min())
        x2, y2 = max(x2, seen[:, 0].max()), max(y2, seen[:, 1].max())
    grow_x, grow_y = margin * (x2 - x1), margin * (y2 - y1)
    x1, y1 = max(0.0, x1 - grow_x), max(0.0, y1 - grow_y)
    x2, y2 = min(float(width), x2 + grow_x), min(float(height), y2 + grow_y)
    return [float(x1), float(y1), float(max(0.0, x2 - x1)), float(max(0.0, y2 - y1))]


def person_annotation(person: TeacherPerson, image_hw: tuple[int, int], config: LabelConfig) -> dict | None:
    """The COCO annotation for one teacher person: keypoints, an ignore region, or None (dropped)."""
    if person.score < config.ignore_threshold:
        return None
    confident = person.keypoints[:, 2] >= config.joint_threshold
    height, width = image_hw
    inside = (person.keypoints[:, 0] >= 0) & (person.keypoints[:, 0] < width) \
        & (person.keypoints[:, 1] >= 0) & (person.keypoints[:, 1] < height)
    confident &= inside
    is_confident = person.score >= config.person_threshold and int(confident.sum()) >= config.min_joints
    x, y, w, h = _grown_box(person, config.box_margin, image_hw, config.joint_threshold)
    annotation = {
        "category_id": 1,
        "iscrowd": 0,
        "bbox": [round(v, 2) for v in (x, y, w, h)],
        # A box polygon: the dataset (pycocotools annToMask) turns it into the ignore mask when needed.
        "segmentation": [[round(v, 2) for v in (x, y, x + w, y, x + w, y + h, x, y + h)]],
        "area": round(w * h, 2),
        "score": round(float(person.score), 4),
        "teacher_votes": int(person.votes),
    }
    keypoints = np.zeros((len(person.keypoints), 3), dtype=np.float64)
    if is_confident:
        keypoints[confident, :2] = person.keypoints[confident, :2]
        keypoints[confident, 2] = 2
    annotation["keypoints"] = [round(float(v), 2) if i % 3 != 2 else int(v)
                               for i, v in enumerate(keypoints.reshape(-1))]
    annotation["num_keypoints"] = int(confident.sum()) if is_confident else 0
    return annotation


def coco_categories(schema: KeypointSchema) -> list[dict]:
    return [{
        "id": 1, "name": "person", "supercategory": "person",
        "keypoints": list(schema.keypoint_names),
        "skeleton": [[a + 1, b + 1] for a, b in schema.skeleton],  # COCO files count joints from 1
    }]


# ---------------------------------------------------------------- the labelling run


class _Writer:
    """Accumulates the COCO dataset and writes it atomically; written again on any exit, so a stopped
    run keeps every frame labelled so far."""

    def __init__(self, out_dir: Path, schema: KeypointSchema) -> None:
        self.out_dir = out_dir
        self.images_dir = out_dir / IMAGES_NAME
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / ANNOTATIONS_NAME
        self.dataset = {
            "info": {"description": "pseudo-labels made by tagtrack label", "version": "1.0"},
            "licenses": [], "videos": [], "images": [], "annotations": [],
            "categories": coco_categories(schema),
        }

    def write(self) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(self.dataset), encoding="utf-8")
        temporary.replace(self.path)


def _unique_stem(path: Path, used: set[str]) -> str:
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in path.stem) or "source"
    candidate, n = stem, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}_{n}"
    used.add(candidate)
    return candidate


def label_inputs(
    teacher_path: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    config: LabelConfig | None = None,
    schema: KeypointSchema = COCO17,
    progress: bool = True,
) -> LabelSummary:
    """Run the teacher over every input (video file, image folder or image) and write the COCO set."""
    from tqdm import tqdm

    config = config or LabelConfig()
    paths = [Path(p) for p in inputs]
    if not paths:
        raise UserFacingError("no input given to label")
    kinds = [_source_kind(p) for p in paths]  # every input checked before the teacher is loaded
    probes = [_probe_video(p) if kind == "video" else (None, 0) for p, kind in zip(paths, kinds)]
    teacher = MoveNetTeacher(teacher_path, schema)
    out_dir = Path(out_dir)
    try:
        writer = _Writer(out_dir, schema)
    except OSError as error:
        raise UserFacingError(f"cannot write to {out_dir}: {error.strerror or error}") from None
    summary = LabelSummary(annotations_path=writer.path, sources=len(paths))
    dataset = writer.dataset
    used_stems: set[str] = set()
    next_track = 1
    try:
        for video_id, (path, kind, (fps, frame_count)) in enumerate(zip(paths, kinds, probes), start=1):
            stem = _unique_stem(path, used_stems)
            linked = kind == "video" or (kind == "folder" and config.folder_is_sequence)
            linker = TrackLinker(schema, config.link_threshold, config.max_gap, next_track) if linked else None
            dataset["videos"].append({"id": video_id, "name": stem, "path": str(path), "kind": kind,
                                      "fps": fps, "every": config.every, "linked": linked})
            frames = _iter_source(path, kind, config)
            total = _expected_frames(path, kind, frame_count, config)
            bar = tqdm(frames, desc=f"label {path.name}", unit="frame", total=total, disable=not progress)
            for number, frame in enumerate(bar):
                _label_frame(teacher, frame, number, video_id, stem, kind, linker, writer, config, summary)
            if linker is not None:
                next_track = linker.next_id
    finally:
        summary.tracks = next_track - 1 if next_track > 1 else 0
        writer.write()
    return summary


def _label_frame(teacher: MoveNetTeacher, frame: _SourceFrame, frame_number: int, video_id: int, stem: str, kind: str,
                 linker: TrackLinker | None, writer: _Writer, config: LabelConfig, summary: LabelSummary) -> None:
    dataset = writer.dataset
    height, width = frame.image.shape[:2]
    image_id = len(dataset["images"]) + 1
    name = f"{stem}_{frame.index:06d}.jpg" if kind != "image" else f"{stem}.jpg"
    target = writer.images_dir / name
    if frame.original is not None and frame.original.suffix.lower() in (".jpg", ".jpeg"):
        shutil.copyfile(frame.original, target)  # no second JPEG generation loss
    elif not cv2.imwrite(str(target), frame.image, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality]):
        raise UserFacingError(f"could not write {target}")
    people = predict_teacher(teacher, frame.image, config.teacher)
    people = [p for p in people if p.score >= config.ignore_threshold]
    track_ids = linker.update(people) if linker is not None else [None] * len(people)
    for person, track_id in zip(people, track_ids):
        annotation = person_annotation(person, (height, width), config)
        if annotation is None:
            continue
        annotation["id"] = len(dataset["annotations"]) + 1
        annotation["image_id"] = image_id
        if track_id is not None:
            annotation["track_id"] = int(track_id)
        dataset["annotations"].append(annotation)
        if annotation["num_keypoints"] > 0:
            summary.people += 1
        else:
            summary.ignore_regions += 1
    # frame_id counts sampled frames (what training.dataset pairs by); source_frame is the video's own number.
    entry = {"id": image_id, "file_name": name, "width": width, "height": height,
             "video_id": video_id, "frame_id": frame_number, "source_frame": frame.index}
    if frame.original is not None:
        entry["source_file"] = str(frame.original)
    dataset["images"].append(entry)
    summary.images += 1
