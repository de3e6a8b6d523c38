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
from tagtrack.model.mobilenet_fpn import MobileNetFPN, MobileNetFPNContext, MobileNetFPNTagDecoder

NETWORK_FAMILIES: dict[str, type[torch.nn.Module]] = {
    "hourglass": HourglassNet,
    "mobilenet_fpn": MobileNetFPN,  # MoveNet MultiPose's network, importable from its ONNX file
    "mobilenet_fpn_context": MobileNetFPNContext,  # the same with a tag head that sees position and a wide view
    "mobilenet_fpn_tag_decoder": MobileNetFPNTagDecoder,  # the same with a decoder of its own for the tags
}

# Families that share their encoder, decoder and heatmap head: a checkpoint of one starts a run of another
# (`trunk_state_dict`).
TRUNKS = {"mobilenet_fpn": "mobilenet_fpn", "mobilenet_fpn_context": "mobilenet_fpn",
          "mobilenet_fpn_tag_decoder": "mobilenet_fpn"}
TAG_HEAD_PREFIX = "tag_head."
# A family's layers under this prefix that the starting family lacks start as a copy of the layers of the name
# without it: the tags' own decoder (`MobileNetFPNTagDecoder`) starts as the heatmaps' decoder.
TAG_COPY_PREFIX = "tag_"


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


def shares_trunk(initial: ModelConfig, config: ModelConfig) -> bool:
    """Whether INITIAL's weights start CONFIG's network everywhere but the tag head (another family of one trunk)."""
    return (initial.family != config.family and TRUNKS.get(initial.family) is not None
            and TRUNKS.get(initial.family) == TRUNKS.get(config.family) and initial.num_keypoints == config.num_keypoints)


def trunk_state_dict(initial: torch.nn.Module, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """MODEL's state with every tensor the two families share taken from INITIAL: the tag head too when it is the
    same head (same names and shapes; another kind of head stays MODEL's own, new), and layers INITIAL lacks under
    TAG_COPY_PREFIX copied from the layers they copy (so MODEL starts computing what INITIAL did)."""
    theirs = initial.state_dict()
    state = model.state_dict()
    head = [name for name in state if name.startswith(TAG_HEAD_PREFIX)]
    same_head = all(name in theirs and theirs[name].shape == state[name].shape for name in head)
    for name, tensor in state.items():
        if name.startswith(TAG_HEAD_PREFIX):
            if not same_head:
                continue
            source = name
        elif name not in theirs and name.startswith(TAG_COPY_PREFIX):
            source = name[len(TAG_COPY_PREFIX):]
        else:
            source = name
        if source not in theirs or theirs[source].shape != tensor.shape:
            raise ValueError(f"the initial network has no {source} of shape {tuple(tensor.shape)}")
        state[name] = theirs[source].to(tensor.dtype)
    return state
