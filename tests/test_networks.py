"""Network families: the family is stored in the checkpoint and rebuilt from it; the MobileNet FPN family is imported
from a MoveNet-shaped ONNX file (a hand-built one here, the real teacher when ../shared is present) and trains with
only its tag head learning."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from tagtrack import main
from tagtrack.model.checkpoint import load_checkpoint, save_checkpoint
from tagtrack.model.config import ModelConfig
from tagtrack.model.errors import UserFacingError
from tagtrack.model.hourglass import HourglassNet
from tagtrack.model.mobilenet_fpn import FPN_LEVELS, POSITION_UNIT_CELLS, MobileNetFPN, cell_positions
from tagtrack.model.networks import NETWORK_FAMILIES, build_network, shares_trunk, trunk_state_dict
from tagtrack.model.teacher_import import ENCODER_PREFIX, HEATMAP_HEAD_PREFIX, import_teacher, mobilenet_fpn_config
from tagtrack.training.config import preset
from tagtrack.training.synthetic import SceneConfig, generate_dataset
from tagtrack.training.train import train
from tests.conftest import tiny_network

REPO = Path(__file__).resolve().parents[1]
TEACHER = Path("teachers") / "movenet_multipose" / "movenet_multipose_lightning_fp32.onnx"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- the family table and checkpoints


@pytest.mark.parametrize("family", list(NETWORK_FAMILIES))
def test_checkpoint_records_the_family_and_rebuilds_it(family, tmp_path):
    net = tiny_network(family)
    path = save_checkpoint(tmp_path / "net.safetensors", net)
    loaded = load_checkpoint(path)
    assert loaded.config.family == family and type(loaded.model) is type(net)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for expected, got in zip(net(images), loaded.model(images)):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


def _rewrite_model_config(path: Path, change) -> None:
    """Rewrite a checkpoint's stored model config with CHANGE(dict) -> dict (keeping its weights and checksum)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as reader:
        header = reader.metadata()
        tensors = {name: reader.get_tensor(name) for name in reader.keys()}
    header["model_config"] = json.dumps(change(json.loads(header["model_config"])))
    save_file(tensors, str(path), metadata=header)


def test_checkpoints_from_before_families_are_hourglasses(tmp_path):
    path = save_checkpoint(tmp_path / "old.safetensors", tiny_network("hourglass"))
    _rewrite_model_config(path, lambda config: {k: v for k, v in config.items() if k != "family"})
    loaded = load_checkpoint(path)
    assert loaded.config.family == "hourglass" and isinstance(loaded.model, HourglassNet)


def test_unknown_family_is_refused_naming_it(tmp_path):
    path = save_checkpoint(tmp_path / "net.safetensors", tiny_network("hourglass"))
    _rewrite_model_config(path, lambda config: dict(config, family="transformer9000"))
    with pytest.raises(UserFacingError, match="unknown network family 'transformer9000'"):
        load_checkpoint(path)


def test_input_multiples_are_per_family():
    mobile = mobilenet_fpn_config(1, 17, (224, 160))  # multiples of 32, not of 64
    assert mobile.input_multiple == 32 and ModelConfig().input_multiple == 64
    with pytest.raises(ValueError, match="multiple of 64"):
        replace(ModelConfig(), input_height=224)
    with pytest.raises(ValueError, match="multiple of 32"):
        replace(mobile, input_height=240)
    with torch.no_grad():
        heatmaps, tags = build_network(mobile).eval()(torch.rand(1, 3, 224, 160))
    assert heatmaps.shape == (1, 17, 56, 40) and tags.shape == (1, 17, 1, 56, 40)
    assert float(heatmaps.min()) >= 0 and float(heatmaps.max()) <= 1  # sigmoid maps


# ---------------------------------------------------------------- the import from a MoveNet-shaped ONNX file


