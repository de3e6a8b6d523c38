"""Issue 27: nothing the user had is ever lost, and no input crashes the CLI.

Each test reproduces one case of the issue (B1-B6: data loss, T1-T5: crashes) through the real CLI in a
subprocess (a crash must show as an exit code, a segfault included) and checks: the user's files untouched,
one `error:` line, exit code 2, no traceback. Disk-full cases use a small tmpfs, mounted as root; where mount
is not permitted they skip with the reason.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tagtrack.realtime.sinks import h264_encoder
from tests.test_faults import cli, noise_video

TORCH_CPU = ("--engine", "torch", "--device", "cpu")
HAVE_H264 = h264_encoder() is not None


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mount_tmpfs(folder: Path, size: int) -> Path:
    """A tmpfs of `size` bytes at `folder` (unmounted by the caller), or skip the test with the reason."""
    folder.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs needs root to mount")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    return folder


@pytest.fixture
def small_disk(tmp_path):
    """Mounts a tmpfs of a given size at tmp_path/small (unmounted at the end)."""
    folder = tmp_path / "small"
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        mounted.append(mount_tmpfs(folder, size))
        return folder

    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], check=False)


def one_error(result: subprocess.CompletedProcess, *names: str) -> str:
    """The run failed with exit 2 and exactly one `error:` line (naming each of `names`), no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for name in names:
        assert name in errors[0], result.stderr
    return errors[0]


# ---------------------------------------------------------------- B1: disk full at the end of the video


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_H264, reason="the H.264 writer needs PyAV")
def test_b1_disk_full_when_the_video_is_closed_fails_and_keeps_the_old_file(tmp_path, cli_weights, small_disk):
    # 12 frames at 30 FPS: one MP4 fragment, written when the file is closed. Noise does not compress, so
    # the fragment (about 370 KB) does not fit in 200 KB: every write before the close succeeds.
    video = noise_video(tmp_path / "noise.avi", 12, size_hw=(240, 320), fps=30.0)
    folder = small_disk(200 * 1024)
    out = folder / "a.mp4"
    out.write_bytes(b"the user's old video")
    before = digest(out)
    result = cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--out", str(out),
                 "--codec", "h264", cache=tmp_path / "cache")
    one_error(result, str(out))
    assert f"wrote {out}" not in result.stdout
    assert digest(out) == before


# ---------------------------------------------------------------- B2: temporary names that are the user's files


def test_b2_an_input_named_like_a_temporary_is_never_touched(tmp_path, cli_weights):
    from tests.test_run_cli import video_frame_count
    from tests.test_sources import write_video

    video = write_video(tmp_path / "s.partial.mp4", 12, size_hw=(48, 64), fourcc="mp4v")
    before = digest(video)
    out = tmp_path / "s.mp4"
    result = cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--out", str(out),
                 cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert digest(video) == before
    assert video_frame_count(out) == 12


def test_b2_files_of_the_user_with_the_old_temporary_names_are_kept(tmp_path, cli_weights):
    from tests.test_sources import write_video

    video = write_video(tmp_path / "clip.avi", 6, size_hw=(48, 64))
    mine = {tmp_path / name: f"the user's {name}".encode() for name in
            ("a.partial.mp4", "poses.partial.jsonl", "poses.coco.partial.json", "poses.posetrack.partial.json",
             "poses.mot.partial.txt", "poses.settings.partial.json")}
    for path, data in mine.items():
        path.write_bytes(data)
    result = cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--out", str(tmp_path / "a.mp4"),
                 "--json", str(tmp_path / "poses.jsonl"), "--format", "coco", "--format", "posetrack",
                 "--format", "mot", cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert {path: path.read_bytes() for path in mine} == mine
    # and nothing else is left beside the outputs: every temporary was renamed into place
    assert sorted(path.name for path in tmp_path.iterdir() if "partial" in path.name) == sorted(p.name for p in mine)


# ---------------------------------------------------------------- B6: a failed run destroys the previous results


