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
from tests.test_run_cli import tiny_weights  # noqa: F401 (a fixture)

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
def test_b1_disk_full_when_the_video_is_closed_fails_and_keeps_the_old_file(tmp_path, tiny_weights, small_disk):
    # 12 frames at 30 FPS: one MP4 fragment, written when the file is closed. Noise does not compress, so
    # the fragment (about 370 KB) does not fit in 200 KB: every write before the close succeeds.
    video = noise_video(tmp_path / "noise.avi", 12, size_hw=(240, 320), fps=30.0)
    folder = small_disk(200 * 1024)
    out = folder / "a.mp4"
    out.write_bytes(b"the user's old video")
    before = digest(out)
    result = cli("run", str(video), "--weights", str(tiny_weights), *TORCH_CPU, "--out", str(out),
                 "--codec", "h264", cache=tmp_path / "cache")
    one_error(result, str(out))
    assert f"wrote {out}" not in result.stdout
    assert digest(out) == before
