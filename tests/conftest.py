from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TAGTRACK_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real COCO images, videos, teacher); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture()
def one_torch_thread():
    """torch on one thread for the test, then as it was: the test machine's cores are shared."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


NETWORK_FAMILIES = ("hourglass", "mobilenet_fpn", "mobilenet_fpn_context")


def tiny_network(family: str = "hourglass", config=None, lively: bool = False):
    """A random-weight network (seeded), in eval mode: of FAMILY with TINY's keypoints, tag length and 64x64 input,
    or the network `config` describes. lively: its heatmaps lifted (bias + 1), so that it finds "people" in noise."""
    import torch

    from tagtrack.model.config import TINY
    from tagtrack.model.networks import build_network
    from tagtrack.model.teacher_import import mobilenet_fpn_config

    torch.manual_seed(0)
    if config is None and family == "hourglass":
        config = TINY
    elif config is None:
        config = mobilenet_fpn_config(TINY.tag_dim, TINY.num_keypoints, (TINY.input_height, TINY.input_width), family)
    model = build_network(config).eval()
    if lively:
        with torch.no_grad():
            if config.family == "hourglass":
                model.stacks[-1].heatmap_head.bias += 1.0
            else:  # sigmoid maps: logits lifted to peaks of about 0.7-0.9
                model.heatmap_head.out.bias += 1.0
    return model


def save_tiny_checkpoint(path: Path, family: str = "hourglass", *, config=None, lively: bool = False, schema=None,
                         settings: dict | None = None, metadata: dict | None = None) -> Path:
    """The tests' tiny checkpoint: `tiny_network(family, config, lively)` saved at PATH (with a keypoint schema other
    than COCO-17, stored settings or metadata when given). Returns PATH."""
    from tagtrack.model.checkpoint import save_checkpoint
    from tagtrack.model.schema import COCO17

    return save_checkpoint(path, tiny_network(family, config, lively), schema or COCO17, metadata, settings)


@pytest.fixture(scope="session", params=NETWORK_FAMILIES)
def family_weights(request, tmp_path_factory) -> Path:
    """A tiny random-weight checkpoint of each network family: a test that takes it runs on each."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights") / f"tiny-{request.param}.safetensors",
                                request.param)


@pytest.fixture(scope="session", params=NETWORK_FAMILIES)
def tiny_weights(request, tmp_path_factory) -> Path:
    """A tiny random network of each family whose heatmaps are lifted, so that it finds "people" in noise: a test
    that takes it runs on each family."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights") / f"lively-{request.param}.safetensors",
                                request.param, lively=True)


def hourglass_config():
    """The smallest hourglass the CLI tests run (1 stack, width 16, tags of 1, 64x64 input)."""
    from tagtrack.model.config import ModelConfig

    return ModelConfig(num_stacks=1, width=16, tag_dim=1, input_height=64, input_width=64)


@pytest.fixture(scope="module")
def cli_weights(tmp_path_factory) -> Path:
    """One tiny random hourglass checkpoint (`hourglass_config()`) for the tests of the CLI, its files and signals,
    where the network is not the subject and one family is enough. Each module gets its own copy."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.safetensors", config=hourglass_config())


@pytest.fixture()
def private_cache_and_one_thread(tmp_path, monkeypatch, one_torch_thread):
    """A cache folder of the test's own (TAGTRACK_CACHE: exported engines) and torch on one thread."""
    monkeypatch.setenv("TAGTRACK_CACHE", str(tmp_path / "cache"))
