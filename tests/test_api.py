"""The Python API (realtime/api.py): PoseEstimator on images, tagtrack.track on videos, the records'
to_dict() against the JSON Lines the CLI writes, thread and file clean-up, and the errors."""

from __future__ import annotations

import json
import pydoc
import subprocess
import sys
import threading

import cv2
import jsonschema
import numpy as np
import pytest

import tagtrack
from tagtrack import main
from tagtrack.model.schema import COCO17
from tagtrack.realtime.sinks import JSONL_SCHEMA_PATH
from tests.test_run_cli import validated_lines, video_frame_count

# the tiny network is fastest on one thread, above all on a busy machine
pytestmark = pytest.mark.usefixtures("private_cache_and_one_thread")

FRAMES = 8


def write_noise_video(path, frames: int, size_hw=(48, 64), fps: float = 10.0, seed: int = 0):
    """Random-noise frames (MJPG): every frame different, with peaks for the tiny network to find."""
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size_hw[1], size_hw[0]))
    assert writer.isOpened()
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (*size_hw, 3), dtype=np.uint8))
    writer.release()
    return path


def pipeline_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("pipeline-")]


@pytest.fixture
def video(tmp_path):
    return write_noise_video(tmp_path / "clip.avi", FRAMES)


def test_track_gives_the_cli_outputs(tmp_path, tiny_weights, video):
    settings = ["--weights", str(tiny_weights), "--engine", "torch", "--detection-threshold", "0.0"]
    cli = tmp_path / "cli"
    cli.mkdir()
    code = main.main(["run", str(video), *settings, "--out", str(cli / "a.mp4"), "--json", str(cli / "a.jsonl"),
                      "--format", "coco"])
    assert code == 0
    cli_lines = validated_lines(cli / "a.jsonl")
    assert len(cli_lines) == FRAMES and sum(len(line["people"]) for line in cli_lines) > 0

    # Files given and stream left alone: runs to the end like the CLI, returns the summary.
    api = tmp_path / "api"
    api.mkdir()
    summary = tagtrack.track(video, weights=tiny_weights, engine="torch", detection_threshold=0.0,
                             out=api / "a.mp4", json=api / "a.jsonl", formats=["coco"])
    assert isinstance(summary, tagtrack.RunSummary) and summary.frames == FRAMES and not summary.interrupted
    assert validated_lines(api / "a.jsonl") == cli_lines
    assert json.loads((api / "a.coco.json").read_text()) == json.loads((cli / "a.coco.json").read_text())
    assert video_frame_count(api / "a.mp4") == video_frame_count(cli / "a.mp4") == FRAMES
    assert pipeline_threads() == []

    # Iterated: one TrackedFrame per frame whose to_dict() is the CLI's line.
    frames = list(tagtrack.track(video, weights=tiny_weights, engine="torch", detection_threshold=0.0))
    assert [frame.to_dict() for frame in frames] == cli_lines
    assert [frame.index for frame in frames] == list(range(FRAMES))
    assert all(frame.image.shape == (48, 64, 3) and frame.image.dtype == np.uint8 for frame in frames)
    people = [person for frame in frames for person in frame.people]
    # Confirmed people carry their track id; the ones the tracker has not confirmed yet carry None (schema 2).
    assert any(person.track_id is not None for person in people)
    assert all(person.track_id is None or isinstance(person.track_id, int) for person in people)
    assert list(people[0].keypoints) == list(COCO17.keypoint_names)
    assert people[0].keypoints_array().shape == (17, 3)
    assert tagtrack.TrackedFrame.from_record(cli_lines[3]).to_dict() == cli_lines[3]
    assert pipeline_threads() == []


def test_breaking_out_of_the_loop_stops_the_threads_and_keeps_the_file(tmp_path, tiny_weights):
    long_video = write_noise_video(tmp_path / "long.avi", 300, fps=30.0)
    out = tmp_path / "poses.jsonl"
    seen = 0
    for frame in tagtrack.track(long_video, weights=tiny_weights, engine="torch", json=out, stream=True):
        seen += 1
        if frame.index == 4:
            break
    assert pipeline_threads() == []  # closed by leaving the loop, no garbage collection needed
    lines = validated_lines(out)  # complete lines only
    assert seen == 5 and 5 <= len(lines) < 300
    assert [line["frame_index"] for line in lines] == list(range(len(lines)))

    with tagtrack.PoseEstimator(tiny_weights, engine="torch") as estimator:
        with estimator.track(long_video) as frames:
            assert next(frames).index == 0
        assert pipeline_threads() == []
        assert frames.summary is not None and frames.summary.interrupted
        # The estimator outlives its runs: a second video with the same loaded model.
        assert len(list(estimator.track(long_video, max_frames=3))) == 3
    assert estimator.engine is None


