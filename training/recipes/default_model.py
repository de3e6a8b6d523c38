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

All work data lives under --root (a folder of your choosing), never in the repository.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

from tagtrack.training.config import TrainConfig
from tagtrack.training.heldout import lspet_pck, model_predictor, teacher_predictor, teacher_recall

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
TEACHER = SHARED / "teachers" / "movenet_multipose" / "movenet_multipose_lightning_fp32.onnx"
COCO_JSON = SHARED / "annotations" / "coco_mini" / "person_keypoints_train2017.json"
COCO_IMAGES = SHARED / "images" / "coco_mini" / "train2017"
LSPET = SHARED / "lspet"

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


def coco_heldout_ids(coco: dict) -> set[int]:
    """Every 4th real COCO image (by sorted id) is held out: 20 of 80."""
    return {image_id for rank, image_id in enumerate(sorted(image["id"] for image in coco["images"])) if rank % 4 == 3}


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

    def add(self, data: dict, prefix: str, keep_image, repeat: int = 1) -> None:
        track_map: dict[int, int] = {}
        video_map: dict[int, int] = {}
        image_map: dict[int, int] = {}
        for image in data["images"]:
            if not keep_image(image):
                continue
            new = dict(image, id=self.next_image, file_name=f"{prefix}/{image['file_name']}")
            if repeat > 1:
                new["repeat"] = repeat
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
    heldout = coco_heldout_ids(coco)

    train, heldout_video = Merger(coco["categories"]), Merger(coco["categories"])
    heldout_vtest = Merger(coco["categories"])  # PETS alone: its grouping (`eval --grouping`) is the tags' hard case
    for name, (_, _, is_heldout) in VIDEO_SOURCES.items():
        link = images / name
        if not link.exists():
            link.symlink_to(root / "labels" / name / "images")
        labels = json.loads((root / "labels" / name / "annotations.json").read_text())
        train.add(labels, name, lambda image, h=is_heldout: not h(image))
        heldout_video.add(labels, name, is_heldout)
        if name == "vtest":
            heldout_vtest.add(labels, name, is_heldout)
    if not (images / "coco").exists():
        (images / "coco").symlink_to(COCO_IMAGES)
    train.add(coco, "coco", lambda image: image["id"] not in heldout)
    train.write(data_dir / "train.json")
    heldout_video.write(data_dir / "heldout_video.json")
    heldout_vtest.write(data_dir / "heldout_vtest.json")

    # Held-out COCO keeps its original ids and file names, so `main.py eval` reads COCO_IMAGES directly.
    heldout_coco = dict(coco, images=[i for i in coco["images"] if i["id"] in heldout],
                        annotations=[a for a in coco["annotations"] if a["image_id"] in heldout])
    (data_dir / "heldout_coco.json").write_text(json.dumps(heldout_coco))
    log.info("wrote %s: %d images", data_dir / "heldout_coco.json", len(heldout))


# ---------------------------------------------------------------- the general corpus (phase 5 on)

# LSP Extended (8,500 images present, one labelled athlete each): every image whose rank among the sorted
# names is 0 or 1 modulo 17 is held out (1,000), the other 7,500 train.
def lspet_heldout(rank: int) -> bool:
    return rank % 17 < 2


# Times each source's training images are sampled per epoch in the general corpus: LSPET's 7,500 images
# would otherwise drown the rest. With these, an epoch is about 7,500 LSPET, 1,200 PETS (12 %), 600 other
# video frames and 700 COCO views: PETS walkers stay well under a quarter of the samples.
GENERAL_REPEAT = {"vtest": 4, "cam01": 6, "sports2d": 6, "coco_val_unannotated": 4, "coco": 8, "lspet": 1}
# Phase 6's corpus (data/train_general6.json): PETS x16, about 2,400 of 11,300 samples (21 %), because
# phase 5's 12 % lost a quarter of the walkers it had found.
PHASE6_REPEAT = {**GENERAL_REPEAT, "vtest": 16}
# Teacher input long side for the dense maps of the non-LSPET images (LSPET's are made at 256 on import).
MAPS_LONG_SIDE = 384


def import_lspet(root: Path) -> None:
    """LSPET train part with the teacher (other people, face points, left/right check, dense maps) and the
    held-out part with human labels only. Existing outputs are reused."""
    from tagtrack.training.lsp import import_lsp

    out = root / "labels" / "lspet"
    out.mkdir(parents=True, exist_ok=True)
    names = sorted((LSPET / "images.txt").read_text().split())
    for part, keep in (("train", lambda r: not lspet_heldout(r)), ("heldout", lspet_heldout)):
        if (out / f"{part}.json").is_file():
            log.info("reusing %s", out / f"{part}.json")
            continue
        listing = out / f"{part}.txt"
        listing.write_text("\n".join(n for r, n in enumerate(names) if keep(r)) + "\n")
        teacher = TEACHER if part == "train" else None
        summary = import_lsp(LSPET / "joints.mat", LSPET / "images", out / f"{part}.json", image_list=listing,
                             teacher_path=teacher, maps_dir=out / "maps" if teacher else None, teacher_threads=1)
        log.info("%s", summary)


