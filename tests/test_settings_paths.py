"""Issue 28: one settings resolver (model/settings.py) behind every command, the API, `train` and
`eval-track --retrack`; engines that state their model; one pipeline builder, the benches' too."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest

from tagtrack import main
from tagtrack.cli.eval_commands import _retrack_config
from tagtrack.model.checkpoint import read_checkpoint_settings
from tagtrack.model.config import ModelConfig
from tagtrack.model.errors import UserFacingError
from tagtrack.model.schema import KeypointSchema
from tagtrack.model.settings import FLAGS, STORED_DEFAULT, resolve_settings, user_layers
from tests.conftest import save_tiny_checkpoint

FIVE = KeypointSchema(name="five", keypoint_names=("head", "left_hand", "right_hand", "left_foot", "right_foot"),
                      flip_index=(0, 2, 1, 4, 3), skeleton=((0, 1), (0, 2), (0, 3), (0, 4)),
                      oks_sigmas=(0.05,) * 5, grouping_order=(0, 1, 2, 3, 4))
FIVE_CONFIG = ModelConfig(num_stacks=1, width=16, tag_dim=1, num_keypoints=5, input_height=64, input_width=64)
OUT_OF_RANGE = "decode.detection_threshold must be between 0 and 1"


@pytest.fixture(scope="module")
def five_weights(tmp_path_factory) -> Path:
    """Five keypoints, stored decoder and tracker settings."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "five.safetensors", config=FIVE_CONFIG,
                                lively=True, schema=FIVE,
                                settings={"decode": {"detection_threshold": 0.0}, "tracker": {"confirm_hits": 2}})


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TAGTRACK_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------- one resolver, one range check


def test_layers_apply_in_order_over_the_stored_settings(tmp_path):
    config = tmp_path / "settings.json"
    config.write_text('{"decode": {"top_k": 5, "detection_threshold": 0.2}, "tracker": {"tag_gate": 3.0}}')
    layers = user_layers(config, {"detection_threshold": 0.3, "tag_threshold": None}, ["tracker.tag_gate=1.5"])
    assert [origin for origin, _ in layers] == [f"--config {config}", "--detection-threshold", "--set"]
    settings = resolve_settings({"decode": {"top_k": 9, "max_people": 2}, "tracker": {"confirm_hits": 1}}, layers)
    assert (settings.decode.top_k, settings.decode.max_people, settings.decode.detection_threshold) == (5, 2, 0.3)
    assert (settings.tracker.confirm_hits, settings.tracker.tag_gate) == (1, 1.5)


@pytest.mark.parametrize("where", ["stored", "--config", "flag", "--set", "API keyword", "API settings"])
def test_one_range_check_whichever_layer_a_value_comes_from(tmp_path, where):
    config = tmp_path / "bad.toml"
    config.write_text("[decode]\ndetection_threshold = 1.5\n")
    with pytest.raises(UserFacingError, match=OUT_OF_RANGE) as error:
        if where == "stored":
            resolve_settings({"decode": {"detection_threshold": 1.5}}, stored_origin="checkpoint x")
        elif where == "--config":
            resolve_settings(None, user_layers(config=config))
        elif where == "flag":
            resolve_settings(None, user_layers(flags={"detection_threshold": 1.5}))
        elif where == "--set":
            resolve_settings(None, user_layers(assignments=["decode.detection_threshold=1.5"]))
        else:  # refused before any model is loaded: the weights named do not exist
            import tagtrack

            keywords = {"detection_threshold": 1.5} if where == "API keyword" else \
                {"settings": {"decode": {"detection_threshold": 1.5}}}
            tagtrack.PoseEstimator(tmp_path / "missing.safetensors", engine="torch", **keywords)
    expected_origin = {"stored": "checkpoint x", "--config": f"--config {config}", "flag": "--detection-threshold",
                       "--set": "--set", "API keyword": "detection_threshold", "API settings": "settings"}[where]
    assert str(error.value).startswith(f"{expected_origin}: ")


def test_flags_help_says_the_model_stored_value_is_the_default():
    parser = main.build_parser()
    options = {flag.option for flag in FLAGS}
    seen = set()
    for each in main._all_parsers(parser):
        for action in each._actions:
            if options & set(action.option_strings):
                seen.add(each.prog.split(" ", 1)[1])
                assert STORED_DEFAULT in action.help and "default 0" not in action.help and action.default is None
    assert seen == {"predict", "run", "view", "eval", "bench run"}


def test_preset_names_come_from_the_training_presets():
    from tagtrack.training.config import PRESETS

    parser = main.build_parser()
    for command in (["train"], ["bench", "train"]):
        args = parser.parse_args([*command, "--preset", "tiny", *(["--out", "x"] if command == ["train"] else [])])
        assert args.preset == "tiny"
        with pytest.raises(SystemExit):
            parser.parse_args([*command, "--preset", "huge"])
    train_parser = next(each for each in main._all_parsers(parser) if each.prog.endswith(" train")
                        and "bench" not in each.prog)
    assert ", ".join(PRESETS) in train_parser.format_help().replace("\n", " ").replace("  ", " ")


