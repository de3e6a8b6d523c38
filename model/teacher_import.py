"""Import MoveNet MultiPose's weights from its ONNX file into a `MobileNetFPN` (a pretrained start).

The ONNX file holds every weight of the teacher's network as initializers of its Conv nodes. The import walks
the graph: the encoder-decoder's convs in graph order must match ours one for one (weight shape, groups,
strides, SAME padding), the decoder's laterals must read the blocks ours read, and the keypoint heatmap head
is found by its node-name prefix. Anything else is refused with one `UserFacingError`: a file that is not this
network never gives a silently wrong model. The tag head is new (random, small); the heatmap head is the
teacher's, so at step 0 the heatmaps are the teacher's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tagtrack.model.config import ModelConfig
from tagtrack.model.errors import UserFacingError, import_extra
from tagtrack.model.mobilenet_fpn import FPN_LEVELS, MobileNetFPN

log = logging.getLogger(__name__)

ENCODER_PREFIX = "center_net_mobile_net_v2fpn_feature_extractor/"
HEATMAP_HEAD_PREFIX = "kpt_heatmap_0/"
# MoveNet MultiPose Lightning, Apache-2.0: recorded in the checkpoint's metadata and the model card.
LINEAGE = "initialised from Google's MoveNet MultiPose Lightning (Apache-2.0; model/weights/MODEL_CARD.md, its credit and licence)"


@dataclass(frozen=True)
class OnnxConv:
    name: str
    input: str
    output: str
    weight: np.ndarray
    bias: np.ndarray | None
    strides: tuple[int, ...]
    group: int
    same_padding: bool  # auto_pad SAME_UPPER, or explicit pads equal to it


def mobilenet_fpn_config(tag_dim: int = 4, num_keypoints: int = 17, input_hw: tuple[int, int] = (256, 256),
                         family: str = "mobilenet_fpn") -> ModelConfig:
    """The config of a MoveNet-shaped family (its layers are fixed; only the tags and keypoints vary)."""
    return ModelConfig(family=family, num_stacks=1, width=24, increase=0, tag_dim=tag_dim,
                       num_keypoints=num_keypoints, input_height=input_hw[0], input_width=input_hw[1])


def import_teacher(onnx_path: str | Path, tag_dim: int = 4, input_hw: tuple[int, int] = (256, 256)) -> MobileNetFPN:
    """A MobileNetFPN whose encoder, decoder and heatmap head hold the teacher's weights."""
    graph = _load_graph(Path(onnx_path))
    convs = _conv_nodes(graph, Path(onnx_path))
    net = MobileNetFPN(mobilenet_fpn_config(tag_dim, 17, input_hw))
    what = f"{onnx_path} is not MoveNet MultiPose's network"
    body = [conv for conv in convs if conv.name.startswith(ENCODER_PREFIX)]
    ours = net.encoder_decoder_convs()
    if len(body) != len(ours):
        raise UserFacingError(f"{what}: {len(body)} encoder-decoder convs, expected {len(ours)}")
    for index, (theirs, mine) in enumerate(zip(body, ours)):
        _copy(theirs, mine, f"{what}: conv {index} ({theirs.name.split(';')[0]})")
    _check_laterals(body, net, what)
    head = [conv for conv in convs if conv.name.startswith(HEATMAP_HEAD_PREFIX)]
    if len(head) != 3:
        raise UserFacingError(f"{what}: no keypoint heatmap head ({len(head)} convs named {HEATMAP_HEAD_PREFIX}*)")
    for theirs, mine in zip(head, net.heatmap_head.convs()):
        _copy(theirs, mine, f"{what}: heatmap head conv {theirs.name.split(';')[0]}")
    log.info("imported %d convs from %s", len(body) + len(head), onnx_path)
    return net.eval()


def _load_graph(path: Path):
    onnx = import_extra("onnx", "export", "importing a teacher's ONNX file (tagtrack import-teacher)")
    if not path.is_file():
        raise UserFacingError(f"teacher ONNX file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as error:  # protobuf's DecodeError and friends: a truncated or foreign file
        raise UserFacingError(f"{path} is not a readable ONNX file ({type(error).__name__})") from None
    if not model.graph.node:
        raise UserFacingError(f"{path} is not a readable ONNX file (no graph)")
    return model.graph


def _conv_nodes(graph, path: Path) -> list[OnnxConv]:
    from onnx import helper, numpy_helper

    weights = {init.name: init for init in graph.initializer}
    convs = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if len(node.input) < 2 or node.input[1] not in weights:
            raise UserFacingError(f"{path}: conv {node.name} has no stored weight")
        weight = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)
        bias = numpy_helper.to_array(weights[node.input[2]]).astype(np.float32) if len(node.input) > 2 else None
        kernel = weight.shape[2:]
        strides = tuple(attributes.get("strides", [1, 1]))
        auto_pad = attributes.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        pads = tuple(attributes.get("pads", [0, 0, 0, 0]))
        same = auto_pad == "SAME_UPPER" or pads == _same_upper_pads(kernel, strides)
        if kernel == (1, 1) and pads == (0, 0, 0, 0):
            same = True  # a 1x1 conv pads nothing either way
        convs.append(OnnxConv(node.name, node.input[0], node.output[0], weight, bias, strides,
                              int(attributes.get("group", 1)), same))
    return convs


def _same_upper_pads(kernel: tuple[int, ...], strides: tuple[int, ...]) -> tuple[int, ...]:
    """Explicit ONNX pads (begins, then ends) that equal SAME_UPPER for even input sides."""
    totals = [max(k - s, 0) for k, s in zip(kernel, strides)]
    return tuple(t // 2 for t in totals) + tuple(t - t // 2 for t in totals)


def _copy(theirs: OnnxConv, mine: torch.nn.Conv2d, what: str) -> None:
    expected = tuple(mine.weight.shape)
    if theirs.weight.shape != expected:
        raise UserFacingError(f"{what}: weight {theirs.weight.shape}, expected {expected}")
    if theirs.group != mine.groups or theirs.strides != tuple(mine.stride):
        raise UserFacingError(f"{what}: groups {theirs.group} stride {theirs.strides}, expected "
                              f"groups {mine.groups} stride {tuple(mine.stride)}")
    if not theirs.same_padding:
        raise UserFacingError(f"{what}: padding is not TensorFlow's SAME")
    with torch.no_grad():
        mine.weight.copy_(torch.from_numpy(theirs.weight))
        mine.bias.copy_(torch.from_numpy(theirs.bias) if theirs.bias is not None else torch.zeros_like(mine.bias))


def _check_laterals(body: list[OnnxConv], net: MobileNetFPN, what: str) -> None:
    """Each decoder lateral must read the output of the block ours reads (after its residual add, if any)."""
    produced_by = {conv.output: index for index, conv in enumerate(body)}
    ours = net.encoder_decoder_convs()
    position = {id(conv): index for index, conv in enumerate(ours)}
    for (tap, _, _), lateral in zip(FPN_LEVELS, net.laterals):
        theirs = body[position[id(lateral)]]
        project_index = position[id(net.blocks[tap].project)]
        reads = produced_by.get(theirs.input)
        # With a residual add in between, the lateral reads the add's output, which no conv produced; the conv
        # right after the block (the next block's expand) reads the same tensor.
        next_reader = body[project_index + 1].input
        if reads != project_index and theirs.input != next_reader:
            raise UserFacingError(f"{what}: the decoder's lateral {theirs.name.split(';')[0]} does not read block {tap}")
