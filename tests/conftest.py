from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

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


# ---------------------------------------------------------------- decoded people against the true ones


def match_people(decoded_xy: np.ndarray, decoded_found: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair decoded people with true ones by the mean distance over joints found in both."""
    visible = truth[:, :, 2] > 0
    distance = np.linalg.norm(decoded_xy[:, None] - truth[None, :, :, :2], axis=3)
    both = decoded_found[:, None] & visible[None]
    mean = np.where(both.any(axis=2), (distance * both).sum(axis=2) / np.maximum(both.sum(axis=2), 1), 1e9)
    return linear_sum_assignment(mean)


def assert_same_people(
    poses, truth: np.ndarray, person_tags: np.ndarray, tolerance: float, min_score: float = 0.0
) -> None:
    """Exactly the true people: same joints found (score > min_score), within tolerance, same tags."""
    assert len(poses) == len(truth)
    keypoints = np.stack([pose.keypoints for pose in poses])
    found = keypoints[:, :, 2] > min_score
    rows, cols = match_people(keypoints[:, :, :2], found, truth)
    for row, col in zip(rows, cols):
        visible = truth[col, :, 2] > 0
        np.testing.assert_array_equal(found[row], visible, err_msg=f"person {col}: wrong joints found")
        error = np.abs(keypoints[row, visible, :2] - truth[col, visible, :2]).max()
        assert error <= tolerance, f"person {col}: keypoint error {error:.3f} px > {tolerance}"
        assert np.linalg.norm(poses[row].tag[: person_tags.shape[1]] - person_tags[col]) < 0.5