def _previous_results(folder: Path) -> dict[Path, bytes]:
    """Files an earlier run left, each with recognisable bytes."""
    names = ("a.mp4", "poses.jsonl", "poses.coco.json", "poses.posetrack.json", "poses.settings.json")
    files = {folder / name: f"earlier {name}".encode() for name in names}
    for path, data in files.items():
        path.write_bytes(data)
    return files


def _folder_with_a_bad_image(root: Path, count: int = 4, bad: int = 2) -> Path:
    import cv2
    import numpy as np

    folder = root / "frames"
    folder.mkdir()
    for i in range(count):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.full((40, 50, 3), 30 * i, np.uint8))
    (folder / f"{bad:04d}.png").write_bytes(b"not a png")
    return folder


def test_b6_a_run_that_fails_mid_way_leaves_the_previous_results_and_keeps_its_own_aside(tmp_path, cli_weights):
    from tests.test_run_cli import temporaries, validated_lines

    folder = _folder_with_a_bad_image(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    previous = _previous_results(out)
    result = cli("run", str(folder), "--weights", str(cli_weights), *TORCH_CPU, "--strict", "--codec", "mp4v",
                 "--out", str(out / "a.mp4"), "--json", str(out / "poses.jsonl"), "--format", "coco",
                 "--format", "posetrack", cache=tmp_path / "cache")
    one_error(result, "0002.png")
    assert {path: path.read_bytes() for path in previous} == previous
    # The frames before the bad image are kept under names that say what they are, and the warning lists them.
    (jsonl,) = temporaries(out / "poses.jsonl")
    assert len(validated_lines(jsonl)) == 2
    assert str(jsonl) in result.stderr
    (coco,) = temporaries(out / "poses.coco.json")
    assert str(coco) in result.stderr


def test_b6_a_run_refused_before_it_starts_leaves_the_previous_results(tmp_path, cli_weights):
    from tests.test_sources import write_video

    video = write_video(tmp_path / "clip.avi", 4, size_hw=(48, 64))
    previous = _previous_results(tmp_path)
    (tmp_path / "poses_openpose").write_bytes(b"a file where the OpenPose folder would go")
    result = cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--json", str(tmp_path / "poses.jsonl"),
                 "--format", "openpose", "--format", "coco", cache=tmp_path / "cache")
    one_error(result, "poses_openpose")
    assert {path: path.read_bytes() for path in previous} == previous
    assert not [path for path in tmp_path.iterdir() if ".partial-" in path.name]


@pytest.mark.slow
def test_b6_sigkill_leaves_the_previous_results_and_only_temporaries_that_say_what_they_are(tmp_path, cli_weights):
    import signal

    from tests.test_faults import start_cli
    from tests.test_run_cli import temporaries, validated_lines, wait_for_lines
    from tests.test_sources import write_video

    video = write_video(tmp_path / "long.avi", 3000, size_hw=(48, 64), fps=30.0)
    out = tmp_path / "out"
    out.mkdir()
    previous = _previous_results(out)
    process = start_cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--input-size", "128", "128",
                        "--out", str(out / "a.mp4"), "--json", str(out / "poses.jsonl"), "--format", "coco",
                        "--format", "posetrack", cache=tmp_path / "cache")
    try:
        wait_for_lines(process, out / "poses.jsonl", 40)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert {path: path.read_bytes() for path in previous} == previous
    new = sorted(path.name for path in out.iterdir() if path not in previous)
    assert new and all(".partial-" in name for name in new), new
    (jsonl,) = temporaries(out / "poses.jsonl")
    assert len(validated_lines(jsonl)) >= 40  # whole lines only


# ---------------------------------------------------------------- B4: a checkpoint overwritten


@pytest.fixture
def bundled(tmp_path, cli_weights, monkeypatch):
    """The bundled models, as copies in tmp_path (a failing test must not destroy the repository's)."""
    import shutil

    from tagtrack.model import checkpoint

    folder = tmp_path / "models"
    folder.mkdir()
    copies = {}
    for name in ("default", "wide", "street"):
        copies[name] = folder / f"{name}.safetensors"
        shutil.copyfile(cli_weights, copies[name])
    monkeypatch.setattr(checkpoint, "DEFAULT_WEIGHTS", copies["default"])
    monkeypatch.setattr(checkpoint, "BUNDLED_WEIGHTS", {**copies, "general": copies["default"]})
    return copies


