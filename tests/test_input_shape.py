"""`tagtrack run` picks the network input's shape from the source's frames (portrait video, portrait input)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagtrack import main
from tagtrack.model.checkpoint import save_checkpoint
from tagtrack.model.config import ModelConfig
from tagtrack.realtime.engines import create_engine
from tagtrack.realtime.sinks import read_pose_lines
from tests.test_api import write_noise_video
from tests.test_settings import CPU, lively

LANDSCAPE = ModelConfig(num_stacks=1, width=16, tag_dim=1, input_height=128, input_width=192)


@pytest.fixture(scope="module")
def landscape_weights(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("weights") / "landscape.safetensors", lively(LANDSCAPE))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TAGTRACK_CACHE", str(tmp_path / "cache"))


def _run_input_hw(tmp_path: Path, weights: Path, size_hw: tuple[int, int], *extra: str) -> list[int]:
    video = write_noise_video(tmp_path / f"clip_{size_hw[0]}x{size_hw[1]}.avi", 3, size_hw=size_hw)
    poses = tmp_path / f"poses_{size_hw[0]}x{size_hw[1]}.jsonl"
    assert main.main(["run", str(video), "--weights", str(weights), *CPU, "--json", str(poses), "-q", *extra]) == 0
    settings, _ = read_pose_lines(poses)
    return settings["input_hw"]


def test_portrait_video_gets_a_portrait_input_of_no_more_pixels(tmp_path, landscape_weights):
    assert _run_input_hw(tmp_path, landscape_weights, (96, 48)) == [192, 128]
    assert _run_input_hw(tmp_path, landscape_weights, (48, 96)) == [128, 192]  # landscape keeps the checkpoint's


def test_input_size_flag_pins_the_shape(tmp_path, landscape_weights):
    assert _run_input_hw(tmp_path, landscape_weights, (96, 48), "--input-size", "128", "192") == [128, 192]


def test_engine_without_frame_size_uses_the_checkpoint_input(landscape_weights):
    assert create_engine("torch", landscape_weights, "cpu").input_hw == (128, 192)
    assert create_engine("torch", landscape_weights, "cpu", frame_hw=(1920, 1080)).input_hw == (192, 128)