class _GraphBuilder:
    """Writes a MobileNetFPN's computation as a MoveNet-style ONNX graph: TF-named Conv nodes with SAME_UPPER
    padding, ReLU6 as Clip, bilinear Resize (half pixel), sigmoid heatmaps. Its output is what the network computes,
    so a correct import reproduces it."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.initializers: list = []
        self.count = 0

    def constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attributes) -> str:
        self.count += 1
        output = f"t{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"n{self.count}", **attributes))
        return output

    def conv(self, x: str, conv: torch.nn.Conv2d, prefix: str, activation: str = "") -> str:
        self.count += 1
        name = f"{prefix}layer_{self.count}/Conv2D;{prefix}layer_{self.count}/BiasAdd"
        weight = self.constant(f"w{self.count}", conv.weight.detach().numpy())
        bias = self.constant(f"b{self.count}", conv.bias.detach().numpy())
        output = f"conv{self.count}"
        self.nodes.append(helper.make_node("Conv", [x, weight, bias], [output], name=name, group=conv.groups,
                                           strides=list(conv.stride), kernel_shape=list(conv.kernel_size),
                                           auto_pad="SAME_UPPER"))
        if activation == "relu6":
            return self.node("Clip", [output, "zero", "six"])
        if activation == "relu":
            return self.node("Relu", [output])
        return output

    def upsample(self, x: str) -> str:
        return self.node("Resize", [x, "", "scales"], mode="linear", coordinate_transformation_mode="half_pixel")


def movenet_shaped_onnx(net: MobileNetFPN, path: Path, input_hw: tuple[int, int], drop_block: int | None = None) -> Path:
    """NET as a MoveNet-style ONNX file (input [1,3,H,W] in [0,1], output the heatmaps); DROP_BLOCK leaves one
    inverted-residual block out (a network that is not MoveNet's)."""
    g = _GraphBuilder()
    g.constant("zero", np.array(0.0))
    g.constant("six", np.array(6.0))
    g.constant("scales", np.array([1.0, 1.0, 2.0, 2.0]))
    from tagtrack.model.mobilenet_fpn import INPUT_SCALE

    x = g.node("Sub", [g.node("Mul", ["images", g.constant("scale", np.array(INPUT_SCALE))]),
                       g.constant("one", np.array(1.0))])
    x = g.conv(x, net.stem[1], ENCODER_PREFIX, "relu6")
    taps = {}
    for index, block in enumerate(net.blocks):
        if index == drop_block:
            continue
        y = g.conv(x, block.expand, ENCODER_PREFIX, "relu6") if block.expand is not None else x
        y = g.conv(y, block.depthwise[1], ENCODER_PREFIX, "relu6")
        y = g.conv(y, block.project, ENCODER_PREFIX)
        x = g.node("Add", [x, y]) if block.residual else y
        taps[index] = x
    x = g.conv(g.conv(x, net.last, ENCODER_PREFIX, "relu6"), net.top, ENCODER_PREFIX)
    for (tap, _, _), lateral, merge in zip(FPN_LEVELS, net.laterals, net.merges):
        x = g.node("Add", [g.upsample(x), g.conv(taps[tap], lateral, ENCODER_PREFIX)])
        x = g.conv(g.conv(x, merge.depthwise[1], ENCODER_PREFIX), merge.pointwise, ENCODER_PREFIX, "relu")
    head = net.heatmap_head
    y = g.conv(g.conv(x, head.depthwise[1], HEATMAP_HEAD_PREFIX), head.hidden, HEATMAP_HEAD_PREFIX, "relu")
    y = g.conv(y, head.out, HEATMAP_HEAD_PREFIX)
    g.nodes.append(helper.make_node("Sigmoid", [y], ["heatmaps"], name="Sigmoid_1"))
    graph = helper.make_graph(
        g.nodes, "movenet_shaped", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, *input_hw])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, None)], g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def movenet_shaped(tmp_path_factory) -> tuple[Path, MobileNetFPN]:
    torch.manual_seed(3)
    source = MobileNetFPN(mobilenet_fpn_config(1, 17, (64, 96))).eval()
    for parameter in source.parameters():  # weights unlike any default initialisation, so a wrong copy shows
        torch.nn.init.normal_(parameter, std=0.2)
    return movenet_shaped_onnx(source, tmp_path_factory.mktemp("onnx") / "movenet.onnx", (64, 96)), source


