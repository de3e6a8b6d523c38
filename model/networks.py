"""The table of network families: a checkpoint's `ModelConfig.family` names the class that is rebuilt from it.

Every family keeps one output contract, so the codec, engines, tracker and outputs never see which one runs:
[0,1] RGB images [B,3,H,W] in, heatmaps [B,K,H/4,W/4] and tags [B,K,L,H/4,W/4] out; `forward_stacks` gives
each stack's (heatmaps, tags) for training; the class attribute `input_multiple` is what input sides must be
multiples of. A new family is its own module plus one entry here.
"""

from __future__ import annotations

import torch

from tagtrack.model.config import ModelConfig
from tagtrack.model.hourglass import AllStacks, HourglassNet
from tagtrack.model.mobilenet_fpn import MobileNetFPN

NETWORK_FAMILIES: dict[str, type[torch.nn.Module]] = {
    "hourglass": HourglassNet,
    "mobilenet_fpn": MobileNetFPN,  # MoveNet MultiPose's network, importable from its ONNX file
}


def network_class(family: str) -> type[torch.nn.Module]:
    if family not in NETWORK_FAMILIES:
        raise ValueError(f"unknown network family {family!r} (this app knows: {', '.join(NETWORK_FAMILIES)})")
    return NETWORK_FAMILIES[family]


def build_network(config: ModelConfig) -> torch.nn.Module:
    """The (randomly initialised) network a config describes."""
    return network_class(config.family)(config)


def is_network(module: object) -> bool:
    return isinstance(module, tuple(NETWORK_FAMILIES.values()))


def unwrap_network(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside DistributedDataParallel and AllStacks wrappers."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    if isinstance(model, AllStacks):
        model = model.net
    return model
