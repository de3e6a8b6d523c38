"""What `tagtrack demo` runs: the default model on the OpenCV sample street scene, or, while no model
for real footage is installed, the synthetic demo model on a generated clip."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tagtrack.model.checkpoint import DEFAULT_WEIGHTS
from tagtrack.model.errors import UserFacingError
from tagtrack.realtime.engines import default_cache_dir

SYNTHETIC_DEMO_WEIGHTS = Path(__file__).resolve().parents[1] / "model" / "weights" / "synthetic_demo.safetensors"
VTEST_NAME = "vtest.avi"


def vtest_locations() -> list[Path]:
    """Where the OpenCV sample video (PETS 2009 street scene) may be, in the order they are tried."""
    locations = []
    if os.environ.get("TAGTRACK_DEMO_VIDEO"):
        locations.append(Path(os.environ["TAGTRACK_DEMO_VIDEO"]))
    repo_root = Path(__file__).resolve().parents[1]
    locations += [
        default_cache_dir() / VTEST_NAME,  # where `make vtest` puts it
        Path("/usr/share/doc/opencv-doc/examples/data") / VTEST_NAME,  # Debian/Ubuntu package opencv-doc
        repo_root.parent / "shared" / "data" / "videos" / "opencv_vtest_pets2009.avi",  # the project's data folder
    ]
    return locations


def find_vtest() -> Path | None:
    return next((path for path in vtest_locations() if path.is_file()), None)


@dataclass(frozen=True)
class DemoPlan:
    video: Path | None  # None: generate the synthetic clip
    weights: Path
    synthetic: bool


def plan_demo(video: Path | None, weights: Path | None) -> DemoPlan:
    """Pick the model and the input; a real model needs a real video, the synthetic model a generated one."""
    if weights is None and not DEFAULT_WEIGHTS.is_file():
        if video is not None:
            raise UserFacingError("no default model is installed yet; pass --weights PATH to run the demo on a video")
        if not SYNTHETIC_DEMO_WEIGHTS.is_file():
            raise UserFacingError(f"the synthetic demo model {SYNTHETIC_DEMO_WEIGHTS} is missing from this install")
        return DemoPlan(video=None, weights=SYNTHETIC_DEMO_WEIGHTS, synthetic=True)
    video = video or find_vtest()
    if video is None:
        raise UserFacingError(
            "the demo video vtest.avi was not found (get it with `make vtest` or `apt-get install opencv-doc`); "
            "pass any video with --video PATH")
    return DemoPlan(video=video, weights=weights or DEFAULT_WEIGHTS, synthetic=False)