def build_general_data(root: Path, repeat: dict[str, int] = GENERAL_REPEAT, name: str = "train_general.json") -> None:
    """data/NAME (every training source, sampled `repeat` times per epoch), data/heldout_lspet.json,
    and the teacher's dense maps of every training image under ROOT/maps (file_name + .npy)."""
    from tagtrack.training.distill import write_teacher_maps

    import_lspet(root)
    data_dir, images, maps = root / "data", root / "data" / "images", root / "maps"
    maps.mkdir(parents=True, exist_ok=True)
    coco = json.loads(COCO_JSON.read_text())
    heldout = coco_heldout_ids(coco)
    general = Merger(coco["categories"])
    for source, (_, _, is_heldout) in VIDEO_SOURCES.items():
        labels = json.loads((root / "labels" / source / "annotations.json").read_text())
        general.add(labels, source, lambda image, h=is_heldout: not h(image), repeat=repeat.get(source, 1))
    general.add(coco, "coco", lambda image: image["id"] not in heldout, repeat=repeat["coco"])
    lspet = json.loads((root / "labels" / "lspet" / "train.json").read_text())
    general.add(lspet, "lspet", lambda image: True, repeat=repeat["lspet"])
    for link, target in ((images / "lspet", LSPET / "images"), (maps / "lspet", root / "labels" / "lspet" / "maps")):
        if not link.exists():
            link.symlink_to(target)
    general.write(data_dir / name)
    heldout = json.loads((root / "labels" / "lspet" / "heldout.json").read_text())
    (data_dir / "heldout_lspet.json").write_text(json.dumps(heldout))
    written = write_teacher_maps(TEACHER, data_dir / name, images, maps, MAPS_LONG_SIDE)
    log.info("wrote %d teacher map files (LSPET's came with the import)", written)


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


# Phase 5 (the general model): phase 3's weights trained on the general corpus (LSPET, COCO, all videos) with
# dense distillation and close-up views.
PHASE5_STEPS = 14000
PHASE5_LR_DECAY_STEP = 11500

# Phase 6 continues phase 5's weights with the teacher's mirror peaks cleared from its maps (phase 5's
# skeletons collapsed: the student copied MoveNet's left/right hedging), PETS at 21 % of the samples
# (data/train_general6.json) and a third of the views close-ups (half in phase 5).
PHASE6_STEPS = 20000
PHASE6_LR_DECAY_STEP = 17000
# Phase 6b: the same run, stopped at step 8663 and continued with peak pixels weighted (heatmap_foreground
# 9: w = 1 + 9 * target) to step 16,000, the rate x0.1 at 13,500. An A/B of 1,000 steps each from phase 5's
# weights on phase 6's data (held-out LSPET, every 8th image, 92 people): plain MSE median heatmap peak in
# the person's box 0.11, argmax-in-box PCK 0.043, decoded PCK 0.070; weighted 0.25, 0.068, 0.122.
PHASE6B_FROM_STEP = 8663
PHASE6B_STEPS = 16000
PHASE6B_LR_DECAY_STEP = 13500
PHASE6B_HEATMAP_FOREGROUND = 9.0


# Phase 7 continues the bundled general model (phase 6b's weights) with phase 6b's corpus and loss, the rate
# back at 1e-3 after a short warm-up; with --width 96 the same from the general model widened (its weights
# embedded in a network of width 96, +32 per level: 2.8 GFLOPs at 256x384, 1.5 M parameters;
# `hourglass.widened_state_dict`), each run on one core for the same wall time (issue 16, item 5): about
# 2.6 and 1.6 steps/s. Both started with 40,000 steps and no decay; an hour in, the schedules were set so
# that both end at the same time with the last quarter at x0.1 (the runs continued; the schedule before
# the change is the same). The width-96 run, taken to its end on 2 Dec, is the bundled `wide` model.
PHASE7_STEPS, PHASE7_LR_DECAY_STEP = 16000, 12000
PHASE7_WIDE_STEPS, PHASE7_WIDE_LR_DECAY_STEP = 9500, 7000
PHASE7_WIDTHS = (64, 96)