# ---------------------------------------------------------------- train


def test_train_checks_both_sections_of_the_training_config_settings():
    from tagtrack.training.config import preset
    from tagtrack.training.train import checkpoint_settings

    config = preset("tiny", settings={"decode": {"top_k": 12}, "tracker": {"tag_gate": "2"}})
    stored = checkpoint_settings(config)
    assert stored["decode"]["top_k"] == 12 and stored["tracker"] == {"tag_gate": 2.0}
    with pytest.raises(UserFacingError, match="training config settings: unknown setting tracker.tag_gat"):
        checkpoint_settings(replace(config, settings={"tracker": {"tag_gat": 1.0}}))
    with pytest.raises(UserFacingError, match="need 0 <= low_score <= high_score"):
        checkpoint_settings(replace(config, settings={"tracker": {"low_score": 0.9}}))
    with pytest.raises(UserFacingError, match=OUT_OF_RANGE):
        checkpoint_settings(replace(config, settings={"decode": {"detection_threshold": 2.0}}))


def test_train_refuses_bad_settings_before_reading_any_data(tmp_path):
    from tagtrack.training.config import preset
    from tagtrack.training.train import train

    config = preset("tiny", train_annotations=str(tmp_path / "missing.json"), train_images=str(tmp_path),
                    settings={"tracker": {"bogus": 1}})
    with pytest.raises(UserFacingError, match="unknown setting tracker.bogus"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- eval-track --retrack


def _pose_file(tmp_path: Path, settings: dict) -> str:
    from tests.test_mot_eval import FRAMES, jsonl_record, pose_at, write

    lines = [jsonl_record(frame - 1, [(None, pose_at(100 + 10 * (frame - 1), 250.0))]) for frame in FRAMES]
    return write(tmp_path / "poses.jsonl", [json.dumps({"schema_version": 3, "settings": settings}), *lines])


def _retrack(*extra: str, poses: str) -> object:
    args = main.build_parser().parse_args(["eval-track", poses, "--gt", "gt.txt", "--retrack", *extra])
    return _retrack_config(args)


def test_retrack_runs_the_tracker_settings_the_run_recorded(tmp_path, five_weights):
    poses = _pose_file(tmp_path, {"decode": {}, "tracker": {"confirm_hits": 4, "tag_gate": 3.0},
                                  "weights": str(five_weights)})
    config = _retrack(poses=poses)
    assert (config.confirm_hits, config.tag_gate, config.use_tags) == (4, 3.0, True)
    settings_file = tmp_path / "tracker.toml"
    settings_file.write_text("[tracker]\nconfirm_hits = 6\nreid_time = 1.0\n")
    config = _retrack("--config", str(settings_file), "--no-tags", "--set", "tracker.confirm_hits=7", poses=poses)
    assert (config.confirm_hits, config.reid_time, config.tag_gate, config.use_tags) == (7, 1.0, 3.0, False)


def test_retrack_of_a_run_without_tracking_starts_from_the_model_it_names(tmp_path, five_weights):
    poses = _pose_file(tmp_path, {"decode": {}, "tracker": None, "weights": str(five_weights)})
    assert read_checkpoint_settings(five_weights)["tracker"] == {"confirm_hits": 2}
    assert _retrack(poses=poses).confirm_hits == 2
    other = save_tiny_checkpoint(tmp_path / "other.safetensors", settings={"tracker": {"confirm_hits": 5}})
    assert _retrack("--weights", str(other), poses=poses).confirm_hits == 5
    moved = _pose_file(tmp_path, {"decode": {}, "tracker": None, "weights": str(tmp_path / "gone.safetensors")})
    assert _retrack(poses=moved).confirm_hits == 3  # the built-in default, with a warning


def test_eval_track_hands_the_resolved_tracker_settings_to_the_evaluation(tmp_path, five_weights, monkeypatch, capsys):
    from tagtrack.tracker import mot_eval

    seen = []

    class Stop(Exception):
        pass

    def evaluate_file(*args, retrack_config=None, **kwargs):
        seen.append(retrack_config)
        raise Stop

    monkeypatch.setattr(mot_eval, "evaluate_file", evaluate_file)
    poses = _pose_file(tmp_path, {"decode": {}, "tracker": None, "weights": str(five_weights)})
    with pytest.raises(Stop):
        main.main(["eval-track", poses, "--gt", "gt.txt", "--retrack", "--set", "tracker.tag_gate=2.5"])
    assert (seen[0].confirm_hits, seen[0].tag_gate) == (2, 2.5)
    assert main.main(["eval-track", poses, "--gt", "gt.txt", "--set", "tracker.tag_gate=2.5"]) == 2
    assert "apply to --retrack only" in capsys.readouterr().err
    assert main.main(["eval-track", poses, "--gt", "gt.txt", "--retrack", "--set", "tracker.bogus=1"]) == 2
    assert capsys.readouterr().err.startswith("error: --set: unknown setting tracker.bogus")


# ---------------------------------------------------------------- engines state their model


@pytest.mark.parametrize("kind", ["torch", "ort"])
def test_an_engine_states_its_checkpoint_from_construction(five_weights, kind):
    from tagtrack.realtime.engines import ENGINE_CLASSES, create_engine

    engine = create_engine(kind, five_weights, "cpu")
    try:
        assert isinstance(engine, ENGINE_CLASSES[kind])
        assert engine.schema == FIVE and engine.weights == five_weights
        assert engine.stored_settings == read_checkpoint_settings(five_weights)
    finally:
        engine.close()


def test_an_engine_made_directly_states_what_it_is_given(tmp_path):
    from tagtrack.model.hourglass import HourglassNet
    from tagtrack.model.schema import COCO17
    from tagtrack.realtime.engines import TorchEngine

    plain = TorchEngine(HourglassNet(ModelConfig(num_stacks=1, width=16, tag_dim=1, input_height=64,
                                                 input_width=64)))
    assert (plain.schema, plain.stored_settings, plain.weights) == (COCO17, {}, None)
    stored = {"decode": {"top_k": 3}}
    five = TorchEngine(HourglassNet(FIVE_CONFIG), schema=FIVE, stored_settings=stored, weights=tmp_path / "w")
    stored["decode"]["top_k"] = 99  # the engine keeps its own copy
    assert (five.schema, five.stored_settings, five.weights) == (FIVE, {"decode": {"top_k": 3}}, tmp_path / "w")


# ---------------------------------------------------------------- one pipeline builder


def test_the_bench_runs_the_pipeline_run_builds_with_the_engine_model(tmp_path, five_weights):
    from tagtrack.bench.pipeline import bench_pipeline
    from tagtrack.realtime.engines import create_engine
    from tagtrack.realtime.run import RunOptions
    from tagtrack.realtime.sinks import read_pose_lines

    out = tmp_path / "bench.jsonl"
    engine = create_engine("torch", five_weights, "cpu")
    options = RunOptions(source=None, json=out, progress=False,
                         settings=user_layers(assignments=["decode.max_people=1"]))
    report = bench_pipeline(options, frames=4, frame_hw=(48, 64), engine=engine)
    settings, frames = read_pose_lines(out)
    assert report.summary.frames == 4 and len(frames) == 4
    assert settings["keypoints"] == list(FIVE.keypoint_names)  # the engine's schema, not COCO-17
    # The engine's stored settings under the options' layers, as `tagtrack run` resolves them.
    assert settings["decode"]["detection_threshold"] == 0.0 and settings["decode"]["max_people"] == 1
    assert settings["tracker"]["confirm_hits"] == 2 and settings["weights"] == str(five_weights)
    assert all(list(person["keypoints"]) == list(FIVE.keypoint_names) for frame in frames for person in frame["people"])


def test_the_builder_wraps_only_the_output_sinks_and_adds_the_extra_ones_last(tmp_path, five_weights):
    from tagtrack.bench.pipeline import GeneratedSource
    from tagtrack.realtime.run import RunOptions, build_pipeline

    wrapped = []

    def wrap(sink):
        wrapped.append(sink)
        return sink

    extra = argparse.Namespace(write=lambda result: None, close=lambda: None)
    options = RunOptions(source=None, weights=five_weights, engine="torch", device="cpu",
                         json=tmp_path / "p.jsonl", formats=["coco"], progress=True)
    pipeline = build_pipeline(options, extra_sinks=[extra], source=GeneratedSource(2, (48, 64)), wrap_sink=wrap)
    try:
        assert [type(sink).__name__ for sink in wrapped] == ["JsonLinesSink", "CocoResultsSink", "SettingsFileSink"]
        assert pipeline.sinks[:3] == wrapped and pipeline.sinks[-1] is extra and len(pipeline.sinks) == 5  # + progress
        assert pipeline.tracker.config.confirm_hits == 2 and pipeline.schema == FIVE
    finally:
        for sink in pipeline.sinks:
            sink.close()
        pipeline.source.close()


def test_bench_teacher_decodes_with_the_model_schema_and_stored_settings(tmp_path, five_weights, monkeypatch):
    from tagtrack.bench import teacher as bench_teacher
    from tagtrack.training import teacher as training_teacher
    from tests.test_api import write_noise_video

    seen = {}

    class Stop(Exception):
        pass

    def compare_with_teacher(engine, teacher, source, *args, schema=None, decode=None, **kwargs):
        seen.update(schema=schema, decode=decode)
        raise Stop

    monkeypatch.setattr(training_teacher, "MoveNetTeacher", lambda path, threads=None: object())
    monkeypatch.setattr(bench_teacher, "compare_with_teacher", compare_with_teacher)
    video = write_noise_video(tmp_path / "clip.avi", 2)
    with pytest.raises(Stop):
        main.main(["bench", "teacher", str(video), "--teacher", "teacher.onnx", "--weights", str(five_weights),
                   "--engine", "torch", "--device", "cpu"])
    assert seen["schema"] == FIVE and seen["decode"].detection_threshold == 0.0  # stored, not the built-in 0.1
