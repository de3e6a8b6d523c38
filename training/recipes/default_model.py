"""Recipe for the default model (`model/weights/default.safetensors`): data, training, measurements.

Steps (each one a subcommand; see training/recipes/default_model.md for the whole sequence):

  data     pseudo-label the shared videos with the MoveNet MultiPose teacher (`main.py label`), split
           every source into a training part and a held-out part, and merge the training parts with
           60 of the 80 real COCO mini images into one COCO keypoint file (unique ids, images linked
           into one folder). Labelling outputs that already exist are reused.
  train    write the training config and start `main.py train` (or `--resume` an existing run).
  export   copy a run checkpoint with the inference input size set (the network is fully convolutional;
           the size stored in the checkpoint is what `main.py run` uses by default).
  recall   on held-out video frames: the share of the teacher's confident people the model finds
           (OKS >= 0.5), and the model's people that match no teacher label or ignore region.

All work data lives under --root (default /work/campaign), never in the repository.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
TEACHER = SHARED / "teachers" / "movenet_multipose" / "movenet_multipose_lightning_fp32.onnx"
COCO_JSON = SHARED / "annotations" / "coco_mini" / "person_keypoints_train2017.json"
COCO_IMAGES = SHARED / "images" / "coco_mini" / "train2017"

# Inference size of the default model, chosen on all held-out video frames (174; teacher-confident people
# found at OKS >= 0.5 with the phase-3 weights): 256x384 407/571, 320x384 400/571, 384x512 379/571, and
# the fewest unmatched people at 256x384. Trained on 192x192 views that shrink a frame 3-4x before the
# zoom, the network sees people best smaller than at 384x512; and it is 2x cheaper. vtest.avi (768x576)
# letterboxes into it at scale 4/9.
INFERENCE_HW = (256, 384)

log = logging.getLogger("default_model")


# ---------------------------------------------------------------- data

# name -> (input, `main.py label` options, held-out rule). The rule takes an image record of the
# label output and says whether it is held out. PETS walkers are small (40-110 px in 576 rows): the
# teacher sees them better at long sides 768 and 1024 (8 sampled frames: 47 labelled people at
# 384/512/768/1024 + flip against 28 at 256/384/512 + flip).
VIDEO_SOURCES = {
    "vtest": (SHARED / "videos" / "opencv_vtest_pets2009.avi",
              ["--every", "2", "--scales", "384", "512", "768", "1024", "--flip"],
              lambda image: image["source_frame"] >= 600),
    "cam01": (SHARED / "videos" / "pose2sim_multiperson" / "cam01.mp4",
              ["--every", "2", "--scales", "256", "384", "512", "--flip"],
              lambda image: False),
    "cam02": (SHARED / "videos" / "pose2sim_multiperson" / "cam02.mp4",
              ["--every", "2", "--scales", "256", "384", "512", "--flip"],
              lambda image: True),
    "sports2d": (SHARED / "videos" / "sports2d_demo.mp4",
                 ["--every", "3", "--scales", "256", "384", "512", "--flip"],
                 lambda image: image["source_frame"] >= 153),  # 230 frames: first 2/3 train
    # Unannotated real COCO val images (about a third with people): more scenes, no held-out part.
    "coco_val_unannotated": (SHARED / "images" / "coco_mini" / "val2017_unannotated",
                             ["--scales", "256", "384", "512", "--flip"],
                             lambda image: False),
}


def coco_heldout(image_id: int, rank: int) -> bool:
    """Every 4th real COCO image (by sorted id) is held out: 20 of 80."""
    return rank % 4 == 3


def label_sources(root: Path) -> None:
    for name, (source, options, _) in VIDEO_SOURCES.items():
        out = root / "labels" / name
        if (out / "annotations.json").is_file():
            log.info("reusing %s", out)
            continue
        command = [sys.executable, str(REPO / "main.py"), "label", "--teacher", str(TEACHER), "--input", str(source),
                   "--out", str(out), *options]
        log.info("running %s", " ".join(command))
        subprocess.run(command, check=True, cwd=REPO)


class Merger:
    """Builds one COCO keypoint file from several, with fresh unique image/annotation/track/video ids."""

    def __init__(self, categories: list[dict]) -> None:
        self.data = {"info": {"description": "tagtrack default-model data"}, "licenses": [], "videos": [],
                     "images": [], "annotations": [], "categories": categories}
        self.next_image = self.next_annotation = self.next_track = self.next_video = 1

    def add(self, data: dict, prefix: str, keep_image) -> None:
        track_map: dict[int, int] = {}
        video_map: dict[int, int] = {}
        image_map: dict[int, int] = {}
        for image in data["images"]:
            if not keep_image(image):
                continue
            new = dict(image, id=self.next_image, file_name=f"{prefix}/{image['file_name']}")
            if "video_id" in image:
                if image["video_id"] not in video_map:
                    video_map[image["video_id"]] = self.next_video
                    self.data["videos"].append({"id": self.next_video, "name": f"{prefix}/{image['video_id']}"})
                    self.next_video += 1
                new["video_id"] = video_map[image["video_id"]]
            image_map[image["id"]] = self.next_image
            self.data["images"].append(new)
            self.next_image += 1
        for annotation in data["annotations"]:
            if annotation["image_id"] not in image_map:
                continue
            new = dict(annotation, id=self.next_annotation, image_id=image_map[annotation["image_id"]])
            if "track_id" in annotation:
                if annotation["track_id"] not in track_map:
                    track_map[annotation["track_id"]] = self.next_track
                    self.next_track += 1
                new["track_id"] = track_map[annotation["track_id"]]
            self.data["annotations"].append(new)
            self.next_annotation += 1

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.data))
        people = sum(1 for a in self.data["annotations"] if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd"))
        log.info("wrote %s: %d images, %d people with keypoints, %d annotations", path, len(self.data["images"]),
                 people, len(self.data["annotations"]))


def build_data(root: Path) -> None:
    label_sources(root)
    data_dir = root / "data"
    images = data_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    coco = json.loads(COCO_JSON.read_text())
    rank = {image_id: r for r, image_id in enumerate(sorted(image["id"] for image in coco["images"]))}

    train, heldout_video = Merger(coco["categories"]), Merger(coco["categories"])
    for name, (_, _, is_heldout) in VIDEO_SOURCES.items():
        link = images / name
        if not link.exists():
            link.symlink_to(root / "labels" / name / "images")
        labels = json.loads((root / "labels" / name / "annotations.json").read_text())
        train.add(labels, name, lambda image, h=is_heldout: not h(image))
        heldout_video.add(labels, name, is_heldout)
    if not (images / "coco").exists():
        (images / "coco").symlink_to(COCO_IMAGES)
    train.add(coco, "coco", lambda image: not coco_heldout(image["id"], rank[image["id"]]))
    train.write(data_dir / "train.json")
    heldout_video.write(data_dir / "heldout_video.json")

    # Held-out COCO keeps its original ids and file names, so `main.py eval` reads COCO_IMAGES directly.
    held = {image["id"] for image in coco["images"] if coco_heldout(image["id"], rank[image["id"]])}
    heldout_coco = dict(coco, images=[i for i in coco["images"] if i["id"] in held],
                        annotations=[a for a in coco["annotations"] if a["image_id"] in held])
    (data_dir / "heldout_coco.json").write_text(json.dumps(heldout_coco))
    log.info("wrote %s: %d images", data_dir / "heldout_coco.json", len(held))


# ---------------------------------------------------------------- training


# Phase 1 ran the preset's tag weights (pull/push/cross-view 1e-3). By step 1806 the heatmaps put joints
# on the walkers, but the tags had collapsed (push loss ~0.7-1.0: every person's reference tag the same,
# where the push gradient vanishes), so the decoder joined joints of different people. Phase 2 continues
# the same run with tag weights 1e-2. `train` runs phase 1 to its end, then (called again, or with
# --resume) switches the run's config.json to phase 2 and resumes.
PHASE1_STEPS = 1806
# Phase 2's learning rate drops x0.1 here (chosen when the run reached this step on 22 Nov 2026, to spend
# the last ~20 minutes of the CPU session at the low rate); the schedule before it is unchanged.
LR_DECAY_STEP = 7390


# Phase 3 fine-tunes phase 2's weights (the default model committed before it) with a stronger push: after
# phase 2 the decoder still joined walkers side by side (push loss ~0.2 at the end), so the tags of
# different people were not far enough apart. Its own run folder, a fresh optimiser, a short warm-up.
PHASE3_STEPS = 17000
PHASE3_LR_DECAY_STEP = 13000


def training_config(root: Path, phase: int = 1):
    from tagtrack.model.config import ModelConfig
    from tagtrack.training.config import AugmentConfig, preset
    from tagtrack.training.losses import LossWeights

    if phase == 3:
        return replace(
            training_config(root, phase=2), steps=PHASE3_STEPS, lr_decay_steps=(PHASE3_LR_DECAY_STEP,),
            warmup_steps=100, checkpoint_every=500,
            loss=LossWeights(pull=1e-2, push=3e-2, cross_pull=1e-2, cross_push=3e-2, scale=1e-3))
    # One stack, width 64 (+32 per level), L = 4 tags: 1.4 GFLOPs at 256x384. Trained on 192x192
    # views (the 2-core CPU trains about 1 image/s at 256x256 when shared); zoom up to 3x so that the
    # small PETS walkers (shrunk 4x by fitting 768x576 into 192) are also seen at the size they have
    # at inference (4/9 of the frame at 256x384).
    model = ModelConfig(num_stacks=1, width=64, increase=32, tag_dim=4, input_height=192, input_width=192)
    tag = 1e-3 if phase == 1 else 1e-2
    return preset(
        "small", model=model,
        train_annotations=str(root / "data" / "train.json"), train_images=str(root / "data" / "images"),
        val_annotations=str(root / "data" / "heldout_coco.json"), val_images=str(COCO_IMAGES),
        augment=AugmentConfig(scale_min=0.75, scale_max=3.0, rotation_degrees=20.0, translate=0.4),
        batch_size=4, steps=PHASE1_STEPS if phase == 1 else 30_000, lr_decay_steps=(24_000,) if phase == 1 else (LR_DECAY_STEP,), lr=1e-3,
        warmup_steps=50, loss=LossWeights(pull=tag, push=tag, cross_pull=tag, cross_push=tag, scale=1e-3),
        workers=1, checkpoint_every=100, log_every=10, max_frame_gap=3,
    )


def start_training(root: Path) -> int:
    from tagtrack.training.config import TrainConfig

    run = root / "runs" / "default"
    command = [sys.executable, str(REPO / "main.py"), "train", "--out", str(run)]
    if (run / "last.state.pt").is_file():
        phase2 = training_config(root, phase=2)
        if TrainConfig.load(run / "config.json") != phase2:
            # Phase 1 is over (the run stops at PHASE1_STEPS): continue the same run with phase 2's config.
            log.info("switching %s to phase 2 (tag weights 1e-2, lr x0.1 at %d)", run, LR_DECAY_STEP)
            phase2.save(run / "config.json")
        command.append("--resume")
    else:
        config_path = root / "default_train_config.json"
        training_config(root, phase=1).save(config_path)
        command += ["--config", str(config_path)]
    return run_training(command)


def run_training(command: list[str]) -> int:
    log.info("running %s", " ".join(command))
    # One thread: on the shared 2-core machine, 2 OpenMP threads fell from 30 to 1 image/s whenever
    # another process took a core (threads wait for a descheduled partner); 1 thread kept about 22.
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    return subprocess.run(command, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS=threads)).returncode


def start_fine_tuning(root: Path, init: Path) -> int:
    """Phase 3 in ROOT/runs/phase3: start from INIT (phase 2's weights), or continue the run if it exists."""
    run = root / "runs" / "phase3"
    command = [sys.executable, str(REPO / "main.py"), "train", "--out", str(run)]
    if (run / "last.state.pt").is_file():
        command.append("--resume")
    else:
        config_path = root / "phase3_train_config.json"
        training_config(root, phase=3).save(config_path)
        command += ["--config", str(config_path), "--init", str(init)]
    return run_training(command)


# ---------------------------------------------------------------- export


def export_default(weights: Path, out: Path) -> None:
    """Same weights, with the inference input size recorded (the checkpoint's size is the app's default)."""
    from tagtrack.model.checkpoint import load_checkpoint, save_checkpoint
    from tagtrack.model.hourglass import HourglassNet

    loaded = load_checkpoint(weights)
    config = replace(loaded.config, input_height=INFERENCE_HW[0], input_width=INFERENCE_HW[1])
    net = HourglassNet(config)
    net.load_state_dict(loaded.model.state_dict())
    metadata = dict(loaded.metadata, source_checkpoint=str(weights.name),
                    note="tagtrack default model; see model/weights/MODEL_CARD.md")
    save_checkpoint(out, net, loaded.schema, metadata)
    log.info("wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)


# ---------------------------------------------------------------- recall against the teacher


def oks(teacher: dict, keypoints: np.ndarray, sigmas: np.ndarray) -> float:
    """COCO OKS of found joints (score > 0) against the teacher's confident joints (v > 0), box area as scale."""
    truth = np.asarray(teacher["keypoints"], dtype=np.float64).reshape(-1, 3)
    labelled = truth[:, 2] > 0
    if not labelled.any():
        return 0.0
    found = keypoints[:, 2] > 0
    squared = np.where(found, ((truth[:, :2] - keypoints[:, :2]) ** 2).sum(axis=1), np.inf)
    area = max(teacher["bbox"][2] * teacher["bbox"][3], 1.0)
    return float(np.exp(-squared / ((2 * sigmas) ** 2) / area / 2)[labelled].mean())


def in_any_box(point: np.ndarray, boxes: list[list[float]]) -> bool:
    return any(x <= point[0] <= x + w and y <= point[1] <= y + h for x, y, w, h in boxes)


def teacher_recall(weights: Path, annotations: Path, images: Path, confident_score: float = 0.5,
                   person_score: float = 0.2, input_hw: tuple[int, int] | None = None, every: int = 1) -> dict:
    """Per source: teacher-confident people (label score >= confident_score) found by the model at OKS >= 0.5
    (one-to-one, greedy by OKS), and model people (score >= person_score) matching no teacher label at
    OKS >= 0.5 and whose box centre lies in no ignore region ('extra': people the teacher may miss, or
    false alarms; look at the frames)."""
    from tagtrack.model.checkpoint import load_checkpoint
    from tagtrack.model.predict import predict_image, read_image, torch_infer_fn

    loaded = load_checkpoint(weights)
    infer = torch_infer_fn(loaded.model)
    hw = input_hw or (loaded.config.input_height, loaded.config.input_width)
    sigmas = loaded.schema.sigmas_array()
    data = json.loads(annotations.read_text())
    by_image: dict[int, list[dict]] = {}
    for annotation in data["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    stats: dict[str, dict[str, int]] = {}
    for index, image in enumerate(data["images"]):
        if index % every:
            continue
        source = image["file_name"].split("/")[0]
        s = stats.setdefault(source, {"frames": 0, "confident": 0, "found": 0, "model_people": 0, "extra": 0})
        poses = [p for p in predict_image(infer, read_image(images / image["file_name"]), hw, loaded.schema)
                 if p.score >= person_score]
        people = [a for a in by_image.get(image["id"], []) if a.get("num_keypoints", 0) > 0]
        ignores = [a["bbox"] for a in by_image.get(image["id"], []) if a.get("num_keypoints", 0) == 0]
        matrix = np.array([[oks(t, p.keypoints, sigmas) for p in poses] for t in people]).reshape(len(people), len(poses))
        matched_people, matched_poses = set(), set()
        for t, p in sorted(np.argwhere(matrix >= 0.5).tolist(), key=lambda tp: -matrix[tp[0], tp[1]]):
            if t not in matched_people and p not in matched_poses:
                matched_people.add(t)
                matched_poses.add(p)
        s["frames"] += 1
        confident = [t for t, a in enumerate(people) if a.get("score", 1.0) >= confident_score]
        s["confident"] += len(confident)
        s["found"] += sum(1 for t in confident if t in matched_people)
        s["model_people"] += len(poses)
        for p, pose in enumerate(poses):
            centre = (pose.box[:2] + pose.box[2:]) / 2
            if p not in matched_poses and not (matrix[:, p] >= 0.5).any() and not in_any_box(centre, ignores):
                s["extra"] += 1
    return stats


# ---------------------------------------------------------------- CLI


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/work/campaign"), help="work data folder (not in git)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("data", help="label, split and merge the training and held-out sets")
    commands.add_parser("train", help="start the run ROOT/runs/default (phase 1), or continue it (phase 2)")
    p = commands.add_parser("finetune", help="phase 3: fine-tune phase 2's weights in ROOT/runs/phase3 (or continue)")
    p.add_argument("init", type=Path, help="phase 2's weights (ROOT/runs/default/last.safetensors)")
    p = commands.add_parser("export", help="checkpoint with the inference input size recorded")
    p.add_argument("weights", type=Path)
    p.add_argument("--out", type=Path, default=REPO / "model" / "weights" / "default.safetensors")
    p = commands.add_parser("recall", help="teacher-confident people found on held-out video frames")
    p.add_argument("weights", type=Path)
    p.add_argument("--confident-score", type=float, default=0.5)
    p.add_argument("--person-score", type=float, default=0.2)
    p.add_argument("--every", type=int, default=1, help="use every Nth held-out frame")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="network input (default: the checkpoint's; run checkpoints record 192x192, use 256 384)")
    args = parser.parse_args()

    if args.command == "data":
        build_data(args.root)
    elif args.command == "train":
        return start_training(args.root)
    elif args.command == "finetune":
        return start_fine_tuning(args.root, args.init)
    elif args.command == "export":
        export_default(args.weights, args.out)
    elif args.command == "recall":
        input_hw = tuple(args.input_size) if args.input_size else None
        stats = teacher_recall(args.weights, args.root / "data" / "heldout_video.json", args.root / "data" / "images",
                               args.confident_score, args.person_score, input_hw=input_hw, every=args.every)
        total = {key: sum(s[key] for s in stats.values()) for key in next(iter(stats.values()))}
        for name, s in [*stats.items(), ("all", total)]:
            share = s["found"] / max(s["confident"], 1)
            print(f"{name:22s} frames {s['frames']:4d}  teacher-confident {s['confident']:4d}  found {s['found']:4d} "
                  f"({share:.1%})  model people {s['model_people']:4d}  extra {s['extra']:4d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
