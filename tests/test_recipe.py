"""The default-model recipe's phase configs (training/recipes/default_model.py)."""

from __future__ import annotations

from pathlib import Path

from tagtrack.model.checkpoint import BUNDLED_WEIGHTS, load_checkpoint
from tagtrack.training.recipes.default_model import PHASE7_WIDTHS, phase6b_config, phase7_config


def test_phase7_runs_start_from_the_bundled_general_model_phase_6b(tmp_path: Path) -> None:
    general = load_checkpoint(BUNDLED_WEIGHTS["default"]).config
    phase6b = phase6b_config(tmp_path)
    for width in PHASE7_WIDTHS:
        config = phase7_config(tmp_path, width)
        assert config.model.width == width
        assert (config.loss, config.train_annotations, config.augment) == (phase6b.loss, phase6b.train_annotations,
                                                                           phase6b.augment)
        # The general model's weights load as they are (width 64) or widened into the wider network.
        assert general.same_network(config.model) if width == 64 else general.widens_to(config.model)
