"""One settings path: checkpoints carry their schema and settings; --config / --set / flags on top;
the effective settings written with every result."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tagtrack import main
from tagtrack.model.checkpoint import load_checkpoint, read_checkpoint_settings, save_checkpoint
from tagtrack.model.codec import DecodeConfig
from tagtrack.model.config import ModelConfig
from tagtrack.model.errors import UserFacingError
from tagtrack.model.hourglass import HourglassNet
from tagtrack.model.schema import KeypointSchema
from tagtrack.model.settings import FLAGS, parse_assignments, read_settings_file, resolve_settings
from tagtrack.realtime.run import RunOptions
from tagtrack.realtime.sinks import JSONL_SCHEMA_PATH, read_pose_lines
from tagtrack.tracker import TrackerConfig
from tests.conftest import save_tiny_checkpoint
from tests.test_api import write_noise_video

TINY = ModelConfig(num_stacks=1, width=16, tag_dim=1, input_height=64, input_width=64)
FIVE = KeypointSchema(name="five", keypoint_names=("head", "left_hand", "right_hand", "left_foot", "right_foot"),
                      flip_index=(0, 2, 1, 4, 3), skeleton=((0, 1), (0, 2), (0, 3), (0, 4)),
                      oks_sigmas=(0.05,) * 5, grouping_order=(0, 1, 2, 3, 4))
CPU = ["--engine", "torch", "--device", "cpu"]


@pytest.fixture(scope="module")
def stored_weights(tmp_path_factory) -> Path:
    """A checkpoint that stores its decoder and tracker settings."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "stored.safetensors", config=TINY, lively=True,
                                settings={"decode": {"detection_threshold": 0.0, "max_people": 1},
                                          "tracker": {"confirm_hits": 1}})


@pytest.fixture(scope="module")
def five_weights(tmp_path_factory) -> Path:
    config = ModelConfig(num_stacks=1, width=16, tag_dim=1, num_keypoints=5, input_height=64, input_width=64)
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "five.safetensors", config=config, lively=True,
                                schema=FIVE, settings={"decode": {"detection_threshold": 0.0}})


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TAGTRACK_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_round_trips_its_settings(stored_weights):
    loaded = load_checkpoint(stored_weights)
    assert loaded.settings == {"decode": {"detection_threshold": 0.0, "max_people": 1}, "tracker": {"confirm_hits": 1}}
    assert read_checkpoint_settings(stored_weights) == loaded.settings


def test_a_checkpoint_saved_without_settings_loads_with_the_app_defaults(tmp_path):
    path = save_checkpoint(tmp_path / "old.safetensors", HourglassNet(TINY))  # as before checkpoints stored settings
    loaded = load_checkpoint(path)
    assert loaded.schema.name == "coco17" and loaded.settings == {}
    assert resolve_settings(loaded.settings).decode == DecodeConfig()


def test_a_checkpoint_refuses_to_store_an_unknown_section(tmp_path):
    with pytest.raises(UserFacingError, match="unknown section 'decoder'"):
        save_checkpoint(tmp_path / "x.safetensors", HourglassNet(TINY), settings={"decoder": {}})


# ---------------------------------------------------------------- layers


def test_layers_apply_in_order_and_values_take_their_fields_types():
    settings = resolve_settings(
        {"decode": {"top_k": 10, "refine_reach": 2.0}, "tracker": {"use_tags": False}},
        [("--set", parse_assignments(["decode.top_k=20", "decode.refine_reach=none", "tracker.tag_gate=1",
                                      "tracker.use_tags=true", "decode.peak_fit=quadratic"]))])
    assert settings.decode.peak_fit == "quadratic"
    assert settings.decode.top_k == 20 and settings.decode.refine_reach is None
    assert settings.tracker.tag_gate == 1.0 and isinstance(settings.tracker.tag_gate, float)
    assert settings.tracker.use_tags is True
    assert settings.decode.spatial_weight == DecodeConfig().spatial_weight  # untouched fields keep defaults


@pytest.mark.parametrize("assignment, message", [
    ("decode.bogus=1", "unknown setting decode.bogus"),
    ("decoder.top_k=1", "unknown settings section 'decoder'"),
    ("decode.top_k=2.5", "decode.top_k: expected int"),
    ("decode.top_k=0", "top_k must be at least 1"),
    ("tracker.use_tags=maybe", "tracker.use_tags: expected bool"),
    ("tracker.low_score=0.9", "need 0 <= low_score <= high_score"),
    ("decode.top_k", "expected SECTION.NAME=VALUE"),
    ("decode.peak_fit=cubic", "peak_fit must be one of quarter, quadratic"),
])
def test_bad_names_and_values_are_refused_with_the_layer_named(assignment, message):
    with pytest.raises(UserFacingError, match=message) as error:
        resolve_settings(None, [("--set", parse_assignments([assignment]))])
    assert str(error.value).startswith("--set")


