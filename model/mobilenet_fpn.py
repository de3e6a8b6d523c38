"""MobileNetV2 (x1.5) encoder with an FPN decoder and associative-embedding heads: the network of MoveNet
MultiPose Lightning, so that it can start from that model's weights (`model/teacher_import.py`).

The encoder is MobileNetV2 at width x1.5 with ReLU6 and batch norm folded into every conv's bias (there are no
BN layers). The decoder is one encoder-decoder with a skip at every scale (the shape of one hourglass): the
stride-32 features reduced to 64 channels, up-sampled x2 (bilinear) and added to a lateral 1x1 of the stride-16
features, refined by a separable conv, and so on down to 24 channels at stride 4. The heads are MoveNet's head
shape (depthwise 3x3, 1x1 to 96, ReLU, 1x1): K heatmaps (sigmoid, initialised from the teacher's keypoint
heatmap head) and K*L tags (a new head). Same output contract as the hourglass: heatmaps [B,K,H/4,W/4] and tags
[B,K,L,H/4,W/4] from [0,1] RGB; input sides multiples of 32.

Stride-2 convs pad as TensorFlow's "SAME" does (the extra row and column after, i.e. right and bottom):
symmetric padding shifts every feature by half a pixel and the imported heatmaps would be wrong.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from tagtrack.model.config import OUTPUT_STRIDE, ModelConfig

HeatmapsAndTags = tuple[torch.Tensor, torch.Tensor]

# MoveNet's input scaling in its graph: u8 * (1/127.5 rounded to fp16) - 1. Our input is u8 / 255.
INPUT_SCALE = 255.0 * 0.007843017578125

STEM_CHANNELS = 48
# (expansion, output channels, repeats, first stride) of the inverted-residual stages, MobileNetV2 x1.5.
STAGES = ((1, 24, 1, 1), (6, 40, 2, 2), (6, 48, 3, 2), (6, 96, 4, 2), (6, 144, 3, 1), (6, 240, 3, 2), (6, 480, 1, 1))
LAST_CHANNELS = 1280
# The decoder: (lateral block index, lateral channels, channels after the merge's separable conv), stride 16 to 4.
# The laterals are the last block at each stride (stride 16: the last 96-channel block, not the 144 ones).
FPN_TOP_CHANNELS = 64
FPN_LEVELS = ((9, 96, 32), (5, 48, 24), (2, 40, 24))
HEAD_HIDDEN = 96
# The context tag head (MobileNetFPNContext): channels, and the dilations of its separable convs. Their 3x3 views
# add up to +-31 cells (+-124 input pixels), about a close-up's torso or a street walker and her neighbours.
CONTEXT_CHANNELS = 64
CONTEXT_DILATIONS = (1, 2, 4, 8, 16)
# Position channels count cells from the top-left corner in units of this many cells, whatever the input size,
# so that two people the same distance apart differ by the same amount at every input size.
POSITION_UNIT_CELLS = 64.0


def same_padded_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                     groups: int = 1) -> nn.Sequential:
    """A conv padded as TensorFlow's SAME (for the even sides inputs in multiples of 32 give): stride 1 pads
    k//2 on every side, stride 2 pads k-2 after only. Index 1 is the conv (named for weight import)."""
    if stride == 1:
        pad = nn.ZeroPad2d(kernel_size // 2)
    else:
        pad = nn.ZeroPad2d((0, kernel_size - stride, 0, kernel_size - stride))
    return nn.Sequential(pad, nn.Conv2d(in_channels, out_channels, kernel_size, stride, groups=groups))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand + ReLU6 (not in the first block), depthwise 3x3 + ReLU6, linear 1x1
    project, and a skip when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand = nn.Conv2d(in_channels, hidden, 1) if expansion != 1 else None
        self.depthwise = same_padded_conv(hidden, hidden, 3, stride, groups=hidden)
        self.project = nn.Conv2d(hidden, out_channels, 1)
        self.residual = stride == 1 and in_channels == out_channels
        self.relu6 = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu6(self.expand(x)) if self.expand is not None else x
        y = self.project(self.relu6(self.depthwise(y)))
        return x + y if self.residual else y

    def convs(self) -> list[nn.Conv2d]:
        return ([self.expand] if self.expand is not None else []) + [self.depthwise[1], self.project]


class Separable(nn.Module):
    """Depthwise 3x3 then pointwise 1x1 (no activation between them), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = same_padded_conv(in_channels, in_channels, 3, groups=in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pointwise(self.depthwise(x)))

    def convs(self) -> list[nn.Conv2d]:
        return [self.depthwise[1], self.pointwise]


class Head(nn.Module):
    """MoveNet's head shape: depthwise 3x3, 1x1 to 96 + ReLU, 1x1 to the outputs."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = same_padded_conv(in_channels, in_channels, 3, groups=in_channels)
        self.hidden = nn.Conv2d(in_channels, HEAD_HIDDEN, 1)
        self.out = nn.Conv2d(HEAD_HIDDEN, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(self.depthwise(x))))

    def convs(self) -> list[nn.Conv2d]:
        return [self.depthwise[1], self.hidden, self.out]


