"""The selectable loss forms (issue 13) through config, data and the training loop; old configs keep today's behaviour."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tagtrack.model.codec import render_heatmaps
from tagtrack.model.config import TINY
from tagtrack.model.errors import UserFacingError
from tagtrack.training.config import AugmentConfig, TrainConfig, preset
from tagtrack.training.dataset import CocoKeypointDataset, TargetConfig
from tagtrack.training.losses import LossOptions, render_heatmaps_torch
from tagtrack.training.synthetic import SceneConfig, generate_dataset
from tagtrack.training.train import train

REPO = Path(__file__).resolve().parents[1]


def test_old_configs_load_with_todays_behaviour(tmp_path: Path) -> None:
    # A training config written before the loss-form fields existed (as in the hourglass phases' checkpoints).
    later = ("scale_loss", "scale_truth", "suppress_mirror_peaks", "trainable", "channels_last", "eval_every")
    old = {name: value for name, value in TrainConfig().to_dict().items() if name not in later}
    assert "scale_loss" not in old and old["sigma_mode"] == "fixed"
    config = TrainConfig.from_dict(old)
    assert (config.scale_loss, config.scale_truth, config.sigma_mode) == ("ours", "onehot", "fixed")
    assert config.loss_options == LossOptions("ours", "onehot", "fixed", config.sigma)
    # "adaptive" was the size-driven sigma's name: it loads as "size", and a saved copy round-trips.
    path = tmp_path / "old.json"
    path.write_text(json.dumps(dict(old, sigma_mode="adaptive")))
    loaded = TrainConfig.load(path)
    assert loaded.sigma_mode == "size"
    loaded.save(tmp_path / "new.json")
    assert TrainConfig.load(tmp_path / "new.json") == loaded
    assert preset("small").scale_loss == "ours" and preset("small").sigma_mode == "fixed"


def test_bad_loss_form_settings_are_refused() -> None:
    with pytest.raises(UserFacingError, match="scale loss must be one of ours, wang"):
        preset("small", scale_loss="paper")
    with pytest.raises(UserFacingError, match="scale truth"):
        preset("small", scale_truth="bins")
    with pytest.raises(UserFacingError, match="sigma mode must be one of fixed, size, embedding"):
        preset("small", sigma_mode="learned")
    with pytest.raises(UserFacingError, match="needs tag_dim > 1"):
        preset("tiny", sigma_mode="embedding")  # TINY has L = 1


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    generate_dataset(folder, num_images=4, config=SceneConfig(width=96, height=64, max_people=3), seed=2)
    return folder


def test_dataset_keypoints_redraw_its_heatmaps(scenes: Path) -> None:
    """The map-pixel keypoints the embedding mode draws from give back the dataset's own fixed-sigma targets."""
    dataset = CocoKeypointDataset(scenes / "annotations.json", scenes / "images", TargetConfig(64, 96, sigma=1.5),
                                  AugmentConfig(), views=2)
    sample = dataset[1]
    keypoints, joints = sample["keypoints"], sample["joints"]
    assert keypoints.shape == (2, 30, 17, 3) and keypoints.dtype == torch.float32
    assert (keypoints[..., 2] > 0).sum() >= joints[..., 1].sum() > 0
    drawn = render_heatmaps_torch(keypoints, joints[..., 1], torch.full((2, 30), 1.5), 16, 24)
    assert drawn.numpy() == pytest.approx(sample["heatmaps"].numpy(), abs=1e-5)
    # "size" draws each person with its own sigma, as model.codec does with the same sigmas.
    sized = CocoKeypointDataset(scenes / "annotations.json", scenes / "images",
                                TargetConfig(64, 96, sigma=1.5, sigma_mode="size"), AugmentConfig.off())[0]
    sizes = sized["scales"][0].numpy() * 24
    people = int((sized["joints"][0, :, :, 1].sum(dim=1) > 0).sum())
    expected = render_heatmaps(sized["keypoints"][0, :people].numpy(), 16, 24,
                               1.5 * np.clip(sizes[:people] / 32, 0.5, 2.0))
    assert sized["heatmaps"][0].numpy() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("form", [("wang", "onehot", "embedding"), ("wang", "soft", "size"), ("ours", "onehot", "embedding")])
def test_training_runs_with_each_form(scenes: Path, tmp_path: Path, form: tuple[str, str, str]) -> None:
    scale_loss, truth, sigma_mode = form
    config = preset("tiny", train_annotations=str(scenes / "annotations.json"), train_images=str(scenes / "images"),
                    model=replace(TINY, tag_dim=2), steps=3, checkpoint_every=100, log_every=1,
                    scale_loss=scale_loss, scale_truth=truth, sigma_mode=sigma_mode)
    config = replace(config, loss=replace(config.loss, scale=1e-2))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(config, tmp_path / "run")
    finally:
        torch.set_num_threads(previous)
    assert result.step == 3 and all(np.isfinite(result.losses))
    saved = TrainConfig.load(tmp_path / "run" / "config.json")
    assert (saved.scale_loss, saved.scale_truth, saved.sigma_mode) == form
    rows = (tmp_path / "run" / "log.csv").read_text().strip().splitlines()
    scale_column = rows[0].split(",").index("scale")
    assert all(float(row.split(",")[scale_column]) > 0 for row in rows[1:])