def test_import_reproduces_the_onnx_heatmaps(movenet_shaped):
    import onnxruntime

    path, source = movenet_shaped
    images = np.random.default_rng(1).random((1, 3, 64, 96), dtype=np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"images": images})
    net = import_teacher(path, tag_dim=2, input_hw=(64, 96))
    with torch.no_grad():
        heatmaps, tags = net(torch.from_numpy(images))
    assert float(expected.std()) > 0.05  # the maps vary, so agreement means something
    # Weights of std 0.2 make large activations: float32 sums in another order differ by ~1e-4; a wrong copy,
    # padding or wiring differs by more than 0.05.
    np.testing.assert_allclose(heatmaps.numpy(), expected, atol=1e-3, rtol=0)
    assert tags.shape == (1, 17, 2, 16, 24)
    # Only the heads the file has are copied: the new tag head is not the source's.
    assert not torch.equal(net.tag_head.out.weight[:17], source.tag_head.out.weight[:17])


def test_import_teacher_cli_writes_a_loadable_checkpoint(movenet_shaped, tmp_path, capsys):
    out = tmp_path / "init.safetensors"
    assert main.main(["import-teacher", "--onnx", str(movenet_shaped[0]), "--out", str(out), "--tag-dim", "4"]) == 0
    assert "wrote" in capsys.readouterr().out
    loaded = load_checkpoint(out)
    assert loaded.config.family == "mobilenet_fpn" and loaded.config.tag_dim == 4
    assert "MoveNet" in loaded.metadata["lineage"] and "Apache-2.0" in loaded.metadata["lineage"]
    np.testing.assert_array_equal(loaded.model.heatmap_head.out.weight.detach().numpy(),
                                  movenet_shaped[1].heatmap_head.out.weight.detach().numpy())


