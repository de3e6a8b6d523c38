"""Fault injection: outputs never destroy data and every fault leaves valid, playable files.

Same-path outputs, a full disk (a tiny tmpfs where this runs as root, else a file-size limit on the
child process), two interrupts close together, SIGKILL, a corrupt ONNX cache, an unreadable image
in a folder and a truncated video. Each reproduces a case of issue 10 that lost data before.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tagtrack import main
from tagtrack.realtime.sinks import h264_encoder
from tests.test_run_cli import (
    REPO_ROOT,
    temporaries,
    validated_lines,
    video_frame_count,
    wait_for_lines,
)
from tests.test_sources import write_video

TORCH_CPU = ("--engine", "torch", "--device", "cpu")
HAVE_H264 = h264_encoder() is not None




def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def noise_video(path: Path, frames: int, size_hw=(240, 320), fps: float = 30.0) -> Path:
    """Random frames: they compress badly, so a few frames fill a small disk."""
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size_hw[::-1])
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (*size_hw, 3), dtype=np.uint8))
    writer.release()
    return path


def cli(*args: str, cache: Path, preexec_fn=None, timeout: float = 300, cwd: Path = REPO_ROOT
        ) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", TAGTRACK_CACHE=str(cache))
    return subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout, preexec_fn=preexec_fn)


def start_cli(*args: str, cache: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", TAGTRACK_CACHE=str(cache))
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "main.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)


def signal_when_written(process: subprocess.Popen, path: Path, lines: int, signums: list[int],
                        gap: float = 0.0) -> str:
    """Once `path` has `lines` lines, send `signums` `gap` seconds apart; the run's stderr."""
    try:
        wait_for_lines(process, path, lines)
        for count, signum in enumerate(signums):
            if count:
                time.sleep(gap)
            process.send_signal(signum)
        _, stderr = process.communicate(timeout=300)  # a loaded machine is slow to close
    finally:
        if process.poll() is None:
            process.kill()
    return stderr



# ---------------------------------------------------------------- 1. outputs never replace inputs


def _same_path_cases(d: Path) -> dict[str, tuple[list[str], list[Path]]]:
    video = write_video(d / "x.mp4", 6, fourcc="mp4v")
    photo = d / "a.jpg"
    cv2.imwrite(str(photo), np.full((40, 50, 3), 90, np.uint8))
    folder = d / "folder"
    folder.mkdir()
    cv2.imwrite(str(folder / "x_poses.png"), np.full((40, 50, 3), 60, np.uint8))
    (d / "link.mp4").symlink_to(video)
    (d / "sub").mkdir()
    return {
        "run --out is the input": (["run", str(video), "--out", str(video)], [video]),
        "run --out through a symlink": (["run", str(video), "--out", str(d / "link.mp4")], [video]),
        "run --out by a relative path": (["run", str(video), "--out", str(d / "sub" / ".." / "x.mp4")], [video]),
        "predict --json is the photo": (["predict", str(photo), "--json", str(photo)], [photo]),
        "predict --json is the weights": (["predict", str(photo), "--json", "WEIGHTS"], [photo]),
        "run --json onto an image of the input folder": (["run", str(folder), "--json", str(folder / "x_poses.png")],
                                                         [folder / "x_poses.png"]),
        "--out and --json the same file": (["run", str(video), "--out", str(d / "o.mp4"), "--json", str(d / "o.mp4")],
                                           [video]),
    }


CASES = ["run --out is the input", "run --out through a symlink", "run --out by a relative path",
         "predict --json is the photo", "predict --json is the weights",
         "run --json onto an image of the input folder", "--out and --json the same file"]


@pytest.mark.parametrize("case", CASES)
def test_an_output_that_would_destroy_an_input_is_refused_before_anything_opens(tmp_path, cli_weights, capfd, case):
    cases = _same_path_cases(tmp_path)
    args, kept = cases[case]
    args = [str(cli_weights) if arg == "WEIGHTS" else arg for arg in args]
    kept = [*kept, cli_weights]
    before = {path: digest(path) for path in kept}
    extra = ["--device", "cpu"] if args[0] == "predict" else list(TORCH_CPU)
    code = main.main([*args, "--weights", str(cli_weights), *extra])
    err = capfd.readouterr().err
    assert code == main.EXIT_USER_ERROR, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert {path: digest(path) for path in kept} == before
    assert not (tmp_path / "o.mp4").exists()


# ---------------------------------------------------------------- 2. disk full


@pytest.fixture
def small_disk(tmp_path):
    """(folder, preexec_fn): a 192 KiB tmpfs when we may mount one (root), else a file-size limit
    of the same size on the child process (writes past it fail with EFBIG instead of ENOSPC)."""
    folder = tmp_path / "small"
    folder.mkdir()
    limit = 192 * 1024
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={limit}", "tmpfs", str(folder)], capture_output=True).returncode == 0
    if mounted:
        yield folder, None
        subprocess.run(["umount", str(folder)], check=False)
        return

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    yield folder, limit_file_size


