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


NETWORK_FAMILIES = ("hourglass", "mobilenet_fpn")


def tiny_network(family: str):
    """A random-weight network of FAMILY with TINY's keypoints, tag length and 64x64 input (seeded), in eval mode."""
    import torch

    from tagtrack.model.config import TINY
    from tagtrack.model.networks import build_network
    from tagtrack.model.teacher_import import mobilenet_fpn_config

    torch.manual_seed(0)
    if family == "hourglass":
        config = TINY
    else:
        config = mobilenet_fpn_config(TINY.tag_dim, TINY.num_keypoints, (TINY.input_height, TINY.input_width))
    return build_network(config).eval()
