"""The `--format` exports: COCO keypoint results, PoseTrack18, OpenPose BODY_25, MOTChallenge, and the run's
`<base>.settings.json` beside them.

`EXPORT_FORMATS` is the one table of formats (name -> description, path rule, sink class): a new format is a
sink class here and one entry in it; the CLI's `--format` choices, the paths reported, the checks and the sinks
all come from that table. Every export is a `FileSink` (realtime/output_paths.py): written to temporaries,
renamed into place with the run's other outputs. COCO and PoseTrack are streamed to disk, so memory stays flat
however long the run. Numbers are rounded as the JSON Lines records round them (model/records.py).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagtrack.model.errors import UserFacingError
from tagtrack.model.records import PIXEL_DIGITS, SCORE_DIGITS, rounded, unit_score
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.realtime.output_paths import (
    FileSink,
    OutputError,
    StreamedFileSink,
    Temporary,
    check_output_path,
    discard_outputs,
    output_error,
    write_whole_file,
)
from tagtrack.realtime.pipeline import FrameResult, is_confirmed


def _flat_keypoints(keypoints: np.ndarray) -> list[float]:
    """[K, 3] -> [x, y, score] * K: pixels and scores rounded as the JSON Lines records round them."""
    flat = np.asarray(keypoints, dtype=np.float64).reshape(-1)
    return [rounded(v, PIXEL_DIGITS if i % 3 < 2 else SCORE_DIGITS) for i, v in enumerate(flat)]


def image_id_for(frame) -> int:
    """COCO image id of a frame: the numeric file name of a folder image (COCO's 000000000139.jpg),
    else the frame index."""
    stem = Path(frame.source_id).stem
    if stem.isdigit() and Path(frame.source_id).suffix:
        return int(stem)
    return int(frame.index)


class _StreamedJson:
    """A JSON list streamed to a `Temporary` item by item (memory stays flat whatever the run's length)
    after `head`; finish() adds `tail` and closes it. Every write is checked and reported as an
    OutputError naming `path`, the output it is for."""

    def __init__(self, path: Path, temporary: Temporary, head: str = "") -> None:
        self.path = path
        self.temporary = temporary
        self.count = 0
        try:
            self._file = open(temporary.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in finish()
        except OSError as error:
            temporary.discard()
            raise output_error(path, error) from None
        try:
            self._write(head)
        except OutputError:
            self.discard()
            raise

    @property
    def closed(self) -> bool:
        return self._file.closed

    def _write(self, text: str) -> None:
        try:
            self._file.write(text)
        except OSError as error:
            raise output_error(self.path, error) from None

    def append(self, item: object) -> None:
        self._write(("," if self.count else "") + json.dumps(item, separators=(",", ":"), allow_nan=False))
        self.count += 1

    def finish(self, tail: str = "") -> None:
        self._write(tail)
        try:
            self._file.close()
        except OSError as error:
            raise output_error(self.path, error) from None

    def discard(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass
        if not self.temporary.done:
            self.temporary.discard()


class CocoResultsSink(FileSink):
    """COCO keypoint results JSON: [{image_id, category_id: 1, keypoints [x,y,score]*K, score}].

    The list pycocotools' `COCO.loadRes` takes; streamed to a `Temporary`, renamed at close.
    """

    def __init__(self, path: str | Path, schema: KeypointSchema = COCO17, settings: dict | None = None) -> None:
        self.path = check_output_path(path, "COCO export")
        self._results = _StreamedJson(self.path, Temporary(self.path), head="[")
        self.partial = self._results.temporary.path
        self.failed = False

    def write(self, result: FrameResult) -> None:
        if self.failed:
            return
        image_id = image_id_for(result.frame)
        try:
            for tracked in result.tracked:
                self._results.append({
                    "image_id": image_id,
                    "category_id": 1,
                    "keypoints": _flat_keypoints(tracked.pose.keypoints),
                    "score": unit_score(tracked.pose.score),
                })
        except OutputError:
            self.failed = True
            raise

    def finish(self) -> None:
        if self._results.closed or self.failed:
            return
        try:
            self._results.finish("]")
        except OutputError:
            self.failed = True
            raise

    def publish(self) -> None:
        if not self._results.temporary.done:
            self._results.temporary.publish()

    def abandon(self) -> list[Path]:
        if not self.failed:  # the run failed elsewhere: close the list, so that what it holds is valid JSON
            try:
                self.finish()
            except OutputError:
                pass
        if self.failed or self._results.temporary.done:
            self.discard()
            return []
        return [self._results.temporary.keep()]

    def discard(self) -> None:
        self._results.discard()


class PoseTrackSink(FileSink):
    """PoseTrack18-style JSON: images (one per frame), annotations with track_id, categories.

    Keypoints are our COCO-17 set in the COCO layout PoseTrack18 uses (x, y, score triples plus
    a per-joint "scores" list); people without a confirmed track get track_id -1. Images and
    annotations are streamed to two temporaries; finish() joins them into the document (a third
    temporary, renamed into place by publish()), with the run's `settings` under "settings" when given.
    """

    def __init__(self, path: str | Path, schema: KeypointSchema = COCO17, settings: dict | None = None) -> None:
        self.path = check_output_path(path, "PoseTrack export")
        self.schema = schema
        self.settings = settings
        self._document = Temporary(self.path)
        self.partial = self._document.path
        self._images = self._annotations = None
        try:
            self._images = _StreamedJson(self.path, Temporary(self.path, ".images"))
            self._annotations = _StreamedJson(self.path, Temporary(self.path, ".annotations"))
        except OutputError:
            self.discard()
            raise
        self.failed = False
        self._finished = False

    def write(self, result: FrameResult) -> None:
        if self.failed:
            return
        frame = result.frame
        height, width = frame.image.shape[:2]
        image_id = int(frame.index)
        try:
            self._images.append({
                "id": image_id, "frame_id": image_id, "file_name": _frame_name(frame),
                "width": int(width), "height": int(height), "timestamp": rounded(frame.timestamp, 6),
            })
            for tracked in result.tracked:
                pose = tracked.pose
                self._annotations.append({
                    "id": self._annotations.count,
                    "image_id": image_id,
                    "category_id": 1,
                    "track_id": -1 if tracked.track_id is None else int(tracked.track_id),
                    "keypoints": _flat_keypoints(pose.keypoints),
                    "scores": [unit_score(s) for s in np.asarray(pose.keypoints)[:, 2]],
                    "score": unit_score(pose.score),
                    "bbox": _xywh(tracked.box),
                })
        except OutputError:
            self.failed = True
            raise

    def finish(self) -> None:
        if self._finished or self.failed:
            return
        parts = (self._images, self._annotations)
        try:
            categories = [{
                "id": 1, "name": "person", "supercategory": "person",
                "keypoints": list(self.schema.keypoint_names),
                "skeleton": [[a + 1, b + 1] for a, b in self.schema.skeleton],  # 1-based, as in COCO files
            }]
            for part in parts:
                part.finish()
            with open(self._document.path, "w", encoding="utf-8") as document:
                document.write('{"images":[')
                _copy_into(self._images.temporary.path, document)
                document.write('],"annotations":[')
                _copy_into(self._annotations.temporary.path, document)
                document.write('],"categories":' + json.dumps(categories))
                if self.settings is not None:
                    document.write(',"settings":' + json.dumps(self.settings, allow_nan=False))
                document.write("}")
            self._finished = True
        except OSError as error:
            self.failed = True
            raise output_error(self.path, error) from None
        except OutputError:
            self.failed = True
            raise
        finally:
            for part in parts:
                part.discard()

    def publish(self) -> None:
        if not self._document.done:
            self._document.publish()

    def abandon(self) -> list[Path]:
        if not self.failed:  # the run failed elsewhere: what was written is still a valid document
            try:
                self.finish()
            except OutputError:
                pass
        if self.failed or not self._finished or self._document.done:
            self.discard()
            return []
        return [self._document.keep()]

    def discard(self) -> None:
        for part in (self._images, self._annotations):
            if part is not None:
                part.discard()
        if not self._document.done:
            self._document.discard()


def _copy_into(path: Path, target) -> None:
    with open(path, encoding="utf-8") as source:
        shutil.copyfileobj(source, target)


def _frame_name(frame) -> str:
    """The image file of a folder frame, else "<video name>#<frame index>"."""
    path = Path(frame.source_id)
    if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"):
        return frame.source_id
    return f"{path.name}#{frame.index:06d}"


def _xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box).reshape(4))
    return [rounded(x1), rounded(y1), rounded(x2 - x1), rounded(y2 - y1)]


# OpenPose BODY_25 joint order, each as the COCO-17 joints it comes from (a pair: their midpoint;
# empty: OpenPose's foot joints, which COCO-17 does not have, written as 0,0,0).
_BODY25_FROM_COCO17: tuple[tuple[int, ...], ...] = (
    (0,), (5, 6), (6,), (8,), (10,), (5,), (7,), (9,), (11, 12), (12,), (14,), (16,), (11,), (13,), (15,),
    (2,), (1,), (4,), (3,), (), (), (), (), (), (),
)


def openpose_body25(keypoints: np.ndarray) -> list[float]:
    """COCO-17 [17,3] -> OpenPose BODY_25 flat [x, y, c] * 25 (neck, mid-hip: midpoints; feet: 0)."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    flat: list[float] = []
    for sources in _BODY25_FROM_COCO17:
        if not sources or any(keypoints[s, 2] <= 0 for s in sources):
            flat.extend([0.0, 0.0, 0.0])
            continue
        chosen = keypoints[list(sources)]
        flat.extend([rounded(chosen[:, 0].mean()), rounded(chosen[:, 1].mean()), unit_score(chosen[:, 2].min())])
    return flat


def check_openpose_folder(folder: Path) -> None:
    """The OpenPose export is a folder: a file of that name is refused before anything is opened."""
    if folder.exists() and not folder.is_dir():
        raise UserFacingError(f"OpenPose export folder {folder} exists and is not a folder: move it or choose "
                              "another --json name")
    check_output_path(folder / "frame_keypoints.json" if folder.is_dir() else folder, "OpenPose export folder")


class OpenPoseSink(FileSink):
    """OpenPose-style JSON, one `<name>_<frame:012d>_keypoints.json` per frame, BODY_25 layout.

    Written per frame, like OpenPose's own `--write_json`, into a temporary folder beside the export's
    (`poses_openpose.partial-3f9c2a`); publish() moves the files into the export's folder (made if missing;
    other files in it stay), so a failed run leaves an earlier export as it was.
    """

    def __init__(self, folder: str | Path, schema: KeypointSchema = COCO17, settings: dict | None = None,
                 name: str | None = None) -> None:
        if schema.keypoint_names != COCO17.keypoint_names:
            raise UserFacingError(f"the OpenPose export maps COCO-17 joints to BODY_25; this model's keypoints are "
                                  f"'{schema.name}'")
        self.folder = Path(folder)
        check_openpose_folder(self.folder)
        # Files are named after the run: poses_openpose/poses_000000000000_keypoints.json
        self.name = name or (self.folder.name.removesuffix("_openpose") if self.folder.name.endswith("_openpose")
                             else "frame")
        self._temporary = Temporary(self.folder, folder=True)
        self.partial = self._temporary.path
        self.frames_written = 0
        self.failed = False

    def write(self, result: FrameResult) -> None:
        if self.failed:
            return
        people = [{
            "person_id": [-1 if tracked.track_id is None else int(tracked.track_id)],
            "pose_keypoints_2d": openpose_body25(tracked.pose.keypoints),
            "face_keypoints_2d": [], "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": [],
            "pose_keypoints_3d": [], "face_keypoints_3d": [], "hand_left_keypoints_3d": [],
            "hand_right_keypoints_3d": [],
        } for tracked in result.tracked]
        path = self.partial / f"{self.name}_{result.frame.index:012d}_keypoints.json"
        document = json.dumps({"version": 1.3, "people": people}, allow_nan=False)
        try:
            path.write_text(document, encoding="utf-8")
        except OSError as error:
            self.failed = True
            path.unlink(missing_ok=True)  # never a cut file, even in the temporary folder
            raise output_error(self.folder, error) from None
        self.frames_written += 1

    def finish(self) -> None:
        pass  # every file was closed as it was written

    def publish(self) -> None:
        if self._temporary.done:
            return
        try:
            self.folder.mkdir(exist_ok=True)
            for path in sorted(self.partial.iterdir()):
                os.replace(path, self.folder / path.name)
        except OSError as error:
            self._temporary.keep()  # the files not moved yet stay where they are
            raise output_error(self.folder, error, f"files not moved are in {self.partial}") from None
        self._temporary.discard()

    def abandon(self) -> list[Path]:
        if self._temporary.done:
            return []
        if self.frames_written:
            return [self._temporary.keep()]
        self._temporary.discard()
        return []

    def discard(self) -> None:
        if not self._temporary.done:
            self._temporary.discard()


class MotChallengeSink(StreamedFileSink):
    """MOTChallenge result rows, `frame,id,left,top,width,height,score,-1,-1,-1`, one per tracked person.

    Frames are 1-based (frame index + 1), as MOTChallenge numbers them; people without a track id are
    left out. The box is the one the track reports (`TrackedPose.box`): the whole body estimated from the joints
    (`model.body_box`), its size averaged over the track's recent frames (tracker settings `box_size_time`).
    Rows are written and flushed per frame to a `Temporary`, renamed into place at the end.
    """

    def __init__(self, path: str | Path, schema: KeypointSchema = COCO17, settings: dict | None = None) -> None:
        self.path = check_output_path(path, "MOT export")
        self._temporary = Temporary(self.path)
        self.partial = self._temporary.path
        try:
            self._file = open(self.partial, "w", encoding="utf-8")  # noqa: SIM115 - closed in finish()
        except OSError as error:
            self._temporary.discard()
            raise output_error(self.path, error) from None
        self.failed = False
        self.rows_written = 0

    def write(self, result: FrameResult) -> None:
        if self.failed:
            return
        people = [t for t in result.tracked if is_confirmed(t)]
        if not people:
            return
        rows = []
        for tracked in people:
            x, y, w, h = _xywh(tracked.box)
            rows.append(f"{result.frame.index + 1},{int(tracked.track_id)},{x},{y},{w},{h},"
                        f"{rounded(tracked.pose.score, SCORE_DIGITS)},-1,-1,-1\n")
        try:
            self._file.write("".join(rows))
            self._file.flush()
        except OSError as error:
            self.failed = True
            raise output_error(self.path, error) from None
        self.rows_written += len(rows)

    def _worth_keeping(self) -> bool:
        return self.rows_written > 0 and not self.failed


class SettingsFileSink(FileSink):
    """`<base>.settings.json` beside the exports: the run's settings, written whole when the run starts (to a
    `Temporary`: whatever a failed run keeps says how it was made) and renamed into place with the exports.
    The file is what `--config` reads back."""

    def __init__(self, path: Path, settings: dict) -> None:
        self.path = check_output_path(path, "settings file")
        self._temporary = Temporary(self.path)
        self.partial = self._temporary.path
        self.failed = False
        try:
            self.partial.write_text(json.dumps(settings, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        except OSError as error:
            self._temporary.discard()
            raise output_error(self.path, error) from None

    def write(self, result: FrameResult) -> None:
        pass

    def finish(self) -> None:
        pass

    def publish(self) -> None:
        if not self._temporary.done:
            self._temporary.publish()

    def abandon(self) -> list[Path]:
        return [] if self._temporary.done else [self._temporary.keep()]

    def discard(self) -> None:
        if not self._temporary.done:
            self._temporary.discard()


@dataclass(frozen=True)
class OutputFormat:
    """One `--format`: what it is, where it writes beside the run's base name, and its sink.

    sink: the class, called as sink(path, schema, settings) (path: `path_for(base)`; settings: the
    run's, for a format that can carry them, else ignored). coco17_only: it writes
    COCO-17 joints in a fixed layout, so a model with other keypoints is refused before any output
    is opened."""

    name: str
    description: str
    suffix: str  # appended to the base name: poses -> poses.coco.json
    sink: type
    coco17_only: bool = False

    def path_for(self, base: str | Path) -> Path:
        base = Path(base)
        return base.with_name(base.name + self.suffix)


# The one table of export formats: `--format` choices, the output paths reported, the checks and the sinks.
EXPORT_FORMATS: dict[str, OutputFormat] = {
    "coco": OutputFormat("coco", "COCO keypoint results", ".coco.json", CocoResultsSink),
    "posetrack": OutputFormat("posetrack", "PoseTrack18 JSON", ".posetrack.json", PoseTrackSink),
    "openpose": OutputFormat("openpose", "OpenPose BODY_25 files", "_openpose", OpenPoseSink, coco17_only=True),
    "mot": OutputFormat("mot", "MOTChallenge tracks", ".mot.txt", MotChallengeSink),
}
# Beside the exports (whichever are asked for): the run's settings, as the JSON Lines header holds them.
SETTINGS_SUFFIX = ".settings.json"


def export_format(name: str) -> OutputFormat:
    if name not in EXPORT_FORMATS:
        raise UserFacingError(f"unknown --format {name!r} (choose from {', '.join(EXPORT_FORMATS)})")
    return EXPORT_FORMATS[name]


def export_paths(formats: list[str], base: str | Path) -> dict[str, Path]:
    """What `--format` writes: "--format NAME" -> its path, and "settings" -> the settings file beside them."""
    paths = {f"--format {name}": export_format(name).path_for(base) for name in dict.fromkeys(formats)}
    if paths:
        paths["settings"] = Path(base).with_name(Path(base).name + SETTINGS_SUFFIX)
    return paths


def check_export_schema(formats: list[str], schema: KeypointSchema) -> None:
    """Refuse a format that cannot write this model's keypoints (before anything is opened)."""
    for name in dict.fromkeys(formats):
        if export_format(name).coco17_only and schema.keypoint_names != COCO17.keypoint_names:
            raise UserFacingError(f"--format {name} writes COCO-17 joints; this model's keypoint schema is "
                                  f"'{schema.name}' ({schema.num_keypoints} keypoints)")


def write_settings_file(path: Path, settings: dict) -> None:
    document = json.dumps(settings, indent=2, allow_nan=False) + "\n"
    write_whole_file(path, lambda temporary: Path(temporary).write_text(document, encoding="utf-8"))

def export_sinks(formats: list[str], base: str | Path, schema: KeypointSchema = COCO17,
                 settings: dict | None = None) -> list:
    """The sinks for `--format` (paths: `export_paths`); with `settings`, the settings file is written
    beside them (SettingsFileSink) and PoseTrack's document carries them too."""
    check_export_schema(formats, schema)
    sinks = []
    try:
        for name in dict.fromkeys(formats):
            output = export_format(name)
            sinks.append(output.sink(output.path_for(base), schema, settings))
        if sinks and settings is not None:
            sinks.append(SettingsFileSink(export_paths(formats, base)["settings"], settings))
    except BaseException:
        discard_outputs(sinks)
        raise
    return sinks

