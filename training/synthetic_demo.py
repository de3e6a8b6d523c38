"""The synthetic demo model: a tiny network trained by this project's own code on generated stick figures.

`tagtrack demo` uses it to show the whole app (grouping, tracking, annotated video, JSON Lines) on a
generated clip when no model for real footage is installed. It has never seen a real person.

Reproduce the committed weights (about 12 minutes on 2 CPU cores, run with OMP_NUM_THREADS=1):
    python -m tagtrack.training.synthetic_demo --out model/weights/synthetic_demo.safetensors
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import cv2

from tagtrack.model.config import ModelConfig
from tagtrack.training.config import AugmentConfig, preset
from tagtrack.training.synthetic import SceneConfig, generate_clips

log = logging.getLogger(__name__)

DEMO_SCENE = SceneConfig(
    width=384, height=288, min_people=2, max_people=3, min_person_height=0.45, max_person_height=0.8,
    occluder_probability=0.1, out_of_frame_probability=0.0,
)
# The demo clip: three figures, no occluders. Measured grouping quality is in model/weights/SYNTHETIC_DEMO.md.
DEMO_CLIP_SCENE = replace(DEMO_SCENE, min_people=3, max_people=3, occluder_probability=0.0)
DEMO_MODEL = ModelConfig(num_stacks=2, width=32, tag_dim=2, input_height=192, input_width=256)


def train_synthetic_demo_model(out: Path, work_dir: Path, steps: int = 1500, seed: int = 0) -> Path:
    """Generate clips of walking stick figures and train DEMO_MODEL on pairs of their frames."""
    from tagtrack.training.train import train

    annotations = generate_clips(work_dir / "clips", num_clips=48, frames_per_clip=8, config=DEMO_SCENE, seed=seed)
    config = preset(
        "tiny",
        train_annotations=str(annotations), train_images=str(work_dir / "clips" / "images"),
        model=DEMO_MODEL, augment=replace(AugmentConfig(), rotation_degrees=15.0),
        pairs=True, batch_size=6, lr=2e-3, steps=steps, lr_decay_steps=(int(steps * 0.8),), warmup_steps=100,
        sigma=2.0, max_people=8,
        checkpoint_every=max(steps // 4, 1), log_every=50, workers=0, seed=seed,
    )
    train(config, work_dir / "run")
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work_dir / "run" / "last.safetensors", out)
    return out


def write_demo_video(path: Path, frames: int = 120, seed: int = 7, fps: float = 15.0) -> Path:
    """A generated clip of stick figures walking about, as an mp4 (the demo's input when no real video is used)."""
    with tempfile.TemporaryDirectory() as tmp:
        generate_clips(Path(tmp), num_clips=1, frames_per_clip=frames, config=DEMO_CLIP_SCENE,
                       seed=seed)
        names = sorted((Path(tmp) / "images").glob("*.png"))
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (DEMO_SCENE.width, DEMO_SCENE.height))
        if not writer.isOpened():
            raise OSError(f"cannot write video {path}")
        try:
            for name in names:
                writer.write(cv2.imread(str(name)))
        finally:
            writer.release()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="train the synthetic demo model")
    parser.add_argument("--out", type=Path, default=Path("model/weights/synthetic_demo.safetensors"))
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the generated data and run here")
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.work_dir:
        train_synthetic_demo_model(args.out, args.work_dir, args.steps)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            train_synthetic_demo_model(args.out, Path(tmp), args.steps)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
