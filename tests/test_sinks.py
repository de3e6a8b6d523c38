from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from tagtrack.model.errors import UserFacingError
from tagtrack.model.pose import Pose
from tagtrack.model.schema import COCO17
from tagtrack.realtime.pipeline import FrameResult
from tagtrack.realtime.exports import (
    EXPORT_FORMATS,
    CocoResultsSink,
    MotChallengeSink,
    OpenPoseSink,
    PoseTrackSink,
    export_sinks,
    openpose_body25,
)
from tagtrack.realtime.jsonl import JSONL_SCHEMA_PATH, JsonLinesSink, result_record
from tagtrack.realtime.output_paths import OutputError, check_output_path
from tagtrack.realtime.video_sink import AnnotatedVideoSink, h264_encoder
from tagtrack.realtime.sources import Frame
from tagtrack.tracker import TrackedPose

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def make_pose(center_x: float, center_y: float, score: float = 0.8, missing: tuple[int, ...] = ()) -> Pose:
    rng = np.random.default_rng(int(center_x))
    keypoints = np.zeros((17, 3), np.float32)
    keypoints[:, 0] = center_x + rng.uniform(-10, 10, 17)
    keypoints[:, 1] = center_y + np.linspace(-30, 30, 17)
    keypoints[:, 2] = score
    keypoints[list(missing), :] = 0
    return Pose(keypoints=keypoints, score=score, box=Pose.box_from_keypoints(keypoints),
                tag=np.array([0.5, -0.25], np.float32))


def make_result(index: int, people: list[tuple[Pose, int | None]], size_hw=(96, 128)) -> FrameResult:
    image = np.full((*size_hw, 3), 40, np.uint8)
    frame = Frame(image=image, index=index, timestamp=index / 25.0, source_id="clip.mp4")
    tracked = [TrackedPose(pose=pose, track_id=track_id, age=0.0, keypoints_smoothed=pose.keypoints)
               for pose, track_id in people]
    return FrameResult(frame=frame, tracked=tracked, heatmaps=None, timings={"infer": 0.01}, dropped=0)


def results(frames: int = 4) -> list[FrameResult]:
    return [make_result(i, [(make_pose(40 + i, 50), 1), (make_pose(90, 45, 0.6, missing=(3, 4)), 2)] if i % 2 == 0
                        else [(make_pose(40 + i, 50), None)]) for i in range(frames)]


def jsonl_validator():
    schema = json.loads(JSONL_SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_json_lines_one_valid_line_per_frame_flushed_as_written(tmp_path):
    path = tmp_path / "poses.jsonl"
    sink = JsonLinesSink(path)
    validator = jsonl_validator()
    for count, result in enumerate(results(4), start=1):
        sink.write(result)
        # Flushed per frame: readable before close, in the temporary that a kill leaves.
        assert len(sink.partial.read_text().splitlines()) == count
        assert sink.partial.name.startswith("poses.partial-") and not path.exists()
    sink.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        validator.validate(record)
    first = records[0]
    assert first["schema_version"] == 3 and first["frame_index"] == 0
    assert first["image"] == {"width": 128, "height": 96}
    assert [p["track_id"] for p in first["people"]] == [1, 2]
    assert records[1]["people"][0]["track_id"] is None
    assert list(first["people"][0]["keypoints"]) == list(COCO17.keypoint_names)
    nose = first["people"][0]["keypoints"]["nose"]
    expected = results(1)[0].tracked[0].pose.keypoints[0]
    assert (nose["x"], nose["y"], nose["score"]) == pytest.approx(tuple(expected), abs=0.01)
    assert first["people"][1]["keypoints"]["left_ear"]["score"] == 0
    assert records[3]["timestamp"] == pytest.approx(3 / 25.0)


def test_json_schema_rejects_broken_records():
    validator = jsonl_validator()
    sink_record = json.loads(json.dumps(result_record(results(1)[0], COCO17)))
    validator.validate(sink_record)
    broken = json.loads(json.dumps(sink_record))
    del broken["people"][0]["keypoints"]["nose"]["x"]
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)
    wrong_version = dict(sink_record, schema_version=2)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(wrong_version)