def _refused_in_process(args: list[str], kept: list[Path], capfd) -> str:
    from tagtrack import main

    before = {path: digest(path) for path in kept}
    code = main.main(args)
    err = capfd.readouterr().err
    assert code == main.EXIT_USER_ERROR, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert {path: digest(path) for path in kept} == before
    return lines[0]


def test_b4_export_onto_its_own_weights_is_refused(tmp_path, cli_weights, capfd):
    import shutil

    weights = tmp_path / "w.safetensors"
    shutil.copyfile(cli_weights, weights)
    line = _refused_in_process(["export", "--weights", str(weights), "--onnx", str(weights)], [weights], capfd)
    assert "--onnx" in line and "--weights" in line


def test_b4_export_onto_a_bundled_model_is_refused(tmp_path, bundled, capfd):
    for target in ("default", "street"):
        line = _refused_in_process(["export", "--onnx", str(bundled[target])], list(bundled.values()), capfd)
        assert f"is the bundled model {target!r}" in line


def test_b4_predict_json_onto_a_bundled_model_is_refused(tmp_path, bundled, capfd):
    import cv2
    import numpy as np

    photo = tmp_path / "a.jpg"
    cv2.imwrite(str(photo), np.full((40, 50, 3), 90, np.uint8))
    line = _refused_in_process(["predict", str(photo), "--json", str(bundled["wide"])], list(bundled.values()), capfd)
    assert "is the bundled model 'wide'" in line


# ---------------------------------------------------------------- B3: the config overwritten; settings round trip


def test_b3_an_output_that_is_the_config_is_refused(tmp_path, cli_weights):
    from tests.test_sources import write_video

    video = write_video(tmp_path / "clip.avi", 4, size_hw=(48, 64))
    q = tmp_path / "q"
    q.mkdir()
    config = q / "poses.settings.json"
    config.write_text('{"decode": {"top_k": 7}}')
    result = cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--json", str(q / "poses.jsonl"),
                 "--format", "coco", "--config", str(config), cache=tmp_path / "cache")
    one_error(result, "--config")
    assert config.read_text() == '{"decode": {"top_k": 7}}'
    assert sorted(path.name for path in q.iterdir()) == ["poses.settings.json"]


@pytest.mark.parametrize("tracking", [True, False])
def test_b3_the_settings_a_run_writes_are_a_config_the_next_run_takes(tmp_path, cli_weights, tracking):
    import json

    from tests.test_run_cli import validated_lines
    from tests.test_sources import write_video

    video = write_video(tmp_path / "clip.avi", 4, size_hw=(48, 64))
    untracked = [] if tracking else ["--no-track"]
    first = cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, *untracked,
                "--json", str(tmp_path / "a.jsonl"), "--format", "coco", "--set", "decode.top_k=7",
                "--set", "tracker.confirm_hits=2", cache=tmp_path / "cache")
    assert first.returncode == 0, first.stderr
    written = json.loads((tmp_path / "a.settings.json").read_text())
    again = cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, *untracked,
                "--json", str(tmp_path / "b.jsonl"), "--config", str(tmp_path / "a.settings.json"),
                cache=tmp_path / "cache")
    assert again.returncode == 0, again.stderr
    header = json.loads((tmp_path / "b.jsonl").read_text().splitlines()[0])["settings"]
    assert header["decode"] == written["decode"] and header["decode"]["top_k"] == 7
    assert header["tracker"] == written["tracker"]
    assert len(validated_lines(tmp_path / "b.jsonl")) == 4


# ---------------------------------------------------------------- B5: two runs with the same outputs at once


