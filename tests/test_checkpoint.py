from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tagtrack.model import checkpoint as checkpoint_module
from tagtrack.model.checkpoint import (
    DEFAULT_WEIGHTS,
    checkpoint_sha256,
    load_checkpoint,
    resolve_weights,
    save_checkpoint,
)
from tagtrack.model.config import ModelConfig
from tagtrack.model.errors import UserFacingError
from tagtrack.model.hourglass import AllStacks, HourglassNet
from tagtrack.model.schema import COCO17

CONFIG = ModelConfig(num_stacks=1, width=16, tag_dim=2, input_height=64, input_width=128)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trained_looking_model(config: ModelConfig = CONFIG, seed: int = 0) -> HourglassNet:
    """A random model whose BatchNorm statistics are not the defaults, so a round trip must carry them."""
    torch.manual_seed(seed)
    model = HourglassNet(config)
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, config.input_height, config.input_width))
    return model.eval()


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, HourglassNet]:
    model = _trained_looking_model()
    path = save_checkpoint(tmp_path / "model.safetensors", model, metadata={"epoch": 3, "note": "test"})
    return path, model


def _header(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as reader:
        return dict(reader.metadata())


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as reader:
        return {name: reader.get_tensor(name) for name in reader.keys()}


def _rewrite(path: Path, target: Path, header_changes: dict[str, str | None]) -> Path:
    """Copy a checkpoint with some header entries replaced (None: removed); tensors stay as they are."""
    header = _header(path)
    for key, value in header_changes.items():
        if value is None:
            header.pop(key, None)
        else:
            header[key] = value
    save_file(_tensors(path), str(target), metadata=header)
    return target


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(UserFacingError) as info:
        load_checkpoint(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_round_trip_gives_identical_outputs(saved: tuple[Path, HourglassNet]) -> None:
    path, model = saved
    loaded = load_checkpoint(path, expected_schema=COCO17)
    assert loaded.config == CONFIG
    assert loaded.schema == COCO17
    assert loaded.metadata == {"epoch": 3, "note": "test"}
    assert not loaded.model.training
    images = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        expected = model(images)
        actual = loaded.model(images)
    assert torch.equal(expected[0], actual[0])
    assert torch.equal(expected[1], actual[1])


def test_file_holds_only_safetensors_and_json_metadata(saved: tuple[Path, HourglassNet]) -> None:
    path, model = saved
    header = _header(path)
    assert ModelConfig.from_dict(json.loads(header["model_config"])) == CONFIG
    assert json.loads(header["keypoint_schema"])["name"] == "coco17"
    assert set(_tensors(path)) == set(model.state_dict())


def test_save_does_not_leave_temporary_files_and_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, _trained_looking_model(seed=0))
    save_checkpoint(path, _trained_looking_model(seed=1), metadata={"second": True})
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    assert load_checkpoint(path).metadata == {"second": True}


def test_save_unwraps_the_all_stacks_training_wrapper(tmp_path: Path) -> None:
    model = _trained_looking_model()
    path = save_checkpoint(tmp_path / "wrapped.safetensors", AllStacks(model))
    loaded = load_checkpoint(path)
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], value)


def test_save_refuses_other_modules_and_checks_schema_size(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "x.safetensors", torch.nn.Conv2d(3, 3, 1))
    model = HourglassNet(dataclasses.replace(CONFIG, num_keypoints=5))
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "x.safetensors", model, schema=COCO17)


def test_save_to_unwritable_path_is_a_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(UserFacingError, match="cannot write checkpoint"):
        save_checkpoint(blocker / "model.safetensors", _trained_looking_model())


def test_missing_file(tmp_path: Path) -> None:
    assert "not found" in _error(tmp_path / "nope.safetensors")


def test_directory_is_refused(tmp_path: Path) -> None:
    assert "not a file" in _error(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, this is plain text and not a checkpoint", b"\x00" * 64, b"\xff" * 64],
    ids=["empty", "text", "zeros", "ones"],
)
def test_not_a_safetensors_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    assert "not a valid safetensors file" in _error(path)


