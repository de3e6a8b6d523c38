from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tagtrack.model.config import SMALL, TINY, ModelConfig
from tagtrack.model.hourglass import AllStacks, HourglassNet, count_flops, refined_state_dict, widened_state_dict


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny(**overrides) -> ModelConfig:
    values = dict(num_stacks=1, width=16, tag_dim=1, input_height=64, input_width=64)
    values.update(overrides)
    return ModelConfig(**values)


@pytest.mark.parametrize(
    "config, height, width",
    [
        (_tiny(), 64, 64),
        (_tiny(num_stacks=2, tag_dim=8), 64, 128),
        (_tiny(num_stacks=2, width=24, increase=8, tag_dim=4, input_height=128, input_width=64), 128, 64),
        # Run-time size different from (and here smaller than) the config size.
        (_tiny(num_stacks=1, tag_dim=2, input_height=128, input_width=128), 64, 192),
        (_tiny(num_keypoints=5, tag_dim=3), 128, 64),
    ],
)
def test_output_shapes(config: ModelConfig, height: int, width: int) -> None:
    model = HourglassNet(config).eval()
    with torch.no_grad():
        heatmaps, tags = model(torch.rand(2, 3, height, width))
    k, dim = config.num_keypoints, config.tag_dim
    assert heatmaps.shape == (2, k, height // 4, width // 4)
    assert tags.shape == (2, k, dim, height // 4, width // 4)
    assert heatmaps.dtype == torch.float32 and tags.dtype == torch.float32
    assert torch.isfinite(heatmaps).all() and torch.isfinite(tags).all()


@pytest.mark.parametrize("stacks", [1, 2, 3])
def test_forward_stacks_gives_one_prediction_per_stack_and_forward_is_the_last(stacks: int) -> None:
    torch.manual_seed(0)
    config = _tiny(num_stacks=stacks, tag_dim=2)
    model = HourglassNet(config).eval()
    images = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        outputs = model.forward_stacks(images)
        last_heatmaps, last_tags = model(images)
    assert len(outputs) == stacks
    for heatmaps, tags in outputs:
        assert heatmaps.shape == (1, 17, 16, 32)
        assert tags.shape == (1, 17, 2, 16, 32)
    torch.testing.assert_close(outputs[-1][0], last_heatmaps)
    torch.testing.assert_close(outputs[-1][1], last_tags)
    if stacks > 1:
        # The later stacks see the earlier ones' merged predictions: their tags differ.
        assert not torch.allclose(outputs[0][1], outputs[-1][1])


def test_all_stacks_wrapper_returns_forward_stacks_through_forward() -> None:
    model = HourglassNet(_tiny(num_stacks=2)).eval()
    wrapper = AllStacks(model)
    assert list(wrapper.parameters()) == list(model.parameters())  # shares, does not copy
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        wrapped, direct = wrapper(images), model.forward_stacks(images)
    assert len(wrapped) == 2
    for (h1, t1), (h2, t2) in zip(wrapped, direct):
        assert torch.equal(h1, h2) and torch.equal(t1, t2)


def test_every_stack_receives_gradient_for_intermediate_supervision() -> None:
    model = HourglassNet(_tiny(num_stacks=2)).train()
    outputs = model.forward_stacks(torch.rand(2, 3, 64, 64))
    loss = sum(h.pow(2).mean() + t.pow(2).mean() for h, t in outputs)
    loss.backward()
    for stack in model.stacks:
        assert stack.heatmap_head.weight.grad is not None
        assert stack.heatmap_head.weight.grad.abs().sum() > 0
    assert model.stem.layers[0][0].weight.grad.abs().sum() > 0


def test_tag_channels_are_grouped_per_keypoint() -> None:
    """tags[:, k, l] must come from tag-head channel k*L + l, the layout every engine relies on."""
    config = _tiny(num_keypoints=3, tag_dim=2)
    model = HourglassNet(config).eval()
    with torch.no_grad():
        model.stacks[0].tag_head.weight.zero_()
        model.stacks[0].tag_head.bias.copy_(torch.arange(6, dtype=torch.float32))
        _, tags = model(torch.rand(1, 3, 64, 64))
    for k in range(3):
        for dim in range(2):
            assert torch.all(tags[0, k, dim] == k * 2 + dim)


def test_initial_heatmaps_are_near_zero() -> None:
    torch.manual_seed(1)
    model = HourglassNet(_tiny(num_stacks=2)).eval()
    with torch.no_grad():
        heatmaps, tags = model(torch.rand(2, 3, 64, 64))
    assert heatmaps.abs().max() < 0.05
    assert tags.abs().max() > 0.05  # the tag head is not squashed


def test_normalisation_happens_inside_the_network() -> None:
    model = HourglassNet(_tiny())
    assert "mean" not in model.state_dict() and "std" not in model.state_dict()
    grey = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(1, 3, 64, 64)
    normalised = (grey - model.mean) / model.std
    assert normalised.abs().max() < 1e-6


@pytest.mark.parametrize("shape", [(1, 3, 64, 96), (1, 3, 32, 64), (1, 1, 64, 64), (3, 64, 64)])
def test_rejects_bad_input_shapes(shape: tuple[int, ...]) -> None:
    model = HourglassNet(_tiny()).eval()
    with pytest.raises(ValueError):
        model(torch.rand(*shape))


def test_count_flops_grows_with_width_stacks_and_size() -> None:
    base = count_flops(_tiny(width=16))
    assert 0 < base < 1
    assert count_flops(_tiny(width=32)) > 2.2 * base  # most convs scale quadratically in width
    two, three = count_flops(_tiny(width=16, num_stacks=2)), count_flops(_tiny(width=16, num_stacks=3))
    assert two > base
    assert three - two == pytest.approx(two - base, rel=1e-6)  # every added stack (with its merge) costs the same
    assert count_flops(_tiny(width=16, input_height=128)) == pytest.approx(2 * base, rel=0.01)


def test_presets_flops() -> None:
    assert count_flops(TINY) < 0.1
    # The real-time default is sized to about 4 GFLOPs at 256x384.
    assert 3.0 < count_flops(SMALL) < 5.0


def test_a_widened_network_computes_the_narrow_networks_maps_and_can_learn_more() -> None:
    torch.manual_seed(0)
    narrow_config = ModelConfig(num_stacks=2, width=32, increase=16, tag_dim=4, input_height=64, input_width=64)
    wide_config = ModelConfig(num_stacks=2, width=48, increase=24, tag_dim=4, input_height=64, input_width=64)
    narrow, wide = HourglassNet(narrow_config), HourglassNet(wide_config)
    narrow.train()
    with torch.no_grad():
        for _ in range(3):  # BatchNorm statistics that are not the defaults
            narrow(torch.rand(2, 3, 64, 64))
        for stack in narrow.stacks:  # heatmaps far from their near-zero start
            stack.heatmap_head.weight.normal_(std=0.1)
    wide.load_state_dict(widened_state_dict(narrow, wide))
    narrow.eval(), wide.eval()
    images = torch.rand(2, 3, 128, 64)
    with torch.no_grad():
        (narrow_heatmaps, narrow_tags), (wide_heatmaps, wide_tags) = narrow(images), wide(images)
    assert narrow_heatmaps.abs().mean() > 1e-3
    torch.testing.assert_close(wide_heatmaps, narrow_heatmaps, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(wide_tags, narrow_tags, atol=1e-5, rtol=1e-4)
    # The new channels are live: the zero weights that read them receive gradient.
    wide.train()
    heatmaps, tags = wide(images)
    (heatmaps.square().mean() + tags.square().mean()).backward()
    head = wide.stacks[-1].heatmap_head.weight
    assert head.grad[:, narrow_config.width:].abs().sum() > 0


def test_widening_refuses_networks_of_another_shape() -> None:
    narrow = HourglassNet(ModelConfig(num_stacks=1, width=32, tag_dim=4, input_height=64, input_width=64))
    with pytest.raises(ValueError, match="layers differ"):
        widened_state_dict(narrow, HourglassNet(ModelConfig(num_stacks=2, width=48, tag_dim=4)))
    with pytest.raises(ValueError, match="cannot widen"):
        widened_state_dict(narrow, HourglassNet(ModelConfig(num_stacks=1, width=16, tag_dim=4)))
    assert ModelConfig(width=32, increase=16).widens_to(ModelConfig(width=48, increase=16))
    assert not ModelConfig(width=32).widens_to(ModelConfig(width=32))
    assert not ModelConfig(width=32).widens_to(ModelConfig(width=48, tag_dim=2))


@pytest.mark.parametrize("stacks", [1, 2])
def test_a_stride_2_network_returns_every_stacks_maps_at_half_the_input_size(stacks: int) -> None:
    torch.manual_seed(0)
    model = HourglassNet(_tiny(num_stacks=stacks, tag_dim=2, output_stride=2)).eval()
    with torch.no_grad():
        outputs = model.forward_stacks(torch.rand(1, 3, 64, 128))
    assert len(outputs) == stacks
    for heatmaps, tags in outputs:
        assert heatmaps.shape == (1, 17, 32, 64)
        assert tags.shape == (1, 17, 2, 32, 64)
        # Tags are the stride-4 tags up-sampled by nearest: each 2x2 block holds one value, never a blend.
        torch.testing.assert_close(tags, tags[..., ::2, ::2].repeat_interleave(2, -2).repeat_interleave(2, -1))


def test_a_finer_head_starts_at_the_coarse_networks_maps_and_learns() -> None:
    torch.manual_seed(0)
    coarse_config = ModelConfig(num_stacks=1, width=32, increase=16, tag_dim=4, input_height=64, input_width=64)
    fine_config = replace(coarse_config, output_stride=2)
    assert coarse_config.refines_to(fine_config) and not fine_config.refines_to(coarse_config)
    assert not coarse_config.refines_to(ModelConfig(num_stacks=1, width=48, increase=16, tag_dim=4, output_stride=2))
    coarse, fine = HourglassNet(coarse_config), HourglassNet(fine_config)
    with torch.no_grad():
        coarse.stacks[0].heatmap_head.weight.normal_(std=0.1)  # heatmaps far from their near-zero start
    fine.load_state_dict(refined_state_dict(coarse, fine))
    coarse.eval(), fine.eval()
    images = torch.rand(2, 3, 64, 128)
    with torch.no_grad():
        (coarse_heatmaps, coarse_tags), (fine_heatmaps, fine_tags) = coarse(images), fine(images)
    assert coarse_heatmaps.abs().mean() > 1e-3
    upsampled = torch.nn.functional.interpolate(coarse_heatmaps, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(fine_heatmaps, upsampled)
    torch.testing.assert_close(fine_tags[..., ::2, ::2], coarse_tags)
    # The head's zero start is not a dead end: its weights and the layers before it receive gradient.
    fine.train()
    heatmaps, _ = fine(images)
    heatmaps.square().mean().backward()
    assert fine.fine.head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="other layers differ"):
        refined_state_dict(HourglassNet(_tiny()), fine)


def test_only_the_hourglass_has_a_stride_2_head() -> None:
    with pytest.raises(ValueError, match="output stride 3"):
        _tiny(output_stride=3)
    with pytest.raises(ValueError, match="output stride 2"):
        ModelConfig(family="mobilenet_fpn", output_stride=2)
    # Checkpoints written before the field existed are stride 4.
    assert ModelConfig.from_dict(dict(num_stacks=1, width=16)).output_stride == 4
    assert _tiny(output_stride=2).output_height == 32 and "stride-2" in _tiny(output_stride=2).describe()