@pytest.mark.slow
def test_b5_a_second_run_onto_the_outputs_of_a_running_one_is_refused(tmp_path, cli_weights):
    import json
    import signal

    from tests.test_faults import start_cli
    from tests.test_run_cli import signal_after_lines, validated_lines, video_frame_count
    from tests.test_sources import write_video

    video = write_video(tmp_path / "long.avi", 3000, size_hw=(48, 64), fps=30.0)
    outputs = ["--out", str(tmp_path / "a.mp4"), "--json", str(tmp_path / "poses.jsonl"), "--format", "coco"]
    first = start_cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--input-size", "128", "128",
                      "--codec", "mp4v", *outputs, cache=tmp_path / "cache")
    try:
        from tests.test_run_cli import wait_for_lines

        wait_for_lines(first, tmp_path / "poses.jsonl", 10)
        second = cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--input-size", "128", "128",
                     "--codec", "mp4v", *outputs, cache=tmp_path / "cache")
        one_error(second, "another run")
        assert first.poll() is None  # the first run goes on
        signal_after_lines(first, tmp_path / "poses.jsonl", 20, signal.SIGINT)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130
    # The first run's files are whole and its own: as many frames in the video as lines, COCO valid.
    records = validated_lines(tmp_path / "poses.jsonl")
    assert video_frame_count(tmp_path / "a.mp4") == len(records) >= 20
    assert len(json.loads((tmp_path / "poses.coco.json").read_text())) == sum(len(r["people"]) for r in records)
    assert not [path for path in tmp_path.iterdir() if ".partial-" in path.name]


# ---------------------------------------------------------------- T1-T5: inputs that crashed the CLI


def _refused(tmp_path: Path, *args, kept: list[Path] = ()) -> str:
    """`tagtrack ARGS` in a subprocess: one error line, exit 2, no traceback, files in `kept` untouched, nothing new."""
    before = {path: digest(path) for path in kept}
    existing = set(tmp_path.iterdir())
    result = cli(*args, cache=tmp_path / "cache", timeout=120)
    line = one_error(result)
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr
    assert {path: digest(path) for path in kept} == before
    assert set(tmp_path.iterdir()) - existing <= {tmp_path / "cache"}
    return line


@pytest.mark.parametrize("assignment", ["tracker.reid_time=inf", "decode.spatial_weight=inf",
                                        "decode.tag_threshold=-inf", "tracker.max_cost=nan"])
def test_t1_non_finite_settings_are_refused_before_any_output_opens(tmp_path, cli_weights, assignment):
    from tests.test_sources import write_video

    video = write_video(tmp_path / "clip.avi", 4, size_hw=(48, 64))
    poses = tmp_path / "poses.jsonl"
    poses.write_text("an earlier result\n")
    line = _refused(tmp_path, "run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--json", str(poses),
                    "--set", assignment, kept=[poses, video])
    assert assignment.split("=")[0] in line and "finite" in line


def test_t1_non_finite_settings_in_a_config_file_are_refused(tmp_path, cli_weights):
    from tests.test_sources import write_video

    video = write_video(tmp_path / "clip.avi", 4, size_hw=(48, 64))
    config = tmp_path / "tuned.json"
    config.write_text('{"tracker": {"reid_time": Infinity}}')  # Python's json reads it
    line = _refused(tmp_path, "run", str(video), "--weights", str(cli_weights), *TORCH_CPU,
                    "--json", str(tmp_path / "poses.jsonl"), "--config", str(config), kept=[config])
    assert "tracker.reid_time" in line and str(config) in line


def test_t2_a_name_that_is_not_utf8_is_refused_not_a_segfault(tmp_path, cli_weights):
    from tests.test_sources import write_video

    video = write_video(tmp_path / "clip.avi", 4, size_hw=(48, 64))
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/clip\xff.avi"))
    video.rename(odd)
    line = _refused(tmp_path, "run", odd, "--weights", str(cli_weights), *TORCH_CPU, "--json",
                    str(tmp_path / "poses.jsonl"), kept=[odd])
    assert "UTF-8" in line