def test_pickled_torch_checkpoint_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(_trained_looking_model().state_dict(), path)
    assert "not a valid safetensors file" in _error(path)


def test_truncated_file(saved: tuple[Path, HourglassNet], tmp_path: Path) -> None:
    path, _ = saved
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) - 100])
    assert "not a valid safetensors file" in _error(truncated)


def test_corrupted_weights_fail_the_checksum(saved: tuple[Path, HourglassNet], tmp_path: Path) -> None:
    path, _ = saved
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # inside the tensor data, the header stays valid
    corrupted = tmp_path / "corrupted.safetensors"
    corrupted.write_bytes(bytes(data))
    assert "corrupt" in _error(corrupted)


def test_safetensors_without_our_metadata(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    assert "not a tagtrack checkpoint" in _error(path)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"format_version": "99"}, "format version 99"),
        ({"format_version": "one"}, "invalid format version"),
        ({"model_config": None}, "'model_config' is missing"),
        ({"keypoint_schema": None}, "'keypoint_schema' is missing"),
        ({"weights_sha256": None}, "'weights_sha256' is missing"),
        ({"model_config": "{not json"}, "invalid model config"),
        ({"model_config": json.dumps({"num_stacks": 1, "colour": 3})}, "invalid model config"),
        ({"model_config": json.dumps({"input_height": 100})}, "invalid model config"),
        ({"keypoint_schema": json.dumps({"name": "x"})}, "invalid keypoint schema"),
        ({"metadata": "[1, 2]"}, "expected a JSON object"),
        ({"metadata": "{"}, "invalid metadata JSON"),
    ],
)
def test_missing_or_wrong_metadata(saved: tuple[Path, HourglassNet], tmp_path: Path, changes: dict, expected: str) -> None:
    path, _ = saved
    bad = _rewrite(path, tmp_path / "bad.safetensors", changes)
    assert expected in _error(bad)


def _foo_schema(num_keypoints: int):
    return dataclasses.replace(
        COCO17,
        name="foo",
        keypoint_names=tuple(f"k{i}" for i in range(num_keypoints)),
        flip_index=tuple(range(num_keypoints)),
        skeleton=((0, 1),),
        oks_sigmas=(0.05,) * num_keypoints,
        grouping_order=tuple(range(num_keypoints)),
    )


def test_checkpoint_of_another_schema(tmp_path: Path) -> None:
    foo = _foo_schema(5)
    model = _trained_looking_model(dataclasses.replace(CONFIG, num_keypoints=5))
    path = save_checkpoint(tmp_path / "foo.safetensors", model, schema=foo)
    message = _error(path, expected_schema=COCO17)
    assert message == f"checkpoint {path} is for keypoint schema 'foo' (5 keypoints), this app uses 'coco17'"
    # Without an expectation it loads, and the schema comes from the file.
    loaded = load_checkpoint(path)
    assert loaded.schema == foo and loaded.config.num_keypoints == 5


def test_checkpoint_with_an_altered_schema_of_the_same_name(saved: tuple[Path, HourglassNet], tmp_path: Path) -> None:
    path, _ = saved
    altered = COCO17.to_dict()
    altered["flip_index"] = list(range(17))
    bad = _rewrite(path, tmp_path / "altered.safetensors", {"keypoint_schema": json.dumps(altered)})
    assert "differs from this app's 'coco17'" in _error(bad, expected_schema=COCO17)


def test_schema_and_config_disagree_on_keypoints(saved: tuple[Path, HourglassNet], tmp_path: Path) -> None:
    path, _ = saved
    bad = _rewrite(path, tmp_path / "bad.safetensors", {"keypoint_schema": json.dumps(_foo_schema(5).to_dict())})
    assert "inconsistent" in _error(bad)