# Phase 8 (2 Dec): phase 7 at width 64 from phase 6b's weights, with the mirror weight in the heatmap loss
# (LossWeights.heatmap_mirror 9: a pixel of a joint's map weighs 1 + 9 x the target of the same joint on the
# other side), against the default's skeletons drawn as lines (left and right maps peaking on both joints).
# Chosen over the plain phase 7 by an A/B of 1,000 steps each (one core each, the model card); the run went
# on alone with two threads, its schedule set at step 1,000 and again at 5,200 (before any decay) to fit
# the session. Measured and not adopted (fewer close-up people found, worse tracking: the model card).
PHASE8_STEPS, PHASE8_LR_DECAY_STEP = 11000, 8250
PHASE8_HEATMAP_MIRROR = 9.0

# Phase 9 (2 Dec): phase 8 at a third of the rate and a third of the mirror weight. Phases 7 and 8 restarted
# phase 6b at 1e-3 and lost some of its close-up people and its tracking; a lower peak rate keeps the run near
# the default's weights while the smaller mirror weight still charges left/right confusions. Measured and not
# adopted (cam02 close-ups 48 % against 90 %: the model card).
PHASE9_STEPS, PHASE9_LR_DECAY_STEP = 12000, 9000
PHASE9_LR = 3e-4
PHASE9_HEATMAP_MIRROR = 3.0

# Phase 10 (5 Dec): phase 6b's weights and corpus with sharper heatmap targets, against two walkers side by side
# found as one person (16 TrackEval MOTA points on PETS frames 1-400, docs/tracker.md). A walker 75 px tall is
# 8-9 map pixels at 256x384, so two walking side by side are 3-4 map pixels apart: sigma-2 targets (and the
# teacher's soft maps, wider still on small people) draw them as one blob. Here each person's sigma follows their
# size (`sigma_mode` "size": sigma 1 at the walkers' size) and the teacher's maps are off (human and teacher
# labels only, doubtful people still ignore regions), at 1/5 of phase 6b's peak rate. The last checkpoint is the
# bundled default (the model card).
PHASE10_STEPS, PHASE10_LR_DECAY_STEP = 4000, 3000
PHASE10_LR = 2e-4

# Phase 11 (5 Dec): phase 10 again from phase 10's weights with the base sigma at 1.5 (0.75 on the walkers), to
# separate more of them. Measured and not adopted (fewer close-up and sports people found at 256x384, more people
# drawn as lines, worse tracking: the model card).
PHASE11_SIGMA = 1.5

# Phase 13 (5 Dec, night): phase 10's network with a finer heatmap head (stride 2, HigherHRNet's idea:
# `hourglass.FineHeatmaps`), from phase 10's weights (the head starts at the coarse maps up-sampled), phase 10's data
# and loss. A PETS walker's joints sit on a 9-image-pixel grid at stride 4, so two walkers side by side, 26 px
# apart, are 3 map pixels apart; at stride 2 they are 6, and the size-scaled sigma (in map pixels) lets the small
# walkers' peaks be 2 input pixels wide instead of 4, while people over 64 input pixels keep phase 10's.
PHASE13_STEPS, PHASE13_LR_DECAY_STEP = 3000, 2250
PHASE13_OUTPUT_STRIDE = 2


def training_config(root: Path, phase: int = 1):
    from tagtrack.model.config import ModelConfig
    from tagtrack.training.config import AugmentConfig, preset
    from tagtrack.training.losses import LossWeights

    if phase == 6:
        phase5 = training_config(root, phase=5)
        return replace(
            phase5, train_annotations=str(root / "data" / "train_general6.json"), suppress_mirror_peaks=True,
            augment=replace(phase5.augment, closeup_probability=1 / 3), steps=PHASE6_STEPS,
            lr_decay_steps=(PHASE6_LR_DECAY_STEP,))
    if phase == 5:
        # Half the views are close-ups (a person filling 40-100 % of the view height; a third of those head
        # to hips, as a desk webcam sees); the other half keep phase 3's zoom range for the small walkers.
        augment = AugmentConfig(scale_min=0.75, scale_max=3.0, rotation_degrees=30.0, translate=0.3,
                                closeup_probability=0.5, closeup_min=0.4, closeup_max=1.0, upper_body_probability=0.3)
        return replace(
            training_config(root, phase=3), train_annotations=str(root / "data" / "train_general.json"),
            train_teacher_maps=str(root / "maps"), augment=augment, steps=PHASE5_STEPS,
            lr_decay_steps=(PHASE5_LR_DECAY_STEP,), checkpoint_every=1000)
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


def phase7_config(root: Path, width: int = 64):
    """Phase 7: phase 6b's corpus and loss from the general model, at width 64 or widened."""
    phase6b = phase6b_config(root)
    steps, decay = (PHASE7_STEPS, PHASE7_LR_DECAY_STEP) if width == 64 else (PHASE7_WIDE_STEPS, PHASE7_WIDE_LR_DECAY_STEP)
    return replace(phase6b, model=replace(phase6b.model, width=width), steps=steps,
                   lr_decay_steps=(decay,), warmup_steps=100)