def test_t2_an_output_name_that_is_not_utf8_is_refused(tmp_path, cli_weights):
    from tests.test_sources import write_video

    video = write_video(tmp_path / "clip.avi", 4, size_hw=(48, 64))
    line = _refused(tmp_path, "run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--out",
                    Path(os.fsdecode(bytes(tmp_path) + b"/a\xff.mp4")))
    assert "UTF-8" in line


@pytest.mark.parametrize("index", ["2147483648", "99999999999999999999"])
def test_t3_a_camera_index_out_of_range_is_refused(tmp_path, cli_weights, index):
    line = _refused(tmp_path, "run", index, "--weights", str(cli_weights), *TORCH_CPU)
    assert index in line


def test_t4_a_symlink_loop_is_refused(tmp_path, cli_weights):
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    line = _refused(tmp_path, "run", str(tmp_path / "loop1"), "--weights", str(cli_weights), *TORCH_CPU)
    assert "loop1" in line and "symbolic link" in line


def test_t4_an_output_that_is_a_symlink_loop_is_refused(tmp_path, cli_weights):
    from tests.test_sources import write_video

    video = write_video(tmp_path / "clip.avi", 4, size_hw=(48, 64))
    (tmp_path / "loop1.jsonl").symlink_to(tmp_path / "loop2.jsonl")
    (tmp_path / "loop2.jsonl").symlink_to(tmp_path / "loop1.jsonl")
    line = _refused(tmp_path, "run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--json",
                    str(tmp_path / "loop1.jsonl"))
    assert "loop1.jsonl" in line and "symbolic link" in line


@pytest.mark.parametrize("command", ["predict", "run"])
def test_t5_a_huge_input_size_is_refused_at_once(tmp_path, cli_weights, command):
    import time

    import cv2
    import numpy as np

    photo = tmp_path / "a.jpg"
    cv2.imwrite(str(photo), np.full((40, 50, 3), 90, np.uint8))
    extra = ["--device", "cpu"] if command == "predict" else list(TORCH_CPU)
    started = time.monotonic()
    line = _refused(tmp_path, command, str(photo), "--weights", str(cli_weights), *extra,
                    "--input-size", "64000", "64000", kept=[photo])
    assert "64000" in line and "at most" in line
    assert time.monotonic() - started < 60  # not after minutes of allocating


# ---------------------------------------------------------------- messages that misled


def test_message_out_dir_read_only_names_out_dir(tmp_path, cli_weights, monkeypatch):
    from tagtrack.realtime import batch
    from tagtrack.realtime.run import RunOptions

    # As root the kernel lets every write through; the refusal is checked with access() saying no.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if "ro" in str(path) else real_access(path, mode))
    (tmp_path / "ro").mkdir()
    from tagtrack.model.errors import UserFacingError

    with pytest.raises(UserFacingError, match=r"^--out-dir .*ro is not writable"):
        batch.plan_jobs(["clip.mp4"], tmp_path / "ro", RunOptions(source="", weights=cli_weights))


def test_message_a_temporary_of_a_long_name_exists_and_fits(tmp_path):
    from tagtrack.realtime.sinks import NAME_MAX, Temporary

    final = tmp_path / ("a" * 248 + ".mp4")  # 252 bytes: "<stem>.partial-xxxxxx.mp4" would not fit
    temporary = Temporary(final)
    assert temporary.path.exists() and len(temporary.path.name.encode()) <= NAME_MAX
    assert temporary.path.name.endswith(".mp4") and ".partial-" in temporary.path.name
    temporary.publish()
    assert final.exists()


def test_message_api_formats_as_one_string(tmp_path, cli_weights):
    import json

    import tagtrack
    from tests.test_sources import write_video

    video = write_video(tmp_path / "clip.avi", 3, size_hw=(48, 64))
    tagtrack.track(str(video), json=tmp_path / "p.jsonl", formats="coco", weights=cli_weights, engine="torch",
                   device="cpu")
    assert isinstance(json.loads((tmp_path / "p.coco.json").read_text()), list)