@pytest.mark.parametrize(
    "claimed, expected",
    [
        (dataclasses.replace(CONFIG, width=24), "wrong shape"),
        (dataclasses.replace(CONFIG, tag_dim=3), "wrong shape"),
        (dataclasses.replace(CONFIG, num_stacks=2), "missing tensors"),
        (dataclasses.replace(CONFIG, num_stacks=2, width=24), "missing tensors"),
    ],
)
def test_tensors_that_do_not_match_the_config(
    saved: tuple[Path, HourglassNet], tmp_path: Path, claimed: ModelConfig, expected: str
) -> None:
    path, _ = saved
    bad = _rewrite(path, tmp_path / "bad.safetensors", {"model_config": json.dumps(claimed.to_dict())})
    message = _error(bad)
    assert "does not match its model config" in message and expected in message


def test_unexpected_tensors(tmp_path: Path) -> None:
    two_stacks = _trained_looking_model(dataclasses.replace(CONFIG, num_stacks=2))
    path = save_checkpoint(tmp_path / "two.safetensors", two_stacks)
    bad = _rewrite(path, tmp_path / "bad.safetensors", {"model_config": json.dumps(CONFIG.to_dict())})
    assert "unexpected tensors" in _error(bad)


def test_resolve_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given = tmp_path / "given.safetensors"
    assert resolve_weights(given) == given  # existence is checked when loading
    assert resolve_weights(str(given)) == given

    missing_default = tmp_path / "weights" / "default.safetensors"
    monkeypatch.setattr(checkpoint_module, "DEFAULT_WEIGHTS", missing_default)
    with pytest.raises(UserFacingError) as info:
        resolve_weights(None)
    assert str(info.value) == "no default model is installed; pass --weights PATH to a checkpoint (see README: training)"

    save_checkpoint(missing_default, _trained_looking_model())
    assert resolve_weights(None) == missing_default


def test_default_weights_location() -> None:
    assert DEFAULT_WEIGHTS.name == "default.safetensors"
    assert DEFAULT_WEIGHTS.parent.name == "weights" and DEFAULT_WEIGHTS.parent.parent.name == "model"


def test_checkpoint_sha256(saved: tuple[Path, HourglassNet], tmp_path: Path) -> None:
    path, _ = saved
    assert checkpoint_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    other = save_checkpoint(tmp_path / "other.safetensors", _trained_looking_model(seed=5))
    assert checkpoint_sha256(other) != checkpoint_sha256(path)
    with pytest.raises(UserFacingError, match="not found"):
        checkpoint_sha256(tmp_path / "missing.safetensors")


def test_bundled_model_names_resolve_to_the_installed_checkpoints(tmp_path, monkeypatch):
    from tagtrack.model.checkpoint import BUNDLED_WEIGHTS, resolve_weights

    monkeypatch.chdir(tmp_path)
    assert resolve_weights(None) == BUNDLED_WEIGHTS["default"] == resolve_weights("default")
    assert resolve_weights("general") == BUNDLED_WEIGHTS["default"]  # the default's name before it was the default
    loaded = load_checkpoint(resolve_weights(None))
    assert loaded.settings["tracker"]["high_score"] == 0.4  # its people score lower: tracks start earlier
    assert loaded.settings["decode"]["detection_threshold"] == 0.4  # its peaks are higher
    wide = load_checkpoint(resolve_weights("wide"))  # phase 7: the general model widened and trained on
    assert wide.config.width > loaded.config.width and wide.settings["decode"]["detection_threshold"] == 0.5
    pretrained = load_checkpoint(resolve_weights("pretrained"))  # MoveNet's network with our tags, sigmoid maps
    assert pretrained.config.family == "mobilenet_fpn" and pretrained.settings["decode"]["detection_threshold"] == 0.3
    street = resolve_weights("street")
    assert street == BUNDLED_WEIGHTS["street"] and street.is_file() and street != BUNDLED_WEIGHTS["default"]
    assert load_checkpoint(street).settings == {}  # the street model runs with the app's defaults
    (tmp_path / "street").write_bytes(b"")  # a file of that name here wins over the bundled model
    assert resolve_weights("street") == Path("street")