def phase8_config(root: Path):
    """Phase 8: phase 7 at width 64, with left/right confusions charged in the heatmap loss."""
    phase7 = phase7_config(root, 64)
    return replace(phase7, steps=PHASE8_STEPS, lr_decay_steps=(PHASE8_LR_DECAY_STEP,),
                   loss=replace(phase7.loss, heatmap_mirror=PHASE8_HEATMAP_MIRROR))


def phase9_config(root: Path):
    """Phase 9: phase 8 with a lower rate and a smaller mirror weight."""
    phase8 = phase8_config(root)
    return replace(phase8, steps=PHASE9_STEPS, lr_decay_steps=(PHASE9_LR_DECAY_STEP,), lr=PHASE9_LR,
                   loss=replace(phase8.loss, heatmap_mirror=PHASE9_HEATMAP_MIRROR))


def phase10_config(root: Path):
    """Phase 10: phase 6b from its weights with size-scaled sigmas and no teacher maps (sharper peaks)."""
    phase6b = phase6b_config(root)
    return replace(phase6b, sigma_mode="size", train_teacher_maps="", steps=PHASE10_STEPS,
                   lr_decay_steps=(PHASE10_LR_DECAY_STEP,), lr=PHASE10_LR, warmup_steps=100, checkpoint_every=1000)


def phase11_config(root: Path):
    """Phase 11: phase 10 with a smaller base sigma, from phase 10's weights."""
    return replace(phase10_config(root), sigma=PHASE11_SIGMA)


def phase13_config(root: Path):
    """Phase 13: phase 10 with stride-2 heatmaps (a finer head), from phase 10's weights."""
    phase10 = phase10_config(root)
    return replace(phase10, model=replace(phase10.model, output_stride=PHASE13_OUTPUT_STRIDE), steps=PHASE13_STEPS,
                   lr_decay_steps=(PHASE13_LR_DECAY_STEP,), checkpoint_every=500)


# ---------------------------------------------------------------- the pretrained start (MobileNet FPN family)