def test_json_lines_header_carries_the_settings_and_readers_skip_it(tmp_path):
    from tagtrack.model.records import read_pose_lines

    path = tmp_path / "poses.jsonl"
    settings = {"decode": {"top_k": 3}, "tracker": None, "input_hw": [64, 64], "weights": "w.safetensors",
                "keypoints": list(COCO17.keypoint_names)}
    sink = JsonLinesSink(path, COCO17, settings)
    for result in results(2):
        sink.write(result)
    sink.close()
    validator = jsonl_validator()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for record in lines:
        validator.validate(record)
    assert lines[0] == {"schema_version": 3, "settings": settings} and len(lines) == 3
    assert read_pose_lines(path) == (settings, lines[1:])
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"schema_version": 3, "settings": {"decode": {}}})  # incomplete settings


def count_video_frames(path: Path) -> tuple[int, tuple[int, int], float]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} does not open"
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    return frames, size, fps


CODECS = ["mp4v", pytest.param("h264", marks=pytest.mark.skipif(h264_encoder() is None, reason="no PyAV"))]


@pytest.mark.parametrize("codec", CODECS)
def test_annotated_video_keeps_size_fps_and_every_frame(tmp_path, codec):
    path = tmp_path / "annotated.mp4"
    sink = AnnotatedVideoSink(path, fps=25.0, draw_boxes=True, codec=codec)
    frames = results(5)
    # A frame of another size (an image folder with mixed sizes) is resized, not skipped.
    frames.append(make_result(5, [(make_pose(40, 50), 3)], size_hw=(60, 80)))
    for result in frames:
        sink.write(result)
    sink.close()
    count, size, fps = count_video_frames(path)
    assert count == 6 and size == (128, 96) and fps == pytest.approx(25.0)
    # Skeletons were drawn: the first frame differs from the plain grey input.
    capture = cv2.VideoCapture(str(path))
    ok, image = capture.read()
    capture.release()
    assert ok and np.abs(image.astype(int) - 40).max() > 60
    import av

    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == {"mp4v": "mpeg4", "h264": "h264"}[codec]


@pytest.mark.skipif(h264_encoder() is None, reason="no PyAV")
def test_h264_video_of_odd_size_is_padded_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    sink = AnnotatedVideoSink(path, fps=30.0, codec="h264")
    for index in range(3):
        sink.write(make_result(index, [], size_hw=(45, 63)))
    assert not path.exists()  # under its partial name until complete
    sink.close()
    assert count_video_frames(path)[:2] == (3, (64, 46))


class SmallDisk(io.RawIOBase):
    """A raw file that accepts `budget` bytes, writes part of the write that crosses it, then fails
    with ENOSPC, as a full disk does."""

    def __init__(self, raw, budget: int) -> None:
        self.raw, self.budget = raw, budget

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.budget <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = self.raw.write(bytes(data)[: self.budget])
        self.budget -= written
        return written

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()
        super().close()


def test_json_lines_on_a_full_disk_keep_whole_lines_and_name_the_file(tmp_path):
    path = tmp_path / "poses.jsonl"
    sink = JsonLinesSink(path)
    frames = results(6)
    sink.write(frames[0])
    sink._file = SmallDisk(sink._file, budget=100)  # room for 100 more bytes: part of the next line
    partial = sink.partial
    with pytest.raises(OutputError, match=f"cannot write {path}: No space left on device; its first 1 frames are "
                                          f"kept in {partial}"):
        sink.write(frames[1])
    sink.write(frames[2])  # a failed sink writes nothing more
    sink.close()
    assert not path.exists()  # a failed output never takes the final name
    assert len(partial.read_text().splitlines()) == 1
    json.loads(partial.read_text())


def test_scores_in_records_stay_within_0_and_1():
    pose = make_pose(40, 50, score=1.3)
    pose.keypoints[0, 2] = -0.2
    record = result_record(make_result(0, [(pose, None)]), COCO17)
    jsonl_validator().validate(record)
    person = record["people"][0]
    assert person["score"] == 1.0 and person["keypoints"]["nose"]["score"] == 0.0


