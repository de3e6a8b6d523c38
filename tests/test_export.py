from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tagtrack.model.checkpoint import load_checkpoint, save_checkpoint
from tagtrack.model.config import ModelConfig
from tagtrack.model.errors import UserFacingError
from tagtrack.model.export import export_onnx
from tagtrack.model.hourglass import HourglassNet

CONFIG = ModelConfig(num_stacks=2, width=16, increase=8, tag_dim=3, input_height=64, input_width=128)


def _model_with_running_stats(config: ModelConfig, seed: int = 0) -> HourglassNet:
    """Random weights plus non-default BatchNorm statistics, so eval-mode BN really matters in the export."""
    torch.manual_seed(seed)
    model = HourglassNet(config).train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(2, 3, config.input_height, config.input_width))
    return model.eval()


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _shape(value_info) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, HourglassNet]:
    torch.set_num_threads(1)
    model = _model_with_running_stats(CONFIG)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", 64, 128, batch_size=2)
    return path, model


@pytest.mark.slow  # a real export takes several seconds
def test_graph_has_named_static_inputs_and_outputs(exported: tuple[Path, HourglassNet]) -> None:
    path, _ = exported
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert [i.name for i in graph.graph.input] == ["images"]
    assert _shape(graph.graph.input[0]) == [2, 3, 64, 128]
    assert [o.name for o in graph.graph.output] == ["heatmaps", "tags"]
    assert _shape(graph.graph.output[0]) == [2, 17, 16, 32]
    assert _shape(graph.graph.output[1]) == [2, 17, 3, 16, 32]
    assert {op.domain: op.version for op in graph.opset_import}.get("", None) == 17
    op_types = {node.op_type for node in graph.graph.node}
    assert "Resize" in op_types
    # No data-dependent shapes: nothing reads a tensor's shape or produces a value-dependent size.
    assert not op_types & {"Shape", "NonZero", "Loop", "If", "ConstantOfShape"}
    # Weights live inside the one file.
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)


@pytest.mark.slow  # a real export takes several seconds
def test_export_from_a_checkpoint_at_another_size_with_single_tag(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = ModelConfig(num_stacks=1, width=16, tag_dim=1, input_height=64, input_width=64)
    checkpoint = save_checkpoint(tmp_path / "model.safetensors", _model_with_running_stats(config, seed=1))
    model = load_checkpoint(checkpoint).model
    model.train()  # export must use eval mode and give the caller's mode back
    path = export_onnx(model, tmp_path / "deeper" / "model.onnx", 128, 64)
    assert model.training
    images = np.random.default_rng(0).random((1, 3, 128, 64), dtype=np.float32)
    heatmaps, tags = _session(path).run(None, {"images": images})  # its maps agree with torch's: tests/test_engines.py
    assert heatmaps.shape == (1, 17, 32, 16) and tags.shape == (1, 17, 1, 32, 16)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no temporary left behind


@pytest.mark.parametrize("height, width, batch", [(100, 128, 1), (64, 0, 1), (64, 64, 0)])
def test_bad_sizes_are_user_errors(tmp_path: Path, height: int, width: int, batch: int) -> None:
    model = HourglassNet(ModelConfig(num_stacks=1, width=16, input_height=64, input_width=64))
    with pytest.raises(UserFacingError):
        export_onnx(model, tmp_path / "model.onnx", height, width, batch_size=batch)
    assert not (tmp_path / "model.onnx").exists()


def test_unwritable_output_path_is_a_user_error(tmp_path: Path) -> None:
    model = HourglassNet(ModelConfig(num_stacks=1, width=16, input_height=64, input_width=64))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(UserFacingError, match="cannot write ONNX model"):
        export_onnx(model, blocker / "model.onnx", 64, 64)
    with pytest.raises(UserFacingError, match="is a directory"):
        export_onnx(model, tmp_path, 64, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