# The network of MoveNet MultiPose with its weights (`tagtrack import-teacher`), trained in stages on phase 6b's
# corpus and loss (teacher maps with mirror peaks cleared, human labels, peak pixels weighted). 192x192 views as
# the hourglass phases; channels-last (faster on the CPU for depthwise convs: docs/training.md).
PRETRAINED_VIEW_HW = (192, 192)
PRETRAINED_TAG_DIM = 4
# Stage "tags": only the new tag head learns (the encoder, decoder and heatmap head stay the teacher's), at the
# hourglass phases' tag weights; each step is cheap (no backward through the encoder).
TAGS_STEPS, TAGS_LR_DECAY_STEP = 2000, 1600
# Stage "full": everything learns from the tags stage's weights, at a lower rate than the from-scratch phases
# (the features are already good; a high rate would first destroy them); batch 4 (8 views with the pairs) as the
# hourglass phases, since a step with the encoder's backward costs about 3x a tags-stage step.
FULL_STEPS, FULL_LR_DECAY_STEP, FULL_LR = 2400, 2000, 2e-4
# Stage "tags-push" (5 Dec, measured against "tags"): the tags stage continued with the push terms x3, since the
# full stage's tags collapsed (pull 0, push 1/8 steps: every tag the same) and the tags stage's people on PETS
# join walkers (box heights to 126 px where walkers are 40-110): tag head only, from the tags stage's weights.
TAGS_PUSH_STEPS, TAGS_PUSH_LR_DECAY_STEP, TAGS_PUSH_LR, TAGS_PUSH_FACTOR = 1500, 1200, 5e-4, 3.0
# Stage "context" (5 Dec, after tags-push): the tags stage with the context tag head (family mobilenet_fpn_context:
# heatmaps and cell positions in, separable convs dilated 1-16), since the plain head's 3x3 view of 24 features
# joins walkers side by side; tag head only, from the imported teacher (its trunk), a longer schedule.
CONTEXT_STEPS, CONTEXT_LR_DECAY_STEP = 3000, 2400
# Stage "full-low" (5 Dec, after context): the full stage at a 20x lower rate, from the tags stage's step 1,000
# (its best PETS checkpoint). The full stage's collapse came within 250 steps, before the loss could have moved
# the maps far from the teacher's: Adam's step of about the rate per weight is large against MoveNet's weights
# with batch norm folded in (many below 0.01), so the rate, not the loss, is the first suspect.
FULL_LOW_STEPS, FULL_LOW_LR_DECAY_STEP, FULL_LOW_LR = 2000, 1600, 1e-5
# Stage "zoom" (5 Dec, after full-low): everything learns, from the tags stage's step 1,000, with the heatmap
# targets made by the starting network itself (config.self_distill_zoom: the larger of its maps of the view and
# of the view zoomed 2x). Measured reason: on held-out PETS frames its tags group even the ground-truth joint
# locations worse than the hourglass's (COCO AP 0.606 against 0.807; `tagtrack eval --grouping`), so the tags
# need features trained for them; the two stages that trained the features toward the data's targets lost
# accuracy, while these targets keep the maps MoveNet's kind and raise the small walkers' peaks (at 384x512 it
# finds 91 % of them against 79 % at 256x384).
# The heatmap term weighs 30x phase 6b's: at 1x its steps let the tag terms pull the features away from the maps
# (at step 500 the self-distilled heatmap loss had grown from 0.001 to 0.005, some joints' maps peaked at 0.01 on
# PETS, and COCO AP on held-out PETS frames was 0.000), while the tags separated the ground-truth joint locations
# better (AP 0.642 against 0.548).
ZOOM_STEPS, ZOOM_LR_DECAY_STEP, ZOOM_LR, ZOOM_FACTOR, ZOOM_HEATMAP_WEIGHT = 1500, 1200, 3e-5, 2, 30.0
# Stage "anchored" (5 Dec, after zoom): the zoom stage at zoom 1, the targets exactly the starting maps. At step 500
# the zoom stage's tags grouped PETS's ground-truth joints better (AP 0.641 against 0.548) but its own detections
# lost (PETS AP 0.185 against 0.329, COCO 0.081 against 0.125): the 2x maps pooled back are blocky (a peak's
# place inside its 2x2 block is lost, and with it the decoder's sub-cell fit) and raise other peaks.
# Stage "tag-decoder" (5 Dec, after anchored, which lost detections as zoom did: PETS AP 0.194, COCO 0.074 at
# step 500): the tags get a decoder of their own (family mobilenet_fpn_tag_decoder, a copy of MoveNet's decoder
# on the shared encoder), from the tags stage's step 1,000, whose tags it computes exactly at step 0; only the
# tags' decoder and head learn, so the heatmaps cannot move at all.
TAG_DECODER_STEPS, TAG_DECODER_LR_DECAY_STEP, TAG_DECODER_LR = 1200, 1000, 3e-4
TAG_DECODER_TRAINABLE = ("tag_top.", "tag_laterals.", "tag_merges.", "tag_head.")
PRETRAINED_STAGES = ("tags", "full", "tags-push", "context", "full-low", "zoom", "anchored", "tag-decoder")


def pretrained_config(root: Path, stage: str):
    """The training config of a stage of the pretrained start."""
    from tagtrack.model.teacher_import import mobilenet_fpn_config

    base = replace(phase6b_config(root), model=mobilenet_fpn_config(PRETRAINED_TAG_DIM, 17, PRETRAINED_VIEW_HW),
                   batch_size=8, warmup_steps=100, checkpoint_every=500, channels_last=True)
    if stage == "tags":
        return replace(base, trainable=("tag_head.",), steps=TAGS_STEPS, lr_decay_steps=(TAGS_LR_DECAY_STEP,))
    if stage == "full":
        return replace(base, steps=FULL_STEPS, lr_decay_steps=(FULL_LR_DECAY_STEP,), lr=FULL_LR, batch_size=4)
    if stage == "tags-push":
        loss = replace(base.loss, push=base.loss.push * TAGS_PUSH_FACTOR, cross_push=base.loss.cross_push * TAGS_PUSH_FACTOR)
        return replace(base, trainable=("tag_head.",), steps=TAGS_PUSH_STEPS, lr_decay_steps=(TAGS_PUSH_LR_DECAY_STEP,),
                       lr=TAGS_PUSH_LR, loss=loss)
    if stage == "full-low":
        return replace(base, steps=FULL_LOW_STEPS, lr_decay_steps=(FULL_LOW_LR_DECAY_STEP,), lr=FULL_LOW_LR, batch_size=4)
    if stage in ("zoom", "anchored"):
        return replace(base, steps=ZOOM_STEPS, lr_decay_steps=(ZOOM_LR_DECAY_STEP,), lr=ZOOM_LR, batch_size=4,
                       self_distill_zoom=ZOOM_FACTOR if stage == "zoom" else 1,
                       loss=replace(base.loss, heatmap=ZOOM_HEATMAP_WEIGHT))
    if stage == "tag-decoder":
        model = mobilenet_fpn_config(PRETRAINED_TAG_DIM, 17, PRETRAINED_VIEW_HW, family="mobilenet_fpn_tag_decoder")
        return replace(base, model=model, trainable=TAG_DECODER_TRAINABLE, steps=TAG_DECODER_STEPS,
                       lr_decay_steps=(TAG_DECODER_LR_DECAY_STEP,), lr=TAG_DECODER_LR)
    if stage == "context":
        model = mobilenet_fpn_config(PRETRAINED_TAG_DIM, 17, PRETRAINED_VIEW_HW, family="mobilenet_fpn_context")
        return replace(base, model=model, trainable=("tag_head.",), steps=CONTEXT_STEPS,
                       lr_decay_steps=(CONTEXT_LR_DECAY_STEP,))
    raise ValueError(f"unknown stage {stage!r}")


