"""Many sources at once (realtime/batch.py, `tagtrack run A B DIR --out-dir OUT`): per-file outputs equal
to single runs, a failing file reported without stopping the others, worker processes, and Ray."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tagtrack import main
from tagtrack.model.errors import UserFacingError
from tagtrack.realtime import batch
from tagtrack.realtime.run import RunOptions
from tests.test_api import write_noise_video
from tests.test_run_cli import REPO_ROOT, signal_after_lines, validated_lines, video_frame_count

pytestmark = pytest.mark.usefixtures("private_cache_and_one_thread")


@pytest.fixture
def inputs(tmp_path):
    """Two loose videos (one named like a video in the folder) and a folder of two videos plus a text file."""
    folder = tmp_path / "videos"
    folder.mkdir()
    videos = [write_noise_video(tmp_path / "a.avi", 5, seed=1), write_noise_video(tmp_path / "clip.avi", 4, seed=2),
              write_noise_video(folder / "clip.avi", 3, seed=3), write_noise_video(folder / "d.avi", 6, seed=4)]
    (folder / "notes.txt").write_text("not a video")
    return videos, folder


def test_sources_expand_and_get_distinct_output_names(tmp_path, inputs, tiny_weights):
    (a, clip, folder_clip, d), folder = inputs
    images = tmp_path / "frames"
    images.mkdir()
    sources = batch.expand_sources([str(a), str(folder), str(images), str(a), "0", "rtsp://cam.local/live"])
    assert sources == [str(a), str(folder_clip), str(d), str(images), "0", "rtsp://cam.local/live"]
    template = RunOptions(source="", weights=tiny_weights)
    jobs = batch.plan_jobs([str(clip), str(folder_clip), "0", "rtsp://cam.local/live"], tmp_path / "out", template)
    assert [job.json.name for job in jobs] == ["clip.jsonl", "clip-2.jsonl", "camera0.jsonl", "cam.local_live.jsonl"]
    assert [job.out.name for job in jobs][:2] == ["clip.mp4", "clip-2.mp4"]
    assert batch.plan_jobs([str(a)], tmp_path / "out", template, video=False)[0].out is None
    (tmp_path / "file").write_text("")
    with pytest.raises(UserFacingError, match="is a file"):
        batch.plan_jobs([str(a)], tmp_path / "file", template)
    with pytest.raises(UserFacingError, match="checkpoint not found"):
        batch.plan_jobs([str(a)], tmp_path / "out", RunOptions(source="", weights=tmp_path / "no.safetensors"))
    with pytest.raises(UserFacingError, match="max-frames"):
        batch.plan_jobs([str(a)], tmp_path / "out", RunOptions(source="", weights=tiny_weights, max_frames=0))


def test_cli_runs_every_file_and_reports_the_failing_one(tmp_path, inputs, tiny_weights, capsys):
    (a, clip, folder_clip, d), folder = inputs
    missing = tmp_path / "missing.mp4"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    out = tmp_path / "results"
    code = main.main(["run", str(a), str(missing), str(folder), str(broken), "--out-dir", str(out), "--weights",
                      str(tiny_weights), "--engine", "torch", "--detection-threshold", "0.0", "--format", "coco"])
    captured = capsys.readouterr()
    assert code == main.EXIT_USER_ERROR  # some inputs failed
    assert f"error: {missing}: no such file" in captured.err
    assert f"error: {broken}: " in captured.err
    table = captured.out[captured.out.index("source "):]
    assert "2 failed" in table and "3 of 5 inputs done" in table

    for video, name, frames in ((a, "a", 5), (folder_clip, "clip", 3), (d, "d", 6)):
        lines = validated_lines(out / f"{name}.jsonl")
        assert len(lines) == frames == video_frame_count(out / f"{name}.mp4")
        assert {line["source_id"] for line in lines} == {str(video)}
        assert len(json.loads((out / f"{name}.coco.json").read_text())) == sum(len(line["people"]) for line in lines)
    assert sorted(path.name for path in out.iterdir()) == sorted(
        f"{name}{suffix}" for name in ("a", "clip", "d") for suffix in (".mp4", ".jsonl", ".coco.json", ".settings.json"))

    # Each file's output is what a single `tagtrack run` of it writes: tracks start afresh per file.
    single = tmp_path / "single.jsonl"
    assert main.main(["run", str(d), "--json", str(single), "--weights", str(tiny_weights), "--engine", "torch",
                      "--detection-threshold", "0.0"]) == 0
    assert validated_lines(single) == validated_lines(out / "d.jsonl")


def test_several_sources_need_an_output_folder(tmp_path, inputs, tiny_weights, capsys):
    (a, clip, _, _), _ = inputs
    assert main.main(["run", str(a), str(clip), "--weights", str(tiny_weights)]) == main.EXIT_USER_ERROR
    assert main.main(["run", str(a), str(clip), "--out-dir", str(tmp_path / "o"), "--json", "x.jsonl",
                      "--weights", str(tiny_weights)]) == main.EXIT_USER_ERROR
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "--out-dir" in errors[0] and "--out and --json name one file" in errors[1]


@pytest.mark.slow
def test_worker_processes_write_what_one_process_writes(tmp_path, inputs, tiny_weights):
    (a, clip, folder_clip, d), _ = inputs
    sources = [str(a), str(clip), str(tmp_path / "missing.avi"), str(d)]
    settings = dict(weights=tiny_weights, engine="torch", detection_threshold=0.0, video=False)
    one = batch.run_many(sources, tmp_path / "one", **settings)
    two = batch.run_many(sources, tmp_path / "two", workers=2, **settings)
    assert [r.ok for r in one] == [r.ok for r in two] == [True, True, False, True]
    assert [r.frames for r in two] == [5, 4, 0, 6]
    assert "no such file" in two[2].error
    for name in ("a", "clip", "d"):
        assert validated_lines(tmp_path / "two" / f"{name}.jsonl") == validated_lines(tmp_path / "one" / f"{name}.jsonl")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="ray is not installed (the `cluster` extra, part of `dev`)")
def test_ray_runs_one_task_per_file(tmp_path, inputs, tiny_weights):
    import ray

    (a, clip, _, d), _ = inputs
    template = RunOptions(source="", weights=tiny_weights, engine="torch", progress=False,
                          settings=[("test", {"decode": {"detection_threshold": 0.0}})])
    jobs = batch.plan_jobs([str(a), str(tmp_path / "missing.avi"), str(d)], tmp_path / "ray", template)
    seen = []
    try:
        results = batch.run_jobs(jobs, ray_address="local", on_result=seen.append)  # starts a local Ray
    finally:
        ray.shutdown()
    assert [r.ok for r in results] == [True, False, True] and sorted(r.source for r in seen) == sorted(j.source for j in jobs)
    assert [r.frames for r in results] == [5, 0, 6]
    for name, frames in (("a", 5), ("d", 6)):
        assert len(validated_lines(tmp_path / "ray" / f"{name}.jsonl")) == frames
    assert Path(results[0].outputs[0]).name == "a.mp4"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_batch_with_valid_outputs(tmp_path, tiny_weights, signum):
    first = write_noise_video(tmp_path / "first.avi", 3000, fps=30.0)
    second = write_noise_video(tmp_path / "second.avi", 5)
    out = tmp_path / "out"
    poses = out / "first.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1", TAGTRACK_CACHE=str(tmp_path / "cache"))
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "main.py"), "run", str(first), str(second), "--out-dir", str(out),
         "--weights", str(tiny_weights), "--engine", "torch", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    stdout, stderr = signal_after_lines(process, poses, 10, signum)
    assert process.returncode == main.EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stderr
    records = validated_lines(poses)
    assert 10 <= len(records) < 3000 and video_frame_count(out / "first.mp4") == len(records)
    assert not (out / "second.jsonl").exists()  # the batch stopped: the next file did not start
    assert "not started" in stdout