def test_estimator_on_an_image_matches_predict(tmp_path, tiny_weights, capsys):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), image)
    assert main.main(["predict", str(photo), "--weights", str(tiny_weights), "--json", str(tmp_path / "p.json"),
                      "--detection-threshold", "0", "--flip"]) == 0
    predicted = json.loads((tmp_path / "p.json").read_text().splitlines()[1])["people"]  # after the header

    estimator = tagtrack.PoseEstimator(tiny_weights, engine="torch", detection_threshold=0.0, flip=True)
    people = estimator(image)
    assert people == estimator(photo)  # a file name works as well as an array
    assert len(people) == len(predicted) > 0
    person_schema = json.loads(JSONL_SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator({"$defs": person_schema["$defs"], "$ref": "#/$defs/person"})
    for person, record in zip(people, predicted):
        validator.validate(person.to_dict())
        assert person.track_id is None
        assert person.score == pytest.approx(record["score"], abs=1e-4)
        assert person.box == pytest.approx(record["box"], abs=0.01)
        for name, keypoint in person.keypoints.items():
            assert (keypoint.x, keypoint.y) == pytest.approx((record["keypoints"][name]["x"],
                                                              record["keypoints"][name]["y"]), abs=0.01)
    assert [p.score for p in people] == sorted((p.score for p in people), reverse=True)


def test_an_estimators_flip_and_scales_apply_to_every_frame_it_tracks(tmp_path, tiny_weights, video, monkeypatch):
    # The auto engine (ONNX Runtime here): one engine per scale's input size, for images and for video alike.
    settings = ["--weights", str(tiny_weights), "--detection-threshold", "0.0", "--flip", "--scales", "1", "1.5"]
    assert main.main(["run", str(video), *settings, "--json", str(tmp_path / "cli.jsonl"), "--quiet"]) == 0
    from tagtrack.realtime import engines

    opened = []
    real_create = engines.create_engine
    monkeypatch.setattr(engines, "create_engine", lambda *args, **kwargs: opened.append(args[4]) or
                        real_create(*args, **kwargs))
    with tagtrack.PoseEstimator(tiny_weights, detection_threshold=0.0, flip=True, scales=(1.0, 1.5)) as estimator:
        frames = list(estimator.track(video))
        assert len(list(estimator.track(video))) == len(frames)
        first = estimator(frames[0].image)
    # Loaded once, by the estimator: its own engine and the 1.5 scale's (128x128), none again per track().
    assert opened == [None, (128, 128)]
    cli_lines = validated_lines(tmp_path / "cli.jsonl")
    assert [frame.to_dict() for frame in frames] == cli_lines
    assert all(len(person["tag"]) == 4 for line in cli_lines for person in line["people"])  # 1 x mirror x 2 scales
    assert [person.keypoints for person in first] == [person.keypoints for person in frames[0].people]


def test_errors_are_the_cli_messages(tmp_path, tiny_weights, video):
    with pytest.raises(tagtrack.UserFacingError, match="no such file"):
        tagtrack.track(tmp_path / "missing.mp4", weights=tiny_weights, engine="torch")
    with pytest.raises(tagtrack.UserFacingError, match="checkpoint not found"):
        tagtrack.PoseEstimator(tmp_path / "none.safetensors")
    with pytest.raises(tagtrack.UserFacingError, match=r"give an \.mp4"):
        tagtrack.track(video, weights=tiny_weights, engine="torch", out=tmp_path / "a.avi")
    with pytest.raises(tagtrack.UserFacingError, match="scales must be positive"):
        tagtrack.PoseEstimator(tiny_weights, engine="ort", scales=(1.0, 0.0))
    estimator = tagtrack.PoseEstimator(tiny_weights, engine="torch")
    (tmp_path / "notes.jpg").write_text("hello")
    with pytest.raises(tagtrack.UserFacingError, match="not an image"):
        estimator(tmp_path / "notes.jpg")
    with pytest.raises(tagtrack.UserFacingError, match="BGR image"):
        estimator(np.zeros((10, 10), np.uint8))
    estimator.close()
    with pytest.raises(tagtrack.UserFacingError, match="closed"):
        estimator(np.zeros((10, 10, 3), np.uint8))
    assert pipeline_threads() == []


def test_public_names_have_help_and_import_lazily():
    for name in tagtrack.__all__:
        assert getattr(tagtrack, name).__doc__, f"tagtrack.{name} has no docstring"
    text = pydoc.render_doc(tagtrack.PoseEstimator, renderer=pydoc.plaintext)
    assert "weights" in text and "track(self, source" in text and "__call__" in text
    assert "stream" in pydoc.render_doc(tagtrack.track, renderer=pydoc.plaintext)
    # `import tagtrack` alone loads neither torch nor OpenCV (the CLI's --help stays fast).
    probe = "import sys, tagtrack; print(sorted(m for m in ('torch', 'cv2') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