def start_pretrained(root: Path, init: Path, stage: str) -> int:
    """A stage of the pretrained start in ROOT/runs/pretrained-STAGE: from INIT (`import-teacher`'s checkpoint for
    "tags", the tags stage's weights for "full"), or continue the run."""
    run = root / "runs" / f"pretrained-{stage}"
    command = [sys.executable, str(REPO / "main.py"), "-v", "train", "--out", str(run)]
    if (run / "last.state.pt").is_file():
        command.append("--resume")
    else:
        config_path = root / f"pretrained-{stage}_train_config.json"
        PHASE_CONFIGS[f"pretrained-{stage}"](root).save(config_path)
        command += ["--config", str(config_path), "--init", str(init)]
    return run_training(command)


def phase6b_config(root: Path):
    """Phase 6's run from PHASE6B_FROM_STEP on: peak pixels weighted, a longer schedule."""
    phase6 = training_config(root, phase=6)
    return replace(phase6, steps=PHASE6B_STEPS, lr_decay_steps=(PHASE6B_LR_DECAY_STEP,),
                   loss=replace(phase6.loss, heatmap_foreground=PHASE6B_HEATMAP_FOREGROUND))


# Every phase of the recipe by name, as the config it trains (built from ROOT's work data): what the launchers
# below start, and what `phases` prints. Phases 1-2 are one run (ROOT/runs/default) and 6-6b another.
PHASE_CONFIGS: dict[str, Callable[[Path], TrainConfig]] = {
    "1": partial(training_config, phase=1),
    "2": partial(training_config, phase=2),
    "3": partial(training_config, phase=3),
    "5": partial(training_config, phase=5),
    "6": partial(training_config, phase=6),
    "6b": phase6b_config,
    **{("7" if width == 64 else f"7-width{width}"): partial(phase7_config, width=width) for width in PHASE7_WIDTHS},
    "8": phase8_config,
    "9": phase9_config,
    "10": phase10_config,
    "11": phase11_config,
    "13": phase13_config,
    **{f"pretrained-{stage}": partial(pretrained_config, stage=stage) for stage in PRETRAINED_STAGES},
}


def phase_rows(root: Path) -> list[str]:
    """One line per phase: its network, data, schedule, what learns, its heatmap targets and the loss weights that
    are not zero."""
    rows = []
    for name, build in PHASE_CONFIGS.items():
        config = build(root)
        loss = ", ".join(f"{key} {value:g}" for key, value in vars(config.loss).items() if value)
        rows.append(f"{name:22} {config.model.describe():38} {Path(config.train_annotations).name:22} "
                    f"{config.steps:6d} steps, batch {config.batch_size}, lr {config.lr:g} (x0.1 at "
                    f"{', '.join(map(str, config.lr_decay_steps))}), learns {', '.join(config.trainable) or 'all'}; "
                    f"sigma {config.sigma:g} {config.sigma_mode}, teacher maps {'on' if config.train_teacher_maps else 'off'}; "
                    f"{loss}")
    return rows


def start_training(root: Path) -> int:
    from tagtrack.training.config import TrainConfig

    run = root / "runs" / "default"
    command = [sys.executable, str(REPO / "main.py"), "-v", "train", "--out", str(run)]
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


def start_fine_tuning(root: Path, init: Path, phase: int = 3, width: int = 64) -> int:
    """Phase 3, 5, 6, 7, 8, 9, 10 or 11 in ROOT/runs/phaseN (phase 7 at another width: phase7-widthW): start from INIT (the
    previous phase's weights), or continue the run."""
    from tagtrack.training.config import TrainConfig

    name = f"phase{phase}" if width == 64 else f"phase{phase}-width{width}"
    config = PHASE_CONFIGS[str(phase) if width == 64 else f"{phase}-width{width}"](root)
    run = root / "runs" / name
    command = [sys.executable, str(REPO / "main.py"), "-v", "train", "--out", str(run)]
    if (run / "last.state.pt").is_file():
        if phase == 6 and TrainConfig.load(run / "config.json") != phase6b_config(root):
            # Phase 6 was stopped at PHASE6B_FROM_STEP: the same run continues as phase 6b.
            log.info("switching %s to phase 6b (heatmap foreground weight %g)", run, PHASE6B_HEATMAP_FOREGROUND)
            phase6b_config(root).save(run / "config.json")
        elif phase >= 7:  # 7-11 keep the weights they started from
            saved = TrainConfig.load(run / "config.json")
            config = replace(config, init_weights=saved.init_weights)  # where the run started stays recorded
            if saved != config:
                # The recipe's schedule was set after the run started: the same run continues with it.
                log.info("updating %s to the recipe's phase-%d schedule (%d steps, lr x0.1 at %s)", run, phase,
                         config.steps, config.lr_decay_steps)
                config.save(run / "config.json")
        command.append("--resume")
    else:
        config_path = root / f"{name}_train_config.json"
        config.save(config_path)
        command += ["--config", str(config_path), "--init", str(init)]
    return run_training(command)