def test_output_checks_fail_early_with_one_line(tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(UserFacingError, match="cannot be made: .*file is a file"):
        AnnotatedVideoSink(tmp_path / "file" / "out.mp4", fps=30)
    with pytest.raises(UserFacingError, match="cannot be made: .*file is a file"):
        JsonLinesSink(tmp_path / "file" / "sub" / "poses.jsonl")
    with pytest.raises(UserFacingError, match="is a folder"):
        check_output_path(tmp_path, "--out")


def test_a_missing_output_folder_is_made_when_the_output_opens(tmp_path):
    path = tmp_path / "new" / "sub" / "poses.jsonl"
    sink = JsonLinesSink(path)
    for result in results(2):
        sink.write(result)
    sink.close()
    assert len(path.read_text().splitlines()) == 2


@pytest.mark.skipif(IS_ROOT, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(UserFacingError, match="not writable"):
            JsonLinesSink(folder / "poses.jsonl")
    finally:
        folder.chmod(0o755)


def test_read_only_folder_message(tmp_path, monkeypatch):
    # As root the kernel lets every write through; check the refusal path with access() saying no.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(UserFacingError, match="folder .* is not writable"):
        AnnotatedVideoSink(tmp_path / "out.mp4", fps=30)


def test_coco_results_load_in_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    path = tmp_path / "results.coco.json"
    sink = CocoResultsSink(path)
    for result in results(3):
        sink.write(result)
    assert not path.exists()  # renamed into place only when complete
    sink.close()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left beside it
    detections = json.loads(path.read_text())
    assert len(detections) == 2 + 1 + 2
    assert all(len(d["keypoints"]) == 51 and d["category_id"] == 1 for d in detections)
    ground_truth = COCO()
    ground_truth.dataset = {
        "images": [{"id": i, "width": 128, "height": 96} for i in range(3)],
        "annotations": [], "categories": [{"id": 1, "name": "person"}],
    }
    ground_truth.createIndex()
    loaded = ground_truth.loadRes(str(path))
    assert len(loaded.getAnnIds()) == 5


def test_exports_are_streamed_to_disk_not_kept_in_memory(tmp_path):
    sinks = [CocoResultsSink(tmp_path / "run.coco.json"), PoseTrackSink(tmp_path / "run.posetrack.json")]
    frames = results(2)
    for index in range(300):
        for sink in sinks:
            sink.write(frames[index % 2])
    # Before close: the people are on disk in the partial files (a buffer's worth at most in memory).
    on_disk = sum(path.stat().st_size for path in tmp_path.glob("*.partial-*"))
    assert on_disk > 300 * 1.5 * 300  # about 450 people of several hundred bytes each
    for sink in sinks:
        sink.close()
    assert len(json.loads((tmp_path / "run.coco.json").read_text())) == 450
    assert len(json.loads((tmp_path / "run.posetrack.json").read_text())["annotations"]) == 450
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run.coco.json", "run.posetrack.json"]


def test_posetrack_export_has_images_tracks_and_categories(tmp_path):
    path = tmp_path / "run.posetrack.json"
    sink = PoseTrackSink(path)
    for result in results(3):
        sink.write(result)
    sink.close()
    document = json.loads(path.read_text())
    assert [image["frame_id"] for image in document["images"]] == [0, 1, 2]
    assert [a["track_id"] for a in document["annotations"]] == [1, 2, -1, 1, 2]
    assert document["categories"][0]["keypoints"] == list(COCO17.keypoint_names)
    assert all(len(a["keypoints"]) == 51 and len(a["scores"]) == 17 for a in document["annotations"])


def test_openpose_files_per_frame_in_body25(tmp_path):
    folder = tmp_path / "run_openpose"
    sink = OpenPoseSink(folder, name="run")
    for result in results(2):
        sink.write(result)
    sink.close()
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["run_000000000000_keypoints.json", "run_000000000001_keypoints.json"]
    people = json.loads((folder / files[0]).read_text())["people"]
    assert [p["person_id"] for p in people] == [[1], [2]]
    assert all(len(p["pose_keypoints_2d"]) == 75 for p in people)


def test_openpose_body25_mapping():
    pose = make_pose(50, 50)
    body = np.array(openpose_body25(pose.keypoints)).reshape(25, 3)
    keypoints = pose.keypoints
    assert body[0, :2] == pytest.approx(keypoints[0, :2], abs=0.01)  # nose
    assert body[1, :2] == pytest.approx(keypoints[[5, 6], :2].mean(0), abs=0.01)  # neck
    assert body[2, :2] == pytest.approx(keypoints[6, :2], abs=0.01)  # right shoulder
    assert body[8, :2] == pytest.approx(keypoints[[11, 12], :2].mean(0), abs=0.01)  # mid hip
    assert (body[19:] == 0).all()  # feet: not in COCO-17
    missing = make_pose(50, 50, missing=(5,))
    assert np.array(openpose_body25(missing.keypoints)).reshape(25, 3)[1].tolist() == [0, 0, 0]


def test_export_sinks_names(tmp_path):
    sinks = export_sinks(["coco", "posetrack", "openpose", "coco"], tmp_path / "clip")
    assert [type(s) for s in sinks] == [CocoResultsSink, PoseTrackSink, OpenPoseSink]
    for sink in sinks:
        sink.close()
    assert (tmp_path / "clip_openpose").is_dir()  # made when the export is complete
    with pytest.raises(UserFacingError, match="unknown --format 'csv'"):
        export_sinks(["csv"], tmp_path / "clip")


@pytest.mark.parametrize("name", list(EXPORT_FORMATS))
def test_every_registered_format_reports_the_path_it_writes(tmp_path, name):
    """The one table (EXPORT_FORMATS): the run's report of its outputs names exactly what the sink writes."""
    from tagtrack.realtime.run import RunOptions, labelled_outputs

    options = RunOptions(source="clip.mp4", json=tmp_path / "run.jsonl", formats=[name])
    reported = labelled_outputs(options)
    assert set(reported) == {"--json", f"--format {name}", "settings"}
    settings = {"decode": {"top_k": 3}, "tracker": None}
    sinks = export_sinks([name], tmp_path / "run", COCO17, settings)
    for result in results(3):
        for sink in sinks:
            sink.write(result)
    for sink in sinks:
        sink.close()
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == sorted([reported[f"--format {name}"].name, reported["settings"].name])
    assert json.loads(reported["settings"].read_text()) == settings


def test_every_box_written_is_the_box_the_track_reports(tmp_path):
    # The tracker reports a person's box with its size averaged over time (TrackedPose.box_smoothed); the
    # JSON Lines, the MOT rows and the PoseTrack file write that box, not the single frame's.
    result = make_result(0, [(make_pose(40, 50), 3)])
    reported = np.array([30.0, 12.0, 52.0, 90.0], np.float32)
    result.tracked[0].box_smoothed = reported
    assert not np.allclose(result.tracked[0].pose.box, reported)
    sinks = {"jsonl": JsonLinesSink(tmp_path / "run.jsonl"), "mot": MotChallengeSink(tmp_path / "run.txt"),
             "posetrack": PoseTrackSink(tmp_path / "run.posetrack.json")}
    for sink in sinks.values():
        sink.write(result)
        sink.close()
    record = json.loads((tmp_path / "run.jsonl").read_text().splitlines()[-1])
    assert record["people"][0]["box"] == pytest.approx(reported.tolist())
    row = (tmp_path / "run.txt").read_text().split(",")
    assert [float(v) for v in row[2:6]] == pytest.approx([30.0, 12.0, 22.0, 78.0])
    annotation = json.loads((tmp_path / "run.posetrack.json").read_text())["annotations"][0]
    assert annotation["bbox"] == pytest.approx([30.0, 12.0, 22.0, 78.0])