def test_message_a_checkpoint_with_settings_out_of_range_is_named_before_the_export(tmp_path, capfd):
    import torch

    from tagtrack import main
    from tagtrack.model.checkpoint import save_checkpoint
    from tagtrack.model.hourglass import HourglassNet
    from tests.conftest import hourglass_config
    from tests.test_sources import write_video

    torch.manual_seed(0)
    weights = tmp_path / "odd.safetensors"
    save_checkpoint(weights, HourglassNet(hourglass_config()), settings={"decode": {"detection_threshold": 5.0}})
    video = write_video(tmp_path / "clip.avi", 3, size_hw=(48, 64))
    cache = tmp_path / "cache"
    os.environ["TAGTRACK_CACHE"] = str(cache)
    try:
        code = main.main(["run", str(video), "--weights", str(weights), "--engine", "ort", "--device", "cpu",
                          "--json", str(tmp_path / "p.jsonl")])
    finally:
        del os.environ["TAGTRACK_CACHE"]
    err = capfd.readouterr().err
    assert code == 2
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert str(weights) in line and "detection_threshold" in line
    assert not cache.exists() or not list(cache.rglob("*.onnx"))  # refused before the ONNX export


# ---------------------------------------------------------------- friction


def test_friction_out_dir_keeps_a_non_ascii_name(tmp_path, cli_weights):
    from tagtrack.realtime import batch
    from tagtrack.realtime.run import RunOptions

    jobs = batch.plan_jobs(["vidéo été.avi", "北京.mp4", "a:b?.mp4"], tmp_path / "out",
                           RunOptions(source="", weights=cli_weights))
    assert [job.json.name for job in jobs] == ["vidéo été.jsonl", "北京.jsonl", "a_b.jsonl"]


def test_friction_counts_are_worded_for_one_and_many(tmp_path, cli_weights):
    from tagtrack.realtime.run import counted
    from tests.test_sources import write_video

    assert [counted(n, "person", "people") for n in (0, 1, 2)] == ["0 people", "1 person", "2 people"]
    video = write_video(tmp_path / "clip.avi", 3, size_hw=(48, 64))
    result = cli("run", str(video), "--out-dir", str(tmp_path / "out"), "--no-video", "--weights", str(cli_weights),
                 *TORCH_CPU, cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert "1 input ->" in result.stdout and "(s)" not in result.stdout


def test_friction_the_viewer_suggests_the_installed_command():
    import inspect

    from tagtrack.realtime import viewer

    assert "python main.py" not in inspect.getsource(viewer)


def test_friction_export_writes_the_onnx_file_with_the_usual_permissions(tmp_path, cli_weights):
    import stat

    pytest.importorskip("onnx")
    umask = os.umask(0o022)
    try:
        from tagtrack.realtime.model_export import export_checkpoint

        export_checkpoint(cli_weights, tmp_path / "model.onnx")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "model.onnx").stat().st_mode) == 0o644  # not mkstemp's 0600
    assert [path.name for path in tmp_path.iterdir()] == ["model.onnx"]


def test_friction_run_makes_missing_output_folders_as_predict_does(tmp_path, cli_weights):
    from tests.test_run_cli import validated_lines
    from tests.test_sources import write_video

    video = write_video(tmp_path / "clip.avi", 3, size_hw=(48, 64))
    result = cli("run", str(video), "--weights", str(cli_weights), *TORCH_CPU, "--json",
                 str(tmp_path / "new" / "poses.jsonl"), "--out", str(tmp_path / "videos" / "a.mp4"),
                 cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert len(validated_lines(tmp_path / "new" / "poses.jsonl")) == 3
    assert (tmp_path / "videos" / "a.mp4").is_file()


def test_message_an_unreadable_weights_file_says_so(tmp_path, cli_weights, monkeypatch):
    from tagtrack.model.errors import UserFacingError
    from tagtrack.realtime.engines import create_engine

    # As root every file is readable; the refusal is checked with access() saying no for the weights.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if str(path) == str(cli_weights)
                        else real_access(path, mode, **kw))
    with pytest.raises(UserFacingError, match=f"cannot read checkpoint {cli_weights}: permission denied"):
        create_engine("torch", cli_weights, "cpu")