# ---------------------------------------------------------------- export


# The bundled general model (phase 6b) is used with these settings, stored in its checkpoint; chosen on held-out
# video (model/weights/MODEL_CARD.md, phase 6b): its peaks are higher and its person scores lower than phase 3's.
GENERAL_SETTINGS = {"decode": {"detection_threshold": 0.4}, "tracker": {"high_score": 0.4, "new_track_score": 0.4}}
# Phase 7 at width 96 (bundled as `wide`): the same, with detection threshold 0.5, chosen on held-out video (cam02
# at 384x256, teacher-confident people found: 0.25 81/98, 0.4 74, 0.5 79, 0.6 67; PETS and sports2d equal within
# one person at 0.4 and 0.5, with fewer people matching no teacher person at 0.5).
WIDE_SETTINGS = {**GENERAL_SETTINGS, "decode": {"detection_threshold": 0.5}}
# The pretrained-start model (MobileNet FPN family): its sigmoid heatmaps peak at 0.3-0.9 on people.
PRETRAINED_SETTINGS = {"decode": {"detection_threshold": 0.3}, "tracker": {"high_score": 0.4, "new_track_score": 0.4}}


def export_default(weights: Path, out: Path, settings: dict | None = None, half: bool = False) -> None:
    """Same weights, with the inference input size recorded (the checkpoint's size is the app's default) and
    the settings the model is used with, if any; HALF stores the weights as float16 (half the file; they load
    into a float32 network)."""
    from tagtrack.model.checkpoint import load_checkpoint, save_checkpoint
    from tagtrack.model.networks import build_network

    loaded = load_checkpoint(weights)
    config = replace(loaded.config, input_height=INFERENCE_HW[0], input_width=INFERENCE_HW[1])
    net = build_network(config)
    net.load_state_dict(loaded.model.state_dict())
    if half:
        net.half()
    metadata = dict(loaded.metadata, source_checkpoint=str(weights.name),
                    note="tagtrack bundled model; see model/weights/MODEL_CARD.md")
    if config.family.startswith("mobilenet_fpn"):
        from tagtrack.model.teacher_import import LINEAGE

        metadata["lineage"] = LINEAGE  # a run's checkpoints do not carry the import's metadata
    save_checkpoint(out, net, loaded.schema, metadata, settings=settings)
    log.info("wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)


# ---------------------------------------------------------------- CLI


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="work data folder (labels, runs; never in git)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("data", help="label, split and merge the training and held-out sets")
    commands.add_parser("phases", help="every phase's config in one table (network, data, schedule, loss)")
    commands.add_parser("train", help="start the run ROOT/runs/default (phase 1), or continue it (phase 2)")
    p = commands.add_parser("finetune", help="phase 3: fine-tune phase 2's weights in ROOT/runs/phase3 (or continue)")
    p.add_argument("init", type=Path, help="phase 2's weights (ROOT/runs/default/last.safetensors)")
    p = commands.add_parser("general-data", help="the general corpus: LSPET import, train_general.json, teacher maps")
    p.add_argument("--phase", type=int, choices=(5, 6), default=5, help="6: train_general6.json (PETS x16)")
    p = commands.add_parser("general", help="phase 5-11: train the general model in ROOT/runs/phaseN (or continue)")
    p.add_argument("init", type=Path, help="the previous phase's weights (phases 7-10: phase 6b's, "
                                           "`git show 6bfcb29:model/weights/default.safetensors`; 11 and 13: phase 10's)")
    p.add_argument("--phase", type=int, choices=(5, 6, 7, 8, 9, 10, 11, 13), default=5)
    p.add_argument("--width", type=int, choices=PHASE7_WIDTHS, default=64,
                   help="phase 7: the network's width (96: the init weights widened)")
    p = commands.add_parser("pretrained", help="the pretrained start: train a stage in ROOT/runs/pretrained-STAGE "
                                               "(or continue it)")
    p.add_argument("init", type=Path, help="tags and context: `tagtrack import-teacher`'s checkpoint; full, full-low, tags-push, zoom, anchored "
                                           "and tag-decoder: "
                                           "the tags stage's weights")
    p.add_argument("--stage", choices=PRETRAINED_STAGES, required=True)
    p = commands.add_parser("export", help="checkpoint with the inference input size recorded")
    p.add_argument("weights", type=Path)
    p.add_argument("--out", type=Path, default=None,
                   help="default: model/weights/default.safetensors, with --wide wide.safetensors (the street model "
                        "of phase 3: street.safetensors)")
    settings = p.add_mutually_exclusive_group()
    settings.add_argument("--general", action="store_true",
                          help="a general model (phase 6 on; phase 6b is the default): its settings stored too")
    settings.add_argument("--wide", action="store_true",
                          help="phase 7 at width 96 (bundled as wide): its settings stored too")
    settings.add_argument("--pretrained", action="store_true",
                          help="a pretrained-start model (mobilenet_fpn): its settings stored, weights as float16")
    p = commands.add_parser("recall", help="teacher-confident people found on held-out video frames")
    p.add_argument("weights", type=Path)
    p.add_argument("--confident-score", type=float, default=0.5)
    p.add_argument("--person-score", type=float, default=0.2)
    p.add_argument("--every", type=int, default=1, help="use every Nth held-out frame")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="network input (default: the checkpoint's; run checkpoints record 192x192, use 256 384)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="decode.NAME=VALUE",
                   help="decoder settings over the checkpoint's stored ones (as `tagtrack run --set`)")
    p = commands.add_parser("lspet-pck", help="PCK@0.2 (torso) on the held-out LSPET people: a model or the teacher")
    p.add_argument("weights", type=Path, nargs="?", default=None, help="checkpoint (omit with --teacher)")
    p.add_argument("--teacher", type=int, default=None, metavar="LONG_SIDE", help="measure the teacher at this input")
    p.add_argument("--every", type=int, default=1, help="use every Nth held-out image")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None)
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="decode.NAME=VALUE",
                   help="decoder settings over the checkpoint's stored ones (as `tagtrack run --set`)")
    args = parser.parse_args()

    if args.command == "data":
        build_data(args.root)
    elif args.command == "phases":
        print("\n".join(phase_rows(args.root)))
    elif args.command == "train":
        return start_training(args.root)
    elif args.command == "finetune":
        return start_fine_tuning(args.root, args.init)
    elif args.command == "general-data":
        if args.phase == 6:
            build_general_data(args.root, PHASE6_REPEAT, "train_general6.json")
        else:
            build_general_data(args.root)
    elif args.command == "general":
        if args.width != 64 and args.phase != 7:
            parser.error("--width is for phase 7")
        return start_fine_tuning(args.root, args.init, phase=args.phase, width=args.width)
    elif args.command == "pretrained":
        return start_pretrained(args.root, args.init, args.stage)
    elif args.command == "export":
        from tagtrack.model.checkpoint import BUNDLED_WEIGHTS

        export_default(args.weights, args.out or BUNDLED_WEIGHTS["wide" if args.wide else "default"],
                       GENERAL_SETTINGS if args.general else WIDE_SETTINGS if args.wide else
                       PRETRAINED_SETTINGS if args.pretrained else None, half=args.pretrained)
    elif args.command == "lspet-pck":
        predict = (teacher_predictor(TEACHER, args.teacher) if args.teacher else
                   model_predictor(args.weights, tuple(args.input_size) if args.input_size else None,
                                   args.assignments))
        result = lspet_pck(args.root / "data" / "heldout_lspet.json", LSPET / "images", predict, every=args.every)
        print(f"LSPET held-out PCK@0.2: {result['pck']:.3f} ({result['correct']}/{result['joints']} joints, "
              f"{result['people']} people)")
    elif args.command == "recall":
        input_hw = tuple(args.input_size) if args.input_size else None
        stats = teacher_recall(args.weights, args.root / "data" / "heldout_video.json", args.root / "data" / "images",
                               args.confident_score, args.person_score, input_hw=input_hw, every=args.every,
                               assignments=args.assignments)
        total = {key: sum(s[key] for s in stats.values()) for key in next(iter(stats.values()))}
        for name, s in [*stats.items(), ("all", total)]:
            share = s["found"] / max(s["confident"], 1)
            print(f"{name:22s} frames {s['frames']:4d}  teacher-confident {s['confident']:4d}  found {s['found']:4d} "
                  f"({share:.1%})  model people {s['model_people']:4d}  extra {s['extra']:4d}  "
                  f"collapsed {s['collapsed'] / max(s['model_people'], 1):.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