def test_a_checkpoint_from_a_newer_version_is_read_leniently():
    settings = resolve_settings({"decode": {"future_knob": 3, "top_k": 7}, "future": {}})
    assert settings.decode.top_k == 7


@pytest.mark.parametrize("suffix, text", [
    (".toml", '[decode]\ntop_k = 12\nrefine_reach = "none"\n[tracker]\ntag_gate = 2.5\n'),
    (".json", '{"decode": {"top_k": 12, "refine_reach": null}, "tracker": {"tag_gate": 2.5}}'),
])
def test_settings_files_in_toml_and_json(tmp_path, suffix, text):
    path = tmp_path / f"settings{suffix}"
    path.write_text(text)
    settings = resolve_settings(None, [("--config", read_settings_file(path))])
    assert (settings.decode.top_k, settings.decode.refine_reach, settings.tracker.tag_gate) == (12, None, 2.5)


def test_a_broken_settings_file_is_one_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[decode\n")
    with pytest.raises(UserFacingError, match="not valid TOML"):
        read_settings_file(path)
    with pytest.raises(UserFacingError, match="file not found"):
        read_settings_file(tmp_path / "missing.json")


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize("extra", [["--set", "decode.bogus=1"], ["--set", "tracker.tag_gate=wide"],
                                   ["--set", "decode.detection_threshold=3"], ["--config", "missing.toml"]])
def test_run_refuses_bad_settings_before_writing_anything(tmp_path, stored_weights, capfd, extra):
    video = write_noise_video(tmp_path / "clip.avi", 3)
    out = tmp_path / "poses.jsonl"
    code = main.main(["run", str(video), "--weights", str(stored_weights), *CPU, "--json", str(out), *extra])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert not out.exists()


def test_run_writes_the_effective_settings_once_with_every_result(tmp_path, stored_weights):
    video = write_noise_video(tmp_path / "clip.avi", 4)
    config = tmp_path / "settings.toml"
    config.write_text("[decode]\ntop_k = 5\nmax_people = 2\n[tracker]\ntag_gate = 3.0\n")
    out = tmp_path / "poses.jsonl"
    code = main.main(["run", str(video), "--weights", str(stored_weights), *CPU, "--json", str(out),
                      "--format", "coco", "--format", "posetrack", "--config", str(config),
                      "--set", "tracker.tag_gate=1.5", "--tag-threshold", "2.0"])
    assert code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    validator = jsonschema.Draft202012Validator(json.loads(JSONL_SCHEMA_PATH.read_text()))
    for record in lines:
        validator.validate(record)
    settings, frames = read_pose_lines(out)
    assert lines[0] == {"schema_version": 3, "settings": settings} and len(frames) == 4
    # checkpoint (detection 0, confirm_hits 1) < --config (top_k 5, max_people 2, tag_gate 3) < flags < --set
    assert settings["decode"]["detection_threshold"] == 0.0 and settings["decode"]["top_k"] == 5
    assert settings["decode"]["max_people"] == 2 and settings["decode"]["tag_threshold"] == 2.0
    assert settings["tracker"]["confirm_hits"] == 1 and settings["tracker"]["tag_gate"] == 1.5
    assert settings["input_hw"] == [64, 64] and settings["weights"] == str(stored_weights)
    assert max(len(frame["people"]) for frame in frames) == 2  # the decoder ran with them
    # Beside the exports: the same settings (COCO results are a bare list), and inside PoseTrack's document.
    assert json.loads((tmp_path / "poses.settings.json").read_text()) == settings
    assert json.loads((tmp_path / "poses.posetrack.json").read_text())["settings"] == settings
    assert isinstance(json.loads((tmp_path / "poses.coco.json").read_text()), list)
    # Reproducible from the files alone: the recorded settings as a --config give the same frames.
    again = tmp_path / "again.jsonl"
    (tmp_path / "recorded.json").write_text(json.dumps({"decode": settings["decode"], "tracker": settings["tracker"]}))
    assert main.main(["run", str(video), "--weights", str(stored_weights), *CPU, "--json", str(again),
                      "--config", str(tmp_path / "recorded.json")]) == 0
    assert read_pose_lines(again)[1] == frames


def test_a_checkpoint_with_stored_decoder_settings_is_decoded_with_them(tmp_path, stored_weights):
    video = write_noise_video(tmp_path / "clip.avi", 3)
    stored, overridden = tmp_path / "stored.jsonl", tmp_path / "overridden.jsonl"
    assert main.main(["run", str(video), "--weights", str(stored_weights), *CPU, "--json", str(stored)]) == 0
    assert main.main(["run", str(video), "--weights", str(stored_weights), *CPU, "--json", str(overridden),
                      "--set", "decode.max_people=30"]) == 0
    stored_frames, overridden_frames = read_pose_lines(stored)[1], read_pose_lines(overridden)[1]
    assert all(len(frame["people"]) == 1 for frame in stored_frames)  # the stored max_people 1
    assert max(len(frame["people"]) for frame in overridden_frames) > 1


def test_predict_and_the_api_use_the_checkpoint_settings(tmp_path, stored_weights):
    import cv2
    import numpy as np

    import tagtrack

    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8))
    out = tmp_path / "p.jsonl"
    assert main.main(["predict", str(image), "--weights", str(stored_weights), "--json", str(out),
                      "--set", "decode.top_k=4"]) == 0
    settings, (frame,) = read_pose_lines(out)
    assert settings["decode"]["max_people"] == 1 and settings["decode"]["top_k"] == 4
    assert len(frame["people"]) == 1
    with tagtrack.PoseEstimator(stored_weights, engine="torch", settings={"decode": {"max_people": 3}}) as estimator:
        assert estimator.settings.decode.max_people == 3 and estimator.settings.tracker.confirm_hits == 1
        assert len(estimator(image)) == 3


