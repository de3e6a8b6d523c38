"""The default-model recipe's phase configs (training/recipes/default_model.py)."""

from __future__ import annotations

from pathlib import Path

from tagtrack.training.recipes.default_model import PHASE7_WIDTHS, phase6b_config, phase7_config


def test_phase7_runs_continue_phase_6b_at_its_width_or_wider(tmp_path: Path) -> None:
    phase6b = phase6b_config(tmp_path)
    for width in PHASE7_WIDTHS:
        config = phase7_config(tmp_path, width)
        assert config.model.width == width
        assert (config.loss, config.train_annotations, config.augment) == (phase6b.loss, phase6b.train_annotations,
                                                                           phase6b.augment)
        assert config.lr_decay_steps[0] < config.steps  # the last part of each run at the low rate
        # Phase 6b's weights load as they are (width 64) or widened into the wider network.
        if width == phase6b.model.width:
            assert phase6b.model.same_network(config.model)
        else:
            assert phase6b.model.widens_to(config.model)