def _failed_on_its_file(result: subprocess.CompletedProcess, path: Path) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and str(path) in errors[0], result.stderr
    assert f"wrote {path}" not in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("codec", ["mp4v", pytest.param("h264", marks=pytest.mark.skipif(not HAVE_H264, reason="no PyAV"))])
def test_disk_full_on_the_video_fails_and_leaves_no_broken_file_under_its_name(tmp_path, cli_weights, small_disk,
                                                                               codec):
    folder, preexec = small_disk
    video = noise_video(tmp_path / "noise.avi", 60)
    out = folder / "a.mp4"
    result = cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--out", str(out), "--codec", codec,
                 cache=tmp_path / "cache", preexec_fn=preexec)
    _failed_on_its_file(result, out)
    assert not out.exists()  # never an unplayable file under the final name


@pytest.mark.slow
def test_disk_full_on_json_lines_keeps_whole_lines_and_names_the_file(tmp_path, cli_weights, small_disk):
    folder, preexec = small_disk
    video = write_video(tmp_path / "clip.avi", 300, size_hw=(48, 64))
    poses = folder / "poses.jsonl"
    result = cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--json", str(poses),
                 "--detection-threshold", "0", cache=tmp_path / "cache", preexec_fn=preexec)
    _failed_on_its_file(result, poses)
    assert not poses.exists()  # a failed run replaces nothing
    (kept,) = temporaries(poses)
    records = validated_lines(kept)  # every line whole and valid
    assert 0 < len(records) < 300
    assert kept.read_bytes().endswith(b"\n")
    assert f"its first {len(records)} frames are kept in {kept}" in result.stderr


@pytest.mark.slow
def test_disk_full_on_the_exports_leaves_no_cut_export(tmp_path, cli_weights, small_disk):
    folder, preexec = small_disk
    video = write_video(tmp_path / "clip.avi", 300, size_hw=(48, 64))
    # Without --json and --out the exports go to the working folder: the small disk.
    result = cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--format", "coco",
                 "--format", "posetrack", "--detection-threshold", "0", cache=tmp_path / "cache",
                 preexec_fn=preexec, cwd=folder)
    coco, posetrack = folder / "clip.coco.json", folder / "clip.posetrack.json"
    # Paths are as the run names them: relative to the working folder.
    _failed_on_its_file(result, Path(coco.name if coco.name in result.stderr else posetrack.name))
    assert not coco.exists() and not posetrack.exists()
    # The cut exports are removed: the disk is free again, but for the run's settings (written, whole, at
    # the start, so that whatever a run leaves says how it was made), kept aside as the run failed.
    (settings,) = folder.iterdir()
    assert settings.name.startswith("clip.settings.partial-") and str(settings.name) in result.stderr
    assert json.loads(settings.read_text())["decode"]["detection_threshold"] == 0.0


# ---------------------------------------------------------------- 3. two interrupts close together


@pytest.mark.slow
@pytest.mark.parametrize(("gap", "codec"), [(0.05, "mp4v"), (0.2, "h264" if HAVE_H264 else "mp4v")])
def test_a_second_interrupt_still_closes_every_output(tmp_path, cli_weights, gap, codec):
    video = write_video(tmp_path / "long.avi", 3000, size_hw=(48, 64), fps=30.0)
    out, poses = tmp_path / "annotated.mp4", tmp_path / "poses.jsonl"
    process = start_cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--input-size", "128", "128",
                        "--out", str(out), "--json", str(poses), "--format", "coco", "--codec", codec,
                        cache=tmp_path / "cache")
    stderr = signal_when_written(process, poses, 20, [signal.SIGINT, signal.SIGINT], gap)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    # The second one is announced in one line while outputs are closing; once they are closed the
    # process ignores it (it may arrive that late on a loaded machine).
    assert stderr.count("SIGINT again") <= 1
    records = validated_lines(poses)
    assert video_frame_count(out) == len(records) >= 20
    coco = json.loads((tmp_path / "poses.coco.json").read_text())
    assert len(coco) == sum(len(r["people"]) for r in records)


@pytest.mark.slow
def test_sigterm_exits_143_and_closes_outputs(tmp_path, cli_weights):
    video = write_video(tmp_path / "long.avi", 3000, size_hw=(48, 64), fps=30.0)
    poses = tmp_path / "poses.jsonl"
    process = start_cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--input-size", "128", "128",
                        "--json", str(poses), "--format", "posetrack", cache=tmp_path / "cache")
    stderr = signal_when_written(process, poses, 10, [signal.SIGTERM])
    assert process.returncode == 143, stderr
    posetrack = json.loads((tmp_path / "poses.posetrack.json").read_text())
    assert len(posetrack["images"]) == len(validated_lines(poses))