def decoder_layers() -> tuple[nn.Conv2d, nn.ModuleList, nn.ModuleList]:
    """MoveNet's decoder: the 1x1 from the encoder's top, and per level a lateral 1x1 and a separable merge."""
    top = nn.Conv2d(LAST_CHANNELS, FPN_TOP_CHANNELS, 1)
    laterals, merges = nn.ModuleList(), nn.ModuleList()
    channels = FPN_TOP_CHANNELS
    for _, lateral_channels, out_channels in FPN_LEVELS:
        laterals.append(nn.Conv2d(lateral_channels, channels, 1))
        merges.append(Separable(channels, out_channels))
        channels = out_channels
    return top, laterals, merges


class MobileNetFPN(nn.Module):
    """images float32 [B,3,H,W] RGB in [0,1], H and W multiples of 32 ->
    heatmaps [B,K,H/4,W/4] in [0,1] and tags [B,K,L,H/4,W/4]."""

    input_multiple: ClassVar[int] = 32  # five stride-2 steps

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.stem = same_padded_conv(3, STEM_CHANNELS, 3, stride=2)
        blocks, channels = [], STEM_CHANNELS
        for expansion, out_channels, repeats, stride in STAGES:
            for repeat in range(repeats):
                blocks.append(InvertedResidual(channels, out_channels, stride if repeat == 0 else 1, expansion))
                channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.last = nn.Conv2d(channels, LAST_CHANNELS, 1)
        self.top, self.laterals, self.merges = decoder_layers()
        channels = FPN_LEVELS[-1][2]
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.relu6 = nn.ReLU6()
        k, dim = config.num_keypoints, config.tag_dim
        self.heatmap_head = Head(channels, k)
        self.tag_head = Head(channels, k * dim)
        nn.init.normal_(self.tag_head.out.weight, std=0.01)
        nn.init.zeros_(self.tag_head.out.bias)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """The encoder's 1280 channels at stride 32 and the blocks' outputs the decoder's laterals take."""
        x = self.relu6(self.stem(images * INPUT_SCALE - 1.0))
        taps = {}
        for index, block in enumerate(self.blocks):
            x = block(x)
            taps[index] = x
        return self.relu6(self.last(x)), taps

    def decode(self, encoded: torch.Tensor, taps: dict[int, torch.Tensor], top: nn.Conv2d, laterals: nn.ModuleList,
               merges: nn.ModuleList) -> torch.Tensor:
        """A decoder's (`decoder_layers`) 24 channels at stride 4."""
        x = top(encoded)
        for (tap, _, _), lateral, merge in zip(FPN_LEVELS, laterals, merges):
            x = merge(self.upsample(x) + lateral(taps[tap]))
        return x

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The decoder's 24 channels at stride 4."""
        encoded, taps = self.encode(images)
        return self.decode(encoded, taps, self.top, self.laterals, self.merges)

    def forward_stacks(self, images: torch.Tensor) -> list[HeatmapsAndTags]:
        """[(heatmaps, tags)]: one 'stack', so training's intermediate supervision sees one output."""
        self._check_input(images)
        features = self.features(images)
        return [(torch.sigmoid(self.heatmap_head(features)), self._tag_maps(self.tag_head(features), images))]

    def _tag_maps(self, tags: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """A tag head's [B,K*L,H/4,W/4] output as the tags [B,K,L,H/4,W/4] of these images."""
        batch, _, height, width = images.shape
        return tags.reshape(batch, self.config.num_keypoints, self.config.tag_dim, height // OUTPUT_STRIDE,
                            width // OUTPUT_STRIDE)

    def forward(self, images: torch.Tensor) -> HeatmapsAndTags:
        return self.forward_stacks(images)[-1]

    def encoder_decoder_convs(self) -> list[nn.Conv2d]:
        """Every conv before the heads, in the order MoveNet's graph computes them (the import's order)."""
        convs = [self.stem[1]]
        for block in self.blocks:
            convs += block.convs()
        convs += [self.last, self.top]
        for lateral, merge in zip(self.laterals, self.merges):
            convs += [lateral, *merge.convs()]
        return convs

    def _check_input(self, images: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B,3,H,W], got {tuple(images.shape)}")
        height, width = images.shape[2], images.shape[3]
        if height % self.input_multiple or width % self.input_multiple:
            raise ValueError(f"input size {height}x{width} must be a multiple of {self.input_multiple}")


class ContextTagHead(nn.Module):
    """Tags from a wide view: the decoder's features, the heatmaps (detached: tags never move them) and each cell's
    position in, then separable 3x3 convs at growing dilations with residual adds, then 1x1 to the K*L tags.
    The plain head sees 3x3 cells of 24 features, too little to tell apart two small people side by side."""

    def __init__(self, feature_channels: int, num_keypoints: int, out_channels: int) -> None:
        super().__init__()
        self.inp = nn.Conv2d(feature_channels + num_keypoints + 2, CONTEXT_CHANNELS, 1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(CONTEXT_CHANNELS, CONTEXT_CHANNELS, 3, padding=dilation, dilation=dilation,
                                    groups=CONTEXT_CHANNELS),
                          nn.Conv2d(CONTEXT_CHANNELS, CONTEXT_CHANNELS, 1))
            for dilation in CONTEXT_DILATIONS)
        self.out = nn.Conv2d(CONTEXT_CHANNELS, out_channels, 1)

    def forward(self, features: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.inp(torch.cat([features, heatmaps.detach(), cell_positions(features)], dim=1)))
        for block in self.blocks:
            x = x + torch.relu(block(x))
        return self.out(x)


def cell_positions(features: torch.Tensor) -> torch.Tensor:
    """[B,2,H,W]: each cell's row and column in units of POSITION_UNIT_CELLS."""
    batch, _, height, width = features.shape
    rows = torch.arange(height, dtype=features.dtype, device=features.device) / POSITION_UNIT_CELLS
    columns = torch.arange(width, dtype=features.dtype, device=features.device) / POSITION_UNIT_CELLS
    return torch.stack([rows.view(height, 1).expand(height, width),
                        columns.view(1, width).expand(height, width)]).unsqueeze(0).expand(batch, 2, height, width)


class MobileNetFPNContext(MobileNetFPN):
    """MobileNetFPN with the context tag head: the same encoder, decoder and heatmap head (so it starts from a
    `mobilenet_fpn` checkpoint, `networks.trunk_state_dict`), tags that see position and a wide neighbourhood."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        k, dim = config.num_keypoints, config.tag_dim
        self.tag_head = ContextTagHead(FPN_LEVELS[-1][2], k, k * dim)
        nn.init.normal_(self.tag_head.out.weight, std=0.01)
        nn.init.zeros_(self.tag_head.out.bias)

    def forward_stacks(self, images: torch.Tensor) -> list[HeatmapsAndTags]:
        self._check_input(images)
        features = self.features(images)
        heatmaps = torch.sigmoid(self.heatmap_head(features))
        return [(heatmaps, self._tag_maps(self.tag_head(features, heatmaps), images))]


class MobileNetFPNTagDecoder(MobileNetFPN):
    """MobileNetFPN whose tags have a decoder of their own (`tag_top`, `tag_laterals`, `tag_merges`: the same
    layers as the heatmaps' decoder) on the shared encoder. The tags can then learn features of their own while
    the heatmaps stay exactly what the encoder, decoder and heatmap head make: training the shared decoder for
    the tags moved MoveNet's maps and lost detections (the model card's zoom and anchored stages). Started from a
    `mobilenet_fpn` checkpoint (`networks.trunk_state_dict`), the tags' decoder is a copy of the heatmaps' and
    the network computes exactly what that checkpoint did."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.tag_top, self.tag_laterals, self.tag_merges = decoder_layers()

    def forward_stacks(self, images: torch.Tensor) -> list[HeatmapsAndTags]:
        self._check_input(images)
        encoded, taps = self.encode(images)
        heatmaps = torch.sigmoid(self.heatmap_head(self.decode(encoded, taps, self.top, self.laterals, self.merges)))
        tag_features = self.decode(encoded, taps, self.tag_top, self.tag_laterals, self.tag_merges)
        return [(heatmaps, self._tag_maps(self.tag_head(tag_features), images))]