# ---------------------------------------------------------------- a model with other keypoints


def test_a_five_keypoint_checkpoint_runs_end_to_end(tmp_path, five_weights):
    video = write_noise_video(tmp_path / "clip.avi", 4)
    out, poses = tmp_path / "five.mp4", tmp_path / "five.jsonl"
    code = main.main(["run", str(video), "--weights", str(five_weights), *CPU, "--out", str(out), "--json", str(poses),
                      "--format", "coco", "--format", "posetrack", "--format", "mot"])
    assert code == 0
    settings, frames = read_pose_lines(poses)
    assert settings["keypoints"] == list(FIVE.keypoint_names) and len(frames) == 4
    people = [person for frame in frames for person in frame["people"]]
    assert people and all(list(person["keypoints"]) == list(FIVE.keypoint_names) for person in people)
    coco = json.loads((tmp_path / "five.coco.json").read_text())
    assert coco and all(len(result["keypoints"]) == 15 for result in coco)
    assert json.loads((tmp_path / "five.posetrack.json").read_text())["categories"][0]["keypoints"] == \
        list(FIVE.keypoint_names)
    assert out.is_file() and out.stat().st_size > 0
    import cv2
    import numpy as np

    import tagtrack

    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8))
    with tagtrack.PoseEstimator(five_weights, engine="torch") as estimator:
        assert estimator.schema == FIVE
        found = estimator(image)
        assert found and all(list(person.keypoints) == list(FIVE.keypoint_names) for person in found)


def test_a_five_keypoint_checkpoint_is_refused_by_a_coco17_format_before_any_output(tmp_path, five_weights, capfd):
    video = write_noise_video(tmp_path / "clip.avi", 3)
    poses = tmp_path / "five.jsonl"
    code = main.main(["run", str(video), "--weights", str(five_weights), *CPU, "--json", str(poses),
                      "--out", str(tmp_path / "five.mp4"), "--format", "openpose"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: --format openpose writes COCO-17 joints; this model's keypoint schema is "
                                 "'five' (5 keypoints)"]
    assert sorted(path.name for path in tmp_path.iterdir() if path.name != "cache") == ["clip.avi"]


def test_tracker_settings_reach_the_tracker(tmp_path, stored_weights):
    from tagtrack.realtime.run import build_pipeline

    video = write_noise_video(tmp_path / "clip.avi", 2)
    pipeline = build_pipeline(RunOptions(source=str(video), weights=stored_weights, engine="torch", device="cpu",
                                         progress=False, settings=[("test", {"tracker": {"tag_gate": 7.0}})]))
    try:
        assert pipeline.tracker.config == TrackerConfig(confirm_hits=1, tag_gate=7.0)
        assert pipeline.settings.decode.max_people == 1
    finally:
        for sink in pipeline.sinks:
            sink.close()
        pipeline.source.close()