# ---------------------------------------------------------------- a silent stream: say it was a timeout


@pytest.fixture
def silent_stream():
    """tcp://127.0.0.1:PORT serving 10 MPEG-TS frames on its first connection, then keeping every connection
    open without a byte more (a camera that went quiet; a reconnect gets nothing)."""
    import io
    import socket
    import threading

    import av
    import numpy as np

    buffer = io.BytesIO()
    container = av.open(buffer, "w", format="mpegts")
    stream = container.add_stream("mpeg1video", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    for i in range(10):
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8), "bgr24")))
    container.mux(stream.encode(None))
    container.close()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    connections = []

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            if not connections:
                connection.sendall(buffer.getvalue())
            connections.append(connection)

    threading.Thread(target=serve, daemon=True).start()
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for connection in connections:
        connection.close()


def test_message_a_silent_stream_names_the_timeout_and_its_option(silent_stream, caplog):
    import logging
    import time

    from tagtrack.model.errors import UserFacingError
    from tagtrack.realtime.sources import LiveSource

    source = LiveSource(silent_stream, silent_stream, retries=1, retry_delay=0.0, timeout=2.0)
    caplog.set_level(logging.WARNING, logger="tagtrack.realtime.sources")
    started = time.monotonic()
    with pytest.raises(UserFacingError) as refused:
        while source.read() is not None:
            pass
    source.close()
    message = str(refused.value)
    assert "stopped delivering frames; gave up after 1 retries" in message
    assert "nothing came within the stream timeout, 2 s (--stream-timeout SECONDS)" in message, message
    assert time.monotonic() - started < 30  # the 2 s timeout, not OpenCV's 30 s
    assert any("stream timeout, 2 s" in record.getMessage() for record in caplog.records)


def test_message_a_stream_that_does_not_answer_names_the_timeout(tmp_path, cli_weights, silent_stream):
    import socket
    import time

    # The fixture's first connection gets the frames: take it, so that the run's gets nothing.
    host, port = silent_stream.removeprefix("tcp://").split(":")
    first = socket.create_connection((host, int(port)))
    try:
        started = time.monotonic()
        line = _refused(tmp_path, "run", silent_stream, "--weights", str(cli_weights), *TORCH_CPU,
                        "--stream-timeout", "2")
    finally:
        first.close()
    assert f"cannot open stream {silent_stream}" in line and "2 s" in line and "--stream-timeout" in line
    assert time.monotonic() - started < 60


def test_friction_the_api_says_where_the_demo_clip_is(tmp_path, monkeypatch):
    import tagtrack
    from tagtrack.model.errors import UserFacingError

    clip = tmp_path / "cache" / "vtest.avi"
    clip.parent.mkdir()
    clip.write_bytes(b"a clip")
    monkeypatch.setenv("TAGTRACK_CACHE", str(tmp_path / "cache"))  # where `make vtest` puts it
    monkeypatch.delenv("TAGTRACK_DEMO_VIDEO", raising=False)
    assert tagtrack.demo_video() == clip
    monkeypatch.setenv("TAGTRACK_CACHE", str(tmp_path / "empty"))
    from tagtrack.realtime import demo

    monkeypatch.setattr(demo, "vtest_locations", lambda: [tmp_path / "empty" / "vtest.avi"])
    with pytest.raises(UserFacingError, match="make vtest"):
        tagtrack.demo_video()


def test_friction_the_readme_snippet_asks_the_api_for_the_demo_clip():
    from tests.test_run_cli import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    snippet = readme[readme.index("## Python API"):readme.index("## Training your own model")]
    assert "tagtrack.demo_video()" in snippet and "~/.cache/tagtrack/vtest.avi" not in snippet


def test_friction_the_readme_install_names_the_viewers_system_libraries():
    from tests.test_run_cli import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    install = readme[readme.index("## Install"):readme.index("## Use")]
    assert all(name in install for name in ("libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1"))
