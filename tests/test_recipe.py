"""The default-model recipe's phase configs (training/recipes/default_model.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tagtrack.training.recipes.default_model import (PHASE7_WIDTHS, phase6b_config, phase7_config, phase8_config,
                                                     phase9_config, phase10_config, phase11_config, phase13_config)


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


def test_phase8_is_phase7_at_width_64_with_the_mirror_weight(tmp_path: Path) -> None:
    phase7, phase8 = phase7_config(tmp_path, 64), phase8_config(tmp_path)
    assert phase7.loss.heatmap_mirror == 0 and phase8.loss.heatmap_mirror > 0
    assert phase8.loss.heatmap_foreground == phase7.loss.heatmap_foreground
    assert phase7.model.same_network(phase8.model)
    assert (phase8.train_annotations, phase8.augment, phase8.lr) == (phase7.train_annotations, phase7.augment, phase7.lr)
    assert phase8.lr_decay_steps[0] < phase8.steps


def test_phase9_is_phase8_at_a_lower_rate_and_mirror_weight(tmp_path: Path) -> None:
    phase8, phase9 = phase8_config(tmp_path), phase9_config(tmp_path)
    assert phase9.lr < phase8.lr
    assert 0 < phase9.loss.heatmap_mirror < phase8.loss.heatmap_mirror
    assert phase9.loss.heatmap_foreground == phase8.loss.heatmap_foreground
    assert phase8.model.same_network(phase9.model)
    assert (phase9.train_annotations, phase9.augment) == (phase8.train_annotations, phase8.augment)
    assert phase9.warmup_steps < phase9.lr_decay_steps[0] < phase9.steps


def test_phase10_is_phase6b_with_size_scaled_sigmas_and_no_teacher_maps(tmp_path: Path) -> None:
    phase6b, phase10, phase11 = phase6b_config(tmp_path), phase10_config(tmp_path), phase11_config(tmp_path)
    assert phase6b.sigma_mode == "fixed" and phase6b.train_teacher_maps
    assert phase10.sigma_mode == "size" and not phase10.train_teacher_maps and phase10.sigma == phase6b.sigma
    assert phase10.lr < phase6b.lr and phase10.warmup_steps < phase10.lr_decay_steps[0] < phase10.steps
    assert phase6b.model.same_network(phase10.model)
    assert (phase10.loss, phase10.train_annotations, phase10.augment) == (phase6b.loss, phase6b.train_annotations,
                                                                          phase6b.augment)
    assert phase11.sigma < phase10.sigma and phase11.sigma_mode == "size"
    assert (phase11.lr, phase11.steps, phase11.train_teacher_maps) == (phase10.lr, phase10.steps, "")
    # Phase 13: phase 10's network with the finer heatmap head, which phase 10's weights start (refines_to).
    phase13 = phase13_config(tmp_path)
    assert phase13.model.output_stride == 2 and phase10.model.refines_to(phase13.model)
    assert (phase13.loss, phase13.sigma, phase13.sigma_mode, phase13.lr, phase13.augment) == (
        phase10.loss, phase10.sigma, phase10.sigma_mode, phase10.lr, phase10.augment)


def test_export_stores_the_settings_of_the_bundled_model_it_makes(tmp_path: Path, monkeypatch) -> None:
    import sys

    import pytest

    from tagtrack.model.checkpoint import load_checkpoint, save_checkpoint
    from tagtrack.model.config import ModelConfig
    from tagtrack.model.hourglass import HourglassNet
    from tagtrack.model.schema import COCO17
    from tagtrack.training.recipes.default_model import GENERAL_SETTINGS, INFERENCE_HW, WIDE_SETTINGS, main

    trained = tmp_path / "last.safetensors"
    save_checkpoint(trained, HourglassNet(ModelConfig(num_stacks=1, width=16, tag_dim=1, input_height=64,
                                                      input_width=64)), COCO17, {"step": 3})
    for flag, settings in (("--wide", WIDE_SETTINGS), ("--general", GENERAL_SETTINGS)):
        out = tmp_path / f"{flag[2:]}.safetensors"
        monkeypatch.setattr(sys, "argv", ["recipe", "--root", str(tmp_path), "export", str(trained), flag,
                                          "--out", str(out)])
        assert not main()
        exported = load_checkpoint(out)
        assert exported.settings == settings
        assert (exported.config.input_height, exported.config.input_width) == INFERENCE_HW
    assert WIDE_SETTINGS != GENERAL_SETTINGS
    monkeypatch.setattr(sys, "argv", ["recipe", "--root", str(tmp_path), "export", str(trained), "--wide", "--general"])
    with pytest.raises(SystemExit) as refused:
        main()
    assert refused.value.code == 2


def test_pretrained_stages_train_the_imported_network_on_phase_6b_data(tmp_path: Path) -> None:
    from tagtrack.model.networks import build_network
    from tagtrack.training.recipes.default_model import PRETRAINED_STAGES, pretrained_config
    from tagtrack.training.step import freeze

    phase6b = phase6b_config(tmp_path)
    assert PRETRAINED_STAGES == ("tags", "full", "tags-push", "context", "full-low", "zoom", "anchored", "tag-decoder")
    tags, full, push, context, full_low, zoom, anchored, tag_decoder = (pretrained_config(tmp_path, stage)
                                                                        for stage in PRETRAINED_STAGES)
    for config in (tags, full, push, context, full_low, zoom, anchored, tag_decoder):
        family = {id(context): "mobilenet_fpn_context", id(tag_decoder): "mobilenet_fpn_tag_decoder"}.get(
            id(config), "mobilenet_fpn")
        assert config.model.family == family and config.model.same_network(replace(tags.model, family=family))
        assert (config.train_annotations, config.train_teacher_maps, config.suppress_mirror_peaks) == (
            phase6b.train_annotations, phase6b.train_teacher_maps, phase6b.suppress_mirror_peaks)
        assert config.warmup_steps < config.lr_decay_steps[0] < config.steps
    # The tags stage trains the tag head only; the full stage everything, at a lower rate than the tags stage.
    net = build_network(tags.model)
    freeze(net, tags.trainable)
    learning = {name.split(".")[0] for name, p in net.named_parameters() if p.requires_grad}
    assert learning == {"tag_head"}
    assert full.trainable == () and full.lr < tags.lr
    assert tags.loss == full.loss == phase6b.loss
    # tags-push: the tag head only, its push terms three times the tags stage's, the rest as they were.
    assert push.trainable == tags.trainable and push.loss.push == 3 * tags.loss.push
    assert push.loss.cross_push == 3 * tags.loss.cross_push and push.loss.pull == tags.loss.pull
    # context: the tags stage on the context tag head; full-low: the full stage at a twentieth of its rate.
    assert (context.trainable, context.loss) == (tags.trainable, tags.loss)
    assert full_low.trainable == () and full_low.lr * 20 == pytest.approx(full.lr) and full_low.loss == full.loss
    # zoom: everything learns toward the starting network's own maps at 1x and 2x; only it makes its targets.
    assert zoom.trainable == () and zoom.self_distill_zoom == 2
    assert zoom.loss == replace(full.loss, heatmap=30 * full.loss.heatmap)
    assert all(config.self_distill_zoom == 0 for config in (tags, full, push, context, full_low))
    # anchored: the zoom stage with the starting maps themselves as targets (zoom 1).
    assert anchored == replace(zoom, self_distill_zoom=1)
    # tag-decoder: only the tags' own decoder and head learn, at the tags stage's loss.
    net = build_network(tag_decoder.model)
    freeze(net, tag_decoder.trainable)
    learning = {name.split(".")[0] for name, p in net.named_parameters() if p.requires_grad}
    assert learning == {"tag_top", "tag_laterals", "tag_merges", "tag_head"} and tag_decoder.loss == tags.loss


def test_every_phase_is_in_the_table_and_printed_once(tmp_path: Path, capsys, monkeypatch) -> None:
    from tagtrack.training.recipes.default_model import PHASE_CONFIGS, PRETRAINED_STAGES, main, pretrained_config

    assert {"1", "2", "3", "5", "6", "6b", "7", "7-width96", "8", "9"} <= set(PHASE_CONFIGS)
    assert PHASE_CONFIGS["8"](tmp_path) == phase8_config(tmp_path)
    assert PHASE_CONFIGS["7-width96"](tmp_path) == phase7_config(tmp_path, 96)
    for stage in PRETRAINED_STAGES:
        assert PHASE_CONFIGS[f"pretrained-{stage}"](tmp_path) == pretrained_config(tmp_path, stage)
    monkeypatch.setattr("sys.argv", ["default_model", "--root", str(tmp_path), "phases"])
    assert main() == 0
    rows = capsys.readouterr().out.splitlines()
    assert [row.split()[0] for row in rows] == list(PHASE_CONFIGS)
    assert "mobilenet_fpn_context" in rows[list(PHASE_CONFIGS).index("pretrained-context")]
    assert "lr 1e-05" in rows[list(PHASE_CONFIGS).index("pretrained-full-low")]
