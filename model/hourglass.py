"""Stacked hourglass network (Newell et al.) with associative-embedding heads.

Every stack predicts K heatmaps and K*L tag channels at 1/4 of the input size. Merge layers feed
each stack's features and predictions into the next one (intermediate supervision). With
`output_stride` 2 a finer head on the last stack (HigherHRNet's idea) turns its heatmaps into maps at
1/2 of the input size, and every stack's maps are returned at that size. All up-sampling is by a fixed
factor 2, so the graph has no data-dependent shapes and exports cleanly to ONNX / TensorRT.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional

from tagtrack.model.config import INPUT_MULTIPLE, OUTPUT_STRIDE, ModelConfig

# ImageNet statistics; the network normalises its [0,1] RGB input itself so that every engine
# (torch, ONNX Runtime, TensorRT) is fed the same plain tensor.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

HOURGLASS_DEPTH = 4  # max-pool down-samplings per hourglass
assert INPUT_MULTIPLE == OUTPUT_STRIDE * 2**HOURGLASS_DEPTH  # config's input-size check is this network's

HeatmapsAndTags = tuple[torch.Tensor, torch.Tensor]


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, -(-value // multiple) * multiple)


class ConvBnRelu(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Residual(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-1x1 (half width), BN-ReLU-3x3, BN-ReLU-1x1, plus a skip."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = max(out_channels // 2, 1)
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=False),  # the input is also used by the skip, so no in-place here
            nn.Conv2d(in_channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class Hourglass(nn.Module):
    """One hourglass level; recursion builds `depth` levels, each adding `increase` channels."""

    def __init__(self, depth: int, channels: int, increase: int) -> None:
        super().__init__()
        inner = channels + increase
        self.skip = Residual(channels, channels)
        self.pool = nn.MaxPool2d(2, 2)
        self.down = Residual(channels, inner)
        self.inner: nn.Module = Hourglass(depth - 1, inner, increase) if depth > 1 else Residual(inner, inner)
        self.up = Residual(inner, channels)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.up(self.inner(self.down(self.pool(x))))
        return self.skip(x) + self.upsample(low)


FINE_STEM_LAYERS = 2  # the stem's layers before its max-pool: their output is at stride 2
FINE_WIDTH = 32  # channels of the finer heatmap head


class Stem(nn.Module):
    """Down-samples by 4: 7x7 stride-2 conv, residual, max-pool, two residuals (as in Newell et al.,
    with the 64/128 stem channels of the 256-wide model scaled to the configured width)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        # Multiples of 8 keep fp16 tensor-core kernels efficient.
        first = _round_up(width // 4, 8)
        second = _round_up(width // 2, 8)
        self.fine_channels = second  # of the stride-2 features `forward_with_fine` returns
        self.layers = nn.Sequential(
            ConvBnRelu(3, first, 7, stride=2),
            Residual(first, second),
            nn.MaxPool2d(2, 2),
            Residual(second, second),
            Residual(second, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def forward_with_fine(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the stem's output at stride 4, its features at stride 2 before the pooling)."""
        fine = self.layers[:FINE_STEM_LAYERS](x)
        return self.layers[FINE_STEM_LAYERS:](fine), fine


class FineHeatmaps(nn.Module):
    """Heatmaps at stride 2 from the last stack (HigherHRNet's deconvolution module, small): its features and
    heatmaps reduced to FINE_WIDTH channels and up-sampled by a learned transposed convolution, the stem's
    stride-2 features added (where two walkers side by side that one stride-4 cell holds are still apart), a
    residual, and a 1x1 head whose output corrects the stack's heatmaps up-sampled bilinearly. The head starts at
    zero, so an untrained FineHeatmaps returns the stack's own heatmaps, up-sampled. 0.47 GFLOPs at 256x384
    with the default's width 64 (`count_flops`: 1.88 against 1.41)."""

    def __init__(self, config: ModelConfig, stem_channels: int) -> None:
        super().__init__()
        k = config.num_keypoints
        self.reduce = ConvBnRelu(config.width + k, FINE_WIDTH, 1)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(FINE_WIDTH, FINE_WIDTH, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(FINE_WIDTH),
            nn.ReLU(inplace=True),
        )
        self.stem = nn.Conv2d(stem_channels, FINE_WIDTH, 1)
        self.refine = Residual(FINE_WIDTH, FINE_WIDTH)
        self.head = nn.Conv2d(FINE_WIDTH, k, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, features: torch.Tensor, heatmaps: torch.Tensor, stem_fine: torch.Tensor) -> torch.Tensor:
        x = self.up(self.reduce(torch.cat([features, heatmaps], dim=1))) + self.stem(stem_fine)
        return upsample_heatmaps(heatmaps) + self.head(self.refine(x))


def upsample_heatmaps(heatmaps: torch.Tensor) -> torch.Tensor:
    """x2 bilinear, pixel centres aligned as the map coordinates are (x_map = (x_input + 0.5) / stride - 0.5)."""
    return functional.interpolate(heatmaps, scale_factor=2, mode="bilinear", align_corners=False)


def upsample_tags(tags: torch.Tensor) -> torch.Tensor:
    """x2 nearest: a fine cell takes its coarse cell's tag, never a blend of two people's."""
    return functional.interpolate(tags, scale_factor=2, mode="nearest")


class Stack(nn.Module):
    """One hourglass with its feature layers and heatmap / tag heads."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width = config.width
        k, dim = config.num_keypoints, config.tag_dim
        self.hourglass = Hourglass(HOURGLASS_DEPTH, width, config.increase)
        self.features = nn.Sequential(Residual(width, width), ConvBnRelu(width, width, 1))
        self.heatmap_head = nn.Conv2d(width, k, 1)
        self.tag_head = nn.Conv2d(width, k * dim, 1)
        # Targets are mostly zero: start the heatmaps near zero so the first steps don't fight
        # a large random offset everywhere.
        nn.init.normal_(self.heatmap_head.weight, std=0.001)
        nn.init.zeros_(self.heatmap_head.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.features(self.hourglass(x))
        return features, self.heatmap_head(features), self.tag_head(features)


class Merge(nn.Module):
    """Feeds a stack's features and predictions back into the residual stream for the next stack."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        prediction_channels = config.num_keypoints * (1 + config.tag_dim)
        self.features = nn.Conv2d(config.width, config.width, 1)
        self.predictions = nn.Conv2d(prediction_channels, config.width, 1)

    def forward(self, x: torch.Tensor, features: torch.Tensor, heatmaps: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        return x + self.features(features) + self.predictions(torch.cat([heatmaps, tags], dim=1))


class HourglassNet(nn.Module):
    """images float32 [B,3,H,W] RGB in [0,1], H and W multiples of 64 ->
    heatmaps [B,K,H/s,W/s] and tags [B,K,L,H/s,W/s], s the config's output_stride (4, or 2 with FineHeatmaps)."""

    input_multiple: ClassVar[int] = INPUT_MULTIPLE

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # Constants, not learned: kept out of the state dict so checkpoints hold only weights.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.stem = Stem(config.width)
        self.stacks = nn.ModuleList(Stack(config) for _ in range(config.num_stacks))
        self.merges = nn.ModuleList(Merge(config) for _ in range(config.num_stacks - 1))
        self.fine = FineHeatmaps(config, self.stem.fine_channels) if config.output_stride != OUTPUT_STRIDE else None

    def forward_stacks(self, images: torch.Tensor) -> list[HeatmapsAndTags]:
        """(heatmaps, tags) of every stack, first to last, for intermediate supervision."""
        self._check_input(images)
        batch, _, height, width = images.shape
        out_h, out_w = height // self.config.output_stride, width // self.config.output_stride
        k, dim = self.config.num_keypoints, self.config.tag_dim
        normalised = (images - self.mean) / self.std
        if self.fine is None:
            x, stem_fine = self.stem(normalised), None
        else:
            x, stem_fine = self.stem.forward_with_fine(normalised)
        outputs: list[HeatmapsAndTags] = []
        for index, stack in enumerate(self.stacks):
            features, heatmaps, tags = stack(x)
            if index < len(self.merges):
                x = self.merges[index](x, features, heatmaps, tags)
            if self.fine is not None:
                last = index == len(self.stacks) - 1
                tags = upsample_tags(tags)
                heatmaps = self.fine(features, heatmaps, stem_fine) if last else upsample_heatmaps(heatmaps)
            outputs.append((heatmaps, tags.reshape(batch, k, dim, out_h, out_w)))
        return outputs

    def forward(self, images: torch.Tensor) -> HeatmapsAndTags:
        """(heatmaps, tags) of the last stack."""
        return self.forward_stacks(images)[-1]

    def _check_input(self, images: torch.Tensor) -> None:
        # Shapes are concrete ints at trace/export time, so this check adds nothing to the graph.
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B,3,H,W], got {tuple(images.shape)}")
        height, width = images.shape[2], images.shape[3]
        if height % INPUT_MULTIPLE or width % INPUT_MULTIPLE:
            raise ValueError(f"input size {height}x{width} must be a multiple of {INPUT_MULTIPLE}")


class AllStacks(nn.Module):
    """`forward` returns every stack's (heatmaps, tags), i.e. `net.forward_stacks`.

    For training under DistributedDataParallel, which synchronises gradients only through
    `forward`: wrap as `DistributedDataParallel(AllStacks(net))`, and save `net` itself.
    """

    def __init__(self, net: nn.Module) -> None:  # any network family (model/networks.py)
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> list[HeatmapsAndTags]:
        return self.net.forward_stacks(images)


def count_flops(config: ModelConfig) -> float:
    """GFLOPs (multiply and add counted separately) of one forward pass of batch 1 at the config input size."""
    from torch.utils.flop_counter import FlopCounterMode

    model = HourglassNet(config).eval()
    images = torch.zeros(1, 3, config.input_height, config.input_width)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(images)
    return counter.get_total_flops() / 1e9


def widened_state_dict(narrow: HourglassNet, wide: HourglassNet) -> dict[str, torch.Tensor]:
    """WIDE's state dict with NARROW's weights embedded so that WIDE computes NARROW's maps exactly.

    For growing a trained network (more width or increase, same stacks, keypoints and tag length): every
    channel dimension of NARROW is a leading slice of WIDE's. The old weights go into that slice; the weights
    from new input channels into old output channels are zero, so the old channels compute what they did
    and the heads see only them; new output channels keep WIDE's random initialisation and start to matter
    as soon as training moves those zeros (Net2Net's idea, with zero instead of copied units).
    """
    narrow_state, state = narrow.state_dict(), wide.state_dict()
    if narrow_state.keys() != state.keys():
        raise ValueError(f"cannot widen a {narrow.config.describe()} network to a {wide.config.describe()} one: "
                         "the layers differ (stacks, or depth)")
    widened = {}
    for name, new in state.items():
        old = narrow_state[name]
        if old.dim() != new.dim() or any(o > n for o, n in zip(old.shape, new.shape)):
            raise ValueError(f"cannot widen a {narrow.config.describe()} network to a {wide.config.describe()} "
                             f"one: {name} is {tuple(old.shape)} there and {tuple(new.shape)} here")
        new = new.clone()
        if old.dim() == 0:
            new = old.clone()
        elif old.dim() == 1:
            new[: old.shape[0]] = old
        else:
            new[: old.shape[0]] = 0
            new[tuple(slice(0, size) for size in old.shape)] = old
        widened[name] = new
    return widened


def refined_state_dict(coarse: HourglassNet, fine: HourglassNet) -> dict[str, torch.Tensor]:
    """FINE's state dict with COARSE's weights everywhere but the finer heatmap head, which keeps its
    initialisation, so that FINE starts computing COARSE's heatmaps up-sampled (`FineHeatmaps`)."""
    coarse_state, state = coarse.state_dict(), fine.state_dict()
    shared = [name for name in state if not name.startswith("fine.")]
    if set(shared) != set(coarse_state):
        raise ValueError(f"cannot add a finer head to a {coarse.config.describe()} network to make a "
                         f"{fine.config.describe()} one: the other layers differ")
    return {**state, **{name: coarse_state[name].clone() for name in shared}}