# ---------------------------------------------------------------- 4. SIGKILL


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_H264, reason="fragmented MP4 needs PyAV")
def test_sigkill_leaves_no_unplayable_file_and_a_playable_partial(tmp_path, cli_weights):
    video = write_video(tmp_path / "long.avi", 3000, size_hw=(48, 64), fps=30.0)
    out, poses = tmp_path / "annotated.mp4", tmp_path / "poses.jsonl"
    process = start_cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--input-size", "128", "128",
                        "--out", str(out), "--json", str(poses), "--codec", "h264", cache=tmp_path / "cache")
    signal_when_written(process, poses, 120, [signal.SIGKILL])  # four keyframe intervals at 30 FPS
    assert not out.exists() and not poses.exists()
    (partial,) = temporaries(out)
    assert video_frame_count(partial) >= 30  # the finished fragments play
    validated_lines(temporaries(poses)[0])  # and the JSON Lines hold whole lines only


# ---------------------------------------------------------------- 5. corrupt ONNX cache


def test_a_corrupt_cached_onnx_export_is_rebuilt(tmp_path, cli_weights):
    from tagtrack.realtime.engines import OnnxRuntimeEngine, create_engine

    cache = tmp_path / "cache"
    create_engine("ort", cli_weights, "cpu", cache_dir=cache).close()
    (cached,) = (cache / "onnx").glob("*.onnx")
    good = digest(cached)
    cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])  # cut in half
    engine = create_engine("auto", cli_weights, "cpu", cache_dir=cache)
    try:
        assert isinstance(engine, OnnxRuntimeEngine)  # not the torch fallback
    finally:
        engine.close()
    assert digest(cached) == good


def test_a_damaged_byte_in_the_cached_onnx_is_caught_by_its_hash(tmp_path, cli_weights):
    from tagtrack.realtime.engines import create_engine

    cache = tmp_path / "cache"
    create_engine("ort", cli_weights, "cpu", cache_dir=cache).close()
    (cached,) = (cache / "onnx").glob("*.onnx")
    good = digest(cached)
    data = bytearray(cached.read_bytes())
    data[-100] ^= 0xFF  # a weight changes; ONNX Runtime would load it without a word
    cached.write_bytes(bytes(data))
    create_engine("ort", cli_weights, "cpu", cache_dir=cache).close()
    assert digest(cached) == good


# ---------------------------------------------------------------- 6. unreadable image, truncated video


def _folder_with_a_bad_image(root: Path) -> Path:
    folder = root / "frames"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.full((40, 50, 3), 30 * i, np.uint8))
    (folder / "0002.png").write_bytes(b"not a png")
    return folder


def test_an_unreadable_image_is_skipped_named_and_counted(tmp_path, cli_weights):
    folder = _folder_with_a_bad_image(tmp_path)
    poses = tmp_path / "poses.jsonl"
    result = cli("run", str(folder), "--weights", str(cli_weights), *TORCH_CPU, "--json", str(poses),
                 cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert "0002.png" in result.stderr and "skipping" in result.stderr
    assert "skipped 1 unreadable image" in result.stdout
    records = validated_lines(poses)
    assert [Path(r["source_id"]).name for r in records] == ["0000.png", "0001.png", "0003.png"]


def test_strict_stops_at_an_unreadable_image(tmp_path, cli_weights, capfd):
    folder = _folder_with_a_bad_image(tmp_path)
    poses = tmp_path / "poses.jsonl"
    code = main.main(["run", str(folder), "--weights", str(cli_weights), *TORCH_CPU, "--json", str(poses),
                      "--strict", "--quiet"])
    err = capfd.readouterr().err
    assert code == main.EXIT_USER_ERROR and "0002.png" in err
    assert not poses.exists()  # a failed run replaces nothing ...
    (kept,) = temporaries(poses)
    assert len(validated_lines(kept)) == 2  # ... and the frames before it are kept aside


def test_a_truncated_video_is_reported(tmp_path, cli_weights):
    video = write_video(tmp_path / "clip.avi", 80, size_hw=(48, 64))
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    poses = tmp_path / "poses.jsonl"
    result = cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--json", str(poses),
                 cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    frames = len(validated_lines(poses))
    assert frames < 80
    assert f"ended at frame {frames} of the 80" in result.stderr


# ---------------------------------------------------------------- 8. the viewer: signals and FFmpeg's lines


def _view_env(tmp_path: Path) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", TAGTRACK_CACHE=str(tmp_path / "cache"), QT_QPA_PLATFORM="offscreen")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_view_closed_by_a_signal_exits_like_run(tmp_path, cli_weights, signum):
    video = write_video(tmp_path / "long.avi", 3000, size_hw=(48, 64), fps=30.0)
    process = subprocess.Popen(
        # -v: the "window open" info line says when the signal handlers are in place
        [sys.executable, str(REPO_ROOT / "main.py"), "-v", "view", str(video), "--weights", str(cli_weights),
         *TORCH_CPU],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_view_env(tmp_path), cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # logged once the window is shown and the handlers are in place
            line = process.stderr.readline()
            if not line or "window open" in line:
                break
        assert process.poll() is None, "the viewer ended on its own"
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=300)  # a loaded machine is slow to close
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr


def test_view_of_an_unreadable_video_prints_only_our_line(tmp_path, cli_weights):
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)  # an mp4 header and nothing else
    result = subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), "view", str(fake), "--weights",
                             str(cli_weights)], capture_output=True, text=True, env=_view_env(tmp_path),
                            cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