@pytest.mark.parametrize("case", ["missing", "truncated", "other network", "not onnx", "overwrites the input"])
def test_import_teacher_bad_input_is_one_line_and_writes_nothing(case, movenet_shaped, tmp_path, capsys):
    onnx_path = tmp_path / "teacher.onnx"
    out = tmp_path / "init.safetensors"
    if case == "truncated":
        onnx_path.write_bytes(movenet_shaped[0].read_bytes()[:50_000])
    elif case == "other network":
        torch.manual_seed(0)
        movenet_shaped_onnx(MobileNetFPN(mobilenet_fpn_config(1, 17, (64, 64))), onnx_path, (64, 64), drop_block=4)
    elif case == "not onnx":
        onnx_path.write_text("hello")
    elif case == "overwrites the input":
        onnx_path.write_bytes(movenet_shaped[0].read_bytes())
        out = onnx_path
    before = onnx_path.read_bytes() if onnx_path.exists() else None
    code = main.main(["import-teacher", "--onnx", str(onnx_path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "init.safetensors").exists() or case == "overwrites the input"
    assert sorted(p.name for p in tmp_path.iterdir()) == (["teacher.onnx"] if before is not None else [])
    if before is not None:
        assert onnx_path.read_bytes() == before


def test_the_real_teacher_imports_to_its_own_heatmaps(shared_data):
    import onnxruntime

    teacher = shared_data / TEACHER
    model = onnx.load(str(teacher))
    model.graph.output.append(helper.make_tensor_value_info("Sigmoid_1", TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, 256, 320, 3), dtype=np.uint8)
    image[:, 64:200, 100:180] = 200  # some structure beyond noise
    outputs = session.run(None, {session.get_inputs()[0].name: image})
    expected = outputs[[o.name for o in session.get_outputs()].index("Sigmoid_1")]
    net = import_teacher(teacher, tag_dim=4, input_hw=(256, 320))
    with torch.no_grad():
        heatmaps, _ = net(torch.from_numpy(image).permute(0, 3, 1, 2).float() / 255)
    assert expected.shape == (1, 17, 64, 80)
    assert np.abs(heatmaps.numpy() - expected).max() < 1e-4


# ---------------------------------------------------------------- training the new family


def test_training_only_the_tag_head_leaves_the_rest_as_imported(tmp_path):
    data = tmp_path / "data"
    generate_dataset(data, num_images=4, config=SceneConfig(width=96, height=64, max_people=2), seed=1)
    init = save_checkpoint(tmp_path / "init.safetensors", tiny_network("mobilenet_fpn"))
    config = preset("tiny", model=mobilenet_fpn_config(1, 17, (64, 64)), train_annotations=str(data / "annotations.json"),
                    train_images=str(data / "images"), steps=3, checkpoint_every=100, log_every=1,
                    init_weights=str(init), trainable=("tag_head.",), channels_last=True)
    result = train(config, tmp_path / "run")
    assert result.step == 3
    before, after = load_checkpoint(init).model.state_dict(), load_checkpoint(tmp_path / "run" / "last.safetensors").model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith("tag_head.") for name in changed), changed
    assert "tag_head.out.weight" in changed


# ---------------------------------------------------------------- the context tag head (mobilenet_fpn_context)


def outputs_started_from(plain: torch.nn.Module, family: str):
    """FAMILY's network started from PLAIN's weights (`trunk_state_dict`): ((heatmaps, tags) of it, of PLAIN) on
    the same random images."""
    network = build_network(replace(plain.config, family=family)).eval()
    assert shares_trunk(plain.config, network.config)
    network.load_state_dict(trunk_state_dict(plain, network))
    images = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        return network(images), plain(images)


def test_the_context_family_starts_from_a_mobilenet_checkpoint_with_the_same_heatmaps():
    plain = tiny_network("mobilenet_fpn")
    assert not shares_trunk(plain.config, plain.config)
    assert not shares_trunk(tiny_network("hourglass").config, replace(plain.config, family="mobilenet_fpn_context"))
    (heatmaps, tags), (plain_heatmaps, _) = outputs_started_from(plain, "mobilenet_fpn_context")
    torch.testing.assert_close(heatmaps, plain_heatmaps, rtol=0, atol=0)
    assert tags.shape == (2, 17, plain.config.tag_dim, 16, 24)


def test_a_trunk_without_the_layers_is_refused():
    context = tiny_network("mobilenet_fpn_context")
    with pytest.raises(ValueError, match="no stem"):
        trunk_state_dict(torch.nn.Linear(2, 2), context)


def test_cell_positions_count_cells_from_the_top_left_in_fixed_units():
    positions = cell_positions(torch.zeros(2, 5, 3, 4))
    assert positions.shape == (2, 2, 3, 4)
    assert positions[1, 0, 2, 3] * POSITION_UNIT_CELLS == 2 and positions[1, 1, 2, 3] * POSITION_UNIT_CELLS == 3
    assert positions[0, 0, 0, 0] == 0


def test_context_tags_see_beyond_the_plain_heads_view():
    # A heatmap change 8 cells away moves a context tag (the plain head's 3x3 view reaches 1 cell each way).
    context = tiny_network("mobilenet_fpn_context")
    features = torch.rand(1, FPN_LEVELS[-1][2], 32, 32)
    heatmaps = torch.rand(1, 17, 32, 32)
    moved = heatmaps.clone()
    moved[..., 16, 24] += 1.0  # 8 cells to the right of (16, 16)
    with torch.no_grad():
        before = context.tag_head(features, heatmaps)[..., 16, 16]
        after = context.tag_head(features, moved)[..., 16, 16]
    assert not torch.allclose(before, after)


def train_from_a_mobilenet_checkpoint(tmp_path, family: str, trainable: tuple[str, ...]):
    """`tagtrack train --init` of a tiny `mobilenet_fpn` checkpoint into a FAMILY network for 2 steps, TRAINABLE
    learning: returns (the starting checkpoint's path, the trained checkpoint)."""
    data = tmp_path / "data"
    generate_dataset(data, num_images=4, config=SceneConfig(width=96, height=64, max_people=2), seed=1)
    init = save_checkpoint(tmp_path / "init.safetensors", tiny_network("mobilenet_fpn"))
    config = preset("tiny", model=mobilenet_fpn_config(1, 17, (64, 64), family=family),
                    train_annotations=str(data / "annotations.json"), train_images=str(data / "images"),
                    steps=2, checkpoint_every=100, log_every=1, trainable=trainable)
    config_path = tmp_path / "config.json"
    config.save(config_path)
    code = main.main(["train", "--config", str(config_path), "--init", str(init), "--out", str(tmp_path / "run")])
    assert code == 0
    return init, load_checkpoint(tmp_path / "run" / "last.safetensors")


def test_train_init_from_a_mobilenet_checkpoint_trains_the_context_network(tmp_path):
    init, trained = train_from_a_mobilenet_checkpoint(tmp_path, "mobilenet_fpn_context", ("tag_head.",))
    assert trained.config.family == "mobilenet_fpn_context"
    before = load_checkpoint(init).model.state_dict()
    after = trained.model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before if not name.startswith("tag_head."))


