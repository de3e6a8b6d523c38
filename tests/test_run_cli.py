"""`tagtrack run` end to end: a generated video and a tiny random-weight checkpoint."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from tagtrack import main
from tagtrack.realtime.sinks import JSONL_SCHEMA_PATH
from tests.test_sources import write_video

REPO_ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", TAGTRACK_CACHE=str(kwargs.pop("cache", "/tmp/tagtrack-test-cache")))
    return subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), *args], capture_output=True, text=True,
                          env=env, cwd=kwargs.pop("cwd", REPO_ROOT), timeout=kwargs.pop("timeout", 120), **kwargs)


def video_frame_count(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} is not a playable video"
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def validated_lines(path: Path) -> list[dict]:
    """The frame records of a JSON Lines file, every line checked against the schema; the first line is the
    header with the run's settings."""
    validator = jsonschema.Draft202012Validator(json.loads(JSONL_SCHEMA_PATH.read_text()))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        validator.validate(record)
    header, *frames = records
    assert set(header) == {"schema_version", "settings"} and all("frame_index" in frame for frame in frames)
    return frames


def test_run_writes_every_frame_to_video_json_and_exports(tmp_path, cli_weights):
    video = write_video(tmp_path / "clip.avi", 15, size_hw=(48, 64), fps=15.0)
    out, poses = tmp_path / "annotated.mp4", tmp_path / "poses.jsonl"
    result = run_cli("run", str(video), "--weights", str(cli_weights), "--engine", "torch", "--device", "cpu",
                     "--out", str(out), "--json", str(poses), "--boxes",
                     "--format", "coco", "--format", "posetrack", "--format", "openpose",
                     "--detection-threshold", "0.0", cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    records = validated_lines(poses)
    assert len(records) == 15 == video_frame_count(out)
    assert [r["frame_index"] for r in records] == list(range(15))
    assert records[0]["image"] == {"width": 64, "height": 48}
    assert "frames 15" in result.stdout and "FPS" in result.stdout
    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(15.0)
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (64, 48)
    capture.release()
    coco = json.loads((tmp_path / "poses.coco.json").read_text())
    people = sum(len(r["people"]) for r in records)
    assert len(coco) == people
    posetrack = json.loads((tmp_path / "poses.posetrack.json").read_text())
    assert len(posetrack["images"]) == 15 and len(posetrack["annotations"]) == people
    assert len(list((tmp_path / "poses_openpose").glob("poses_*_keypoints.json"))) == 15


def test_max_frames_and_no_track(tmp_path, cli_weights):
    video = write_video(tmp_path / "clip.avi", 10)
    poses = tmp_path / "poses.jsonl"
    result = run_cli("run", str(video), "--weights", str(cli_weights), "--engine", "torch", "--device", "cpu",
                     "--json", str(poses), "--no-track", "--max-frames", "4", "--detection-threshold", "0.0")
    assert result.returncode == 0, result.stderr
    records = validated_lines(poses)
    assert len(records) == 4
    assert all(p["track_id"] is None for r in records for p in r["people"])


def temporaries(path: Path) -> list[Path]:
    """The temporaries a run writes `path` under until it ends (realtime/output_paths.py: Temporary)."""
    return sorted(path.parent.glob(f"{path.stem}.partial-*{path.suffix}"))


def wait_for_lines(process: subprocess.Popen, path: Path, lines: int, timeout: float = 300) -> None:
    """Return once the running `tagtrack run` has written `lines` frame lines (after its header) to `path`'s
    temporary (the file is renamed to `path` when the run ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for temporary in temporaries(path):
            try:
                if len(temporary.read_bytes().splitlines()) >= 1 + lines:  # header + frames
                    return
            except FileNotFoundError:  # renamed into place meanwhile
                pass
        time.sleep(0.02)
    assert process.poll() is None, f"the run ended before {path} had {lines} frame lines"
    raise AssertionError(f"{path} did not reach {lines} frame lines in {timeout} s")


def signal_after_lines(process: subprocess.Popen, lines_file: Path, lines: int, signum: int,
                       timeout: float = 120) -> tuple[str, str]:
    """Send `signum` to a running `tagtrack run` once `lines_file` has `lines` frame lines; its stdout and stderr."""
    try:
        wait_for_lines(process, lines_file, lines, timeout)
        process.send_signal(signum)
        return process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_leaves_valid_json_and_playable_video(tmp_path, cli_weights, signum):
    video = write_video(tmp_path / "long.avi", 3000, size_hw=(48, 64), fps=30.0)
    out, poses = tmp_path / "annotated.mp4", tmp_path / "poses.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1", TAGTRACK_CACHE=str(tmp_path / "cache"))
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "main.py"), "run", str(video), "--weights", str(cli_weights),
         "--engine", "torch", "--device", "cpu", "--input-size", "128", "128", "--out", str(out), "--json", str(poses)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    stdout, stderr = signal_after_lines(process, poses, 20, signum)
    assert process.returncode == 128 + signum, stderr  # 130 for SIGINT, 143 for SIGTERM, as a shell reports
    assert "Traceback" not in stderr
    records = validated_lines(poses)
    assert 20 <= len(records) < 3000
    assert [r["frame_index"] for r in records] == list(range(len(records)))
    assert video_frame_count(out) == len(records)
    assert "interrupted" in stdout


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


BAD_INPUTS = {
    "missing file": (lambda d, w: ["run", str(d / "missing.mp4"), "--weights", w], "no such file"),
    "not a video": (lambda d, w: ["run", _text(d / "notes.mp4"), "--weights", w], "not a video"),
    "zero-frame video": (lambda d, w: ["run", str(write_video(d / "empty.avi", 0)), "--weights", w],
                         "no frames|not a video"),
    "empty folder": (lambda d, w: ["run", str(_folder(d)), "--weights", w], "no images"),
    "negative camera": (lambda d, w: ["run", "-1", "--weights", w], "0 or more"),
    "camera without a camera": (lambda d, w: ["run", "99", "--weights", w], "no camera at index 99"),
    "bad URL scheme": (lambda d, w: ["run", "ftp://host/x", "--weights", w], "unsupported URL scheme"),
    "URL without host": (lambda d, w: ["run", "rtsp://", "--weights", w], "no host"),
    "unreachable stream": (lambda d, w: ["run", "http://127.0.0.1:9/s.mjpg", "--weights", w], "cannot open stream"),
    "output in a folder under a file": (lambda d, w: ["run", str(write_video(d / "v.avi", 2)), "--weights", w,
                                                     "--out", str(d / "v.avi" / "a.mp4")], "v.avi is a file"),
    "json in a folder under a file": (lambda d, w: ["run", str(write_video(d / "v.avi", 2)), "--weights", w,
                                                   "--json", str(d / "v.avi" / "sub" / "p.jsonl")], "v.avi is a file"),
    "corrupt weights": (lambda d, w: ["run", str(write_video(d / "v.avi", 2)), "--weights", _corrupt(d)], ""),
    "missing weights": (lambda d, w: ["run", str(write_video(d / "v.avi", 2)), "--weights", str(d / "no.safetensors")],
                        ""),
    "bad input size": (lambda d, w: ["run", str(write_video(d / "v.avi", 2)), "--weights", w,
                                    "--input-size", "100", "100"], "multiple"),
}


def _text(path: Path) -> str:
    path.write_text("not a video at all")
    return str(path)


def _folder(root: Path) -> Path:
    (root / "empty").mkdir()
    return root / "empty"


def _corrupt(root: Path) -> str:
    path = root / "corrupt.safetensors"
    path.write_bytes(b"\x00garbage" * 64)
    return str(path)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_line_and_exit_2(tmp_path, cli_weights, capfd, case):
    make_args, message = BAD_INPUTS[case]
    code = main.main([*make_args(tmp_path, str(cli_weights)), "--engine", "torch", "--device", "cpu"])
    captured = capfd.readouterr()
    assert code == main.EXIT_USER_ERROR, captured.err
    # In this process FFmpeg may already have been initialised by earlier tests with its own log
    # level, so it can add its own line; that stderr is exactly one line in a fresh CLI process is
    # checked by test_bad_input_in_a_fresh_process_prints_only_one_line.
    lines = [line for line in _error_lines(captured.err) if not line.startswith("[")]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    if message:
        assert re.search(message, lines[0]), lines[0]


def test_output_in_read_only_folder(tmp_path, cli_weights, capfd, monkeypatch):
    video = write_video(tmp_path / "v.avi", 2)
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if IS_ROOT:
        # Root writes anywhere; make access() answer as it does for a user on a read-only folder.
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == folder else real_access(path, mode))
    try:
        code = main.main(["run", str(video), "--weights", str(cli_weights), "--out", str(folder / "a.mp4")])
    finally:
        folder.chmod(0o755)
    lines = _error_lines(capfd.readouterr().err)
    assert code == 2 and len(lines) == 1 and "not writable" in lines[0]


def test_bad_input_in_a_fresh_process_prints_only_one_line(tmp_path, cli_weights):
    # OpenCV and FFmpeg print their own warnings on stderr unless told not to.
    for args in (["run", "99"], ["run", _text(tmp_path / "fake.mp4")], ["run", "http://127.0.0.1:9/s.mjpg"],
                 ["run", str(tmp_path / "missing.avi")]):
        result = run_cli(*args, "--weights", str(cli_weights))
        assert result.returncode == 2
        assert len(_error_lines(result.stderr)) == 1, result.stderr
        assert result.stderr.startswith("error: ")


def test_image_folder_run(tmp_path, cli_weights):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.full((40, 50, 3), 30 * i, np.uint8))
    poses = tmp_path / "poses.jsonl"
    result = run_cli("run", str(folder), "--weights", str(cli_weights), "--engine", "torch", "--device", "cpu",
                     "--json", str(poses))
    assert result.returncode == 0, result.stderr
    records = validated_lines(poses)
    assert [Path(r["source_id"]).name for r in records] == [f"{i:04d}.png" for i in range(5)]


def test_run_with_flip_and_scales_records_them_and_concatenates_tags(tmp_path, cli_weights):
    video = write_video(tmp_path / "clip.avi", 3)
    poses = tmp_path / "poses.jsonl"
    code = main.main(["run", str(video), "--weights", str(cli_weights), "--device", "cpu", "--json", str(poses),
                      "--flip", "--scales", "1", "1.5", "--detection-threshold", "0", "--quiet"])
    assert code == 0
    header = json.loads(poses.read_text().splitlines()[0])["settings"]
    assert header["flip"] is True and header["scales"] == [1.0, 1.5] and header["input_hw"] == [64, 64]
    records = validated_lines(poses)
    assert len(records) == 3 and records[0]["people"]
    # Tags of 1 from the plain and the mirrored input at two scales: 4 numbers a person.
    assert all(len(p["tag"]) == 4 for r in records for p in r["people"])


def test_scales_run_on_onnx_runtime_with_one_engine_per_size(tmp_path, cli_weights, monkeypatch):
    from tagtrack.realtime import engines

    opened = []
    real_create = engines.create_engine
    monkeypatch.setattr(engines, "create_engine", lambda *args, **kwargs: opened.append(args[4]) or
                        real_create(*args, **kwargs))
    closed = []
    monkeypatch.setattr(engines.OnnxRuntimeEngine, "close", lambda self: closed.append(tuple(self.input_hw)))
    poses = tmp_path / "poses.jsonl"
    code = main.main(["run", str(write_video(tmp_path / "v.avi", 2)), "--weights", str(cli_weights), "--engine", "ort",
                      "--scales", "1", "1.5", "--detection-threshold", "0", "--json", str(poses), "--quiet"])
    assert code == 0
    records = validated_lines(poses)
    assert records[0]["people"] and all(len(p["tag"]) == 2 for r in records for p in r["people"])
    # The run's engine at 64x64 and one for 1.5 x 64 rounded to a multiple of 64; both closed at the end.
    assert opened == [None, (128, 128)] and sorted(closed) == [(64, 64), (128, 128)]


def test_a_scale_too_large_to_load_leaves_existing_outputs_untouched(tmp_path, cli_weights, capfd):
    poses = tmp_path / "poses.jsonl"
    poses.write_text("a previous run's lines\n")
    code = main.main(["run", str(write_video(tmp_path / "v.avi", 2)), "--weights", str(cli_weights), "--json",
                      str(poses), "--scales", "1", "200"])
    lines = _error_lines(capfd.readouterr().err)
    assert code == main.EXIT_USER_ERROR and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert poses.read_text() == "a previous run's lines\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["poses.jsonl", "v.avi"]  # no partial file left


def test_scales_must_be_positive(tmp_path, cli_weights, capfd):
    # `run` and `predict` refuse them alike, naming the values (model/predict.py: check_scales).
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    for command, source in (("run", write_video(tmp_path / "v.avi", 2)), ("predict", image)):
        code = main.main([command, str(source), "--weights", str(cli_weights), "--scales", "1", "0"])
        lines = _error_lines(capfd.readouterr().err)
        assert code == main.EXIT_USER_ERROR and lines == ["error: --scales must be positive, got [1.0, 0.0]"], lines


def test_failed_start_leaves_existing_outputs_untouched(tmp_path, capfd):
    video = write_video(tmp_path / "v.avi", 2)
    poses = tmp_path / "poses.jsonl"
    poses.write_text("a previous run's lines\n")
    code = main.main(["run", str(video), "--weights", _corrupt(tmp_path), "--json", str(poses)])
    assert code == 2 and "error:" in capfd.readouterr().err
    assert poses.read_text() == "a previous run's lines\n"


# ---------------------------------------------------------------- what people expect of the CLI (issue 10)


@pytest.mark.parametrize("args", [
    ["run", "VIDEO", "--detection-threshold", "5"],
    ["run", "VIDEO", "--min-person-score", "-0.1"],
    ["run", "VIDEO", "--tag-threshold", "0"],
    ["predict", "IMAGE", "--detection-threshold", "1.5"],
    ["predict", "IMAGE", "--min-person-score", "2"],
    ["bench", "run", "--detection-threshold", "-1"],
])
def test_out_of_range_values_are_refused(tmp_path, cli_weights, capfd, args):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.full((40, 50, 3), 90, np.uint8))
    video = write_video(tmp_path / "v.avi", 2)
    args = [{"VIDEO": str(video), "IMAGE": str(image)}.get(arg, arg) for arg in args]
    code = main.main([*args, "--weights", str(cli_weights)])
    lines = _error_lines(capfd.readouterr().err)
    assert code == main.EXIT_USER_ERROR and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "between 0 and 1" in lines[0] or "positive" in lines[0]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.main(["--version"])
    assert exit_info.value.code == 0
    assert re.fullmatch(r"tagtrack \d+\.\d+\.\d+.*\n", capsys.readouterr().out)


def test_every_option_is_described_and_shows_its_default():
    parser = main.build_parser()
    for each in main._all_parsers(parser):
        text = each.format_help()
        for action in each._actions:
            if action.option_strings and action.help != argparse.SUPPRESS:
                assert action.help, f"{each.prog} {action.option_strings} has no help"
                shown_default = action.default not in (None, False, [], argparse.SUPPRESS)
                if shown_default:
                    assert "default" in each._get_formatter()._get_help_string(action), (each.prog, action.option_strings)
        assert "usage:" in text
    run_help = [p for p in main._all_parsers(parser) if p.prog == "tagtrack run"][0].format_help()
    assert "(default: auto)" in " ".join(run_help.split())


def test_first_frames_list_every_person_without_an_id_yet(tmp_path, cli_weights):
    video = write_video(tmp_path / "clip.avi", 3)
    poses = tmp_path / "poses.jsonl"
    code = main.main(["run", str(video), "--weights", str(cli_weights), "--engine", "torch", "--device", "cpu",
                      "--json", str(poses), "--detection-threshold", "0", "--quiet"])
    assert code == 0
    records = validated_lines(poses)
    # The tracker confirms a track after 3 matches; before that people are written with track_id null.
    assert records[0]["people"] and all(p["track_id"] is None for p in records[0]["people"])
    assert all(0 <= p["score"] <= 1 for r in records for p in r["people"])


def test_min_person_score_leaves_out_weaker_people(tmp_path, cli_weights):
    video = write_video(tmp_path / "clip.avi", 2)
    counts = {}
    for threshold in ("0", "1"):
        poses = tmp_path / f"poses{threshold}.jsonl"
        assert main.main(["run", str(video), "--weights", str(cli_weights), "--engine", "torch", "--device", "cpu",
                          "--json", str(poses), "--detection-threshold", "0", "--min-person-score", threshold,
                          "--quiet"]) == 0
        counts[threshold] = sum(len(r["people"]) for r in validated_lines(poses))
    assert counts["0"] > 0 and counts["1"] == 0  # random weights score below 1


def test_predict_json_is_one_json_lines_record(tmp_path, cli_weights):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.full((40, 50, 3), 90, np.uint8))
    out = tmp_path / "a.json"
    code = main.main(["predict", str(image), "--weights", str(cli_weights), "--json", str(out),
                      "--detection-threshold", "0"])
    assert code == 0
    (record,) = validated_lines(out)
    assert record["frame_index"] == 0 and record["source_id"] == str(image)
    assert record["image"] == {"width": 50, "height": 40} and record["people"]
    assert all(p["track_id"] is None for p in record["people"])


def test_progress_in_a_log_is_a_few_plain_lines_and_quiet_is_quiet(tmp_path, cli_weights):
    video = write_video(tmp_path / "clip.avi", 40)
    result = run_cli("run", str(video), "--weights", str(cli_weights), "--engine", "torch", "--device", "cpu",
                     "--json", str(tmp_path / "p.jsonl"), cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr  # no redrawn bar in a log file
    assert re.findall(r"frames \d+ of 40", result.stderr) == ["frames 10 of 40", "frames 20 of 40", "frames 30 of 40"]
    quiet = run_cli("--quiet", "run", str(video), "--weights", str(cli_weights), "--engine", "torch", "--device",
                    "cpu", "--json", str(tmp_path / "q.jsonl"), cache=tmp_path / "cache")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == "", quiet.stderr