def test_a_trainable_prefix_that_names_nothing_is_refused(tmp_path):
    data = tmp_path / "data"
    generate_dataset(data, num_images=4, config=SceneConfig(width=96, height=64, max_people=2), seed=1)
    config = preset("tiny", train_annotations=str(data / "annotations.json"), train_images=str(data / "images"),
                    steps=1, trainable=("tag_heads.",))
    with pytest.raises(UserFacingError, match="tag_heads"):
        train(config, tmp_path / "run")


def test_import_teacher_is_listed_in_the_cli_help():
    out = subprocess.run([sys.executable, str(REPO / "main.py"), "--help"], capture_output=True, text=True, cwd=REPO)
    assert "import-teacher" in out.stdout


@pytest.mark.parametrize("module", ["networks", "hourglass", "mobilenet_fpn", "config", "teacher_import"])
def test_each_model_module_imports_first_in_a_fresh_process(module):
    # The config's presets are built while the family table may still be importing config.py: no import cycle.
    result = subprocess.run([sys.executable, "-c", f"import tagtrack.model.{module}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- the tags' own decoder (mobilenet_fpn_tag_decoder)


def test_the_tag_decoder_family_starts_computing_exactly_what_its_mobilenet_checkpoint_did():
    plain = tiny_network("mobilenet_fpn")
    with torch.no_grad():
        plain.tag_head.out.weight.normal_()  # a trained tag head: carried over, since the head is the same
    (heatmaps, tags), (plain_heatmaps, plain_tags) = outputs_started_from(plain, "mobilenet_fpn_tag_decoder")
    torch.testing.assert_close(heatmaps, plain_heatmaps, rtol=0, atol=0)
    torch.testing.assert_close(tags, plain_tags, rtol=0, atol=0)
    # The context head is another head: it stays new (and the plain head's weights are not forced into it).
    context = build_network(replace(plain.config, family="mobilenet_fpn_context"))
    fresh = context.state_dict()["tag_head.out.weight"].clone()
    assert torch.equal(trunk_state_dict(plain, context)["tag_head.out.weight"], fresh)


def test_training_the_tags_decoder_leaves_the_heatmaps_exactly_as_they_were(tmp_path):
    init, checkpoint = train_from_a_mobilenet_checkpoint(
        tmp_path, "mobilenet_fpn_tag_decoder", ("tag_top.", "tag_laterals.", "tag_merges.", "tag_head."))
    trained = checkpoint.model.eval()
    assert trained.config.family == "mobilenet_fpn_tag_decoder"
    start = load_checkpoint(init).model.eval()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(trained(images)[0], start(images)[0], rtol=0, atol=0)
        assert not torch.equal(trained(images)[1], start(images)[1])
    after = trained.state_dict()
    assert not torch.equal(after["tag_top.weight"], start.state_dict()["top.weight"])  # it learnt
