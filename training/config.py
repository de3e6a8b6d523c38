"""Training configuration: one dataclass, saved as JSON into every run folder and checkpoint.

Presets:
  tiny   tests and CI: model.config.TINY at 64x64, a few steps
  small  the real-time model (model.config.SMALL, 256x384)
  paper  the 4-stack 512 model (model.config.PAPER) with the paper's schedule: Adam, lr 2e-4,
         x0.1 late in training (Newell et al. train for about 300k iterations at batch 32)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from tagtrack.model.config import PAPER, SMALL, TINY, ModelConfig
from tagtrack.model.errors import UserFacingError
from tagtrack.model.files import read_json
from tagtrack.training.losses import SCALE_LOSSES, SCALE_TRUTHS, SIGMA_MODES, LossOptions, LossWeights


@dataclass(frozen=True)
class AugmentConfig:
    """Random affine + colour jitter, drawn independently for every view."""

    scale_min: float = 0.75
    scale_max: float = 1.25
    rotation_degrees: float = 30.0
    translate: float = 0.1  # fraction of the input size
    flip_probability: float = 0.5
    colour_jitter: float = 0.2  # brightness/contrast/saturation +- this fraction
    # Close-up views: with this probability a view is framed on one labelled person so that it fills
    # closeup_min..closeup_max of the view's height (a webcam or phone framing); of those, upper_body_probability
    # frame only head to hips (a desk webcam). 0 keeps the plain zoom above.
    closeup_probability: float = 0.0
    closeup_min: float = 0.4
    closeup_max: float = 1.0
    upper_body_probability: float = 0.0

    @classmethod
    def off(cls) -> "AugmentConfig":
        return cls(scale_min=1.0, scale_max=1.0, rotation_degrees=0.0, translate=0.0, flip_probability=0.0,
                   colour_jitter=0.0)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs except the data paths' contents. Defaults are the `small` preset's."""

    preset: str = "small"
    model: ModelConfig = SMALL
    # data
    train_annotations: str = ""
    train_images: str = ""
    val_annotations: str = ""  # optional: best-by-metric checkpoints use COCO AP on this set
    val_images: str = ""
    max_people: int = 30
    sigma: float = 2.0  # heatmap gaussian sigma in map pixels
    # "fixed"; "size": per person sigma * clip(size / 32 map px, 0.5, 2) ("adaptive" in old configs);
    # "embedding": per person sigma * Gamma read from the network's tags (Wang et al.; needs L > 1)
    sigma_mode: str = "fixed"
    augment: AugmentConfig = AugmentConfig()
    pairs: bool = True  # two views per sample with the cross-view temporal loss
    max_frame_gap: int = 3  # for clips: the second view is a frame up to this far away
    init_weights: str = ""  # start from this checkpoint's weights (fine-tuning); same architecture
    # parameter-name prefixes that learn (e.g. ("tag_head.",): the rest frozen); empty: everything learns
    trainable: tuple[str, ...] = ()
    train_teacher_maps: str = ""  # dense distillation: the teacher's stored heatmaps (training.distill)
    # clear each teacher channel around the person's mirror joint (distill.suppress_mirror_peaks); off in
    # configs written before it existed, so they train as they did
    suppress_mirror_peaks: bool = False
    # > 0: the heatmap targets are not the data's but the starting network's own maps (init_weights, frozen):
    # the larger of its maps of the view and, for 2 or more, of the view zoomed by this whole factor, pooled
    # back (training.distill.zoomed_self_targets): the maps stay the starting network's kind (no drift toward
    # other targets) while the rest trains, and small people get the peaks it gives them when they are larger
    self_distill_zoom: int = 0
    # optimisation
    batch_size: int = 8  # per process
    steps: int = 100_000
    optimizer: str = "adam"  # "adam" or "adamw"
    lr: float = 2e-4
    weight_decay: float = 0.0
    lr_decay_steps: tuple[int, ...] = (75_000,)  # multiply lr by lr_decay_factor at each
    lr_decay_factor: float = 0.1
    warmup_steps: int = 500
    clip_grad_norm: float = 1.0  # 0 switches clipping off
    amp: bool = True  # used on CUDA only
    # channels-last memory format for the network and its input images: faster for the MobileNet family's
    # depthwise convs on a CPU (docs/training.md has the measurement); off in configs written before it existed
    channels_last: bool = False
    loss: LossWeights = LossWeights()
    # form of the grouping + scale terms (training/losses.py, docs/training.md): "ours" or "wang"
    scale_loss: str = "ours"
    scale_truth: str = "onehot"  # "wang" only: scale ground truth "onehot" (one size bin) or "soft"
    # bookkeeping
    seed: int = 0
    workers: int = 4
    checkpoint_every: int = 2000
    # with validation data: the validation AP every this many steps (and at the end); 0: at every checkpoint
    eval_every: int = 0
    log_every: int = 20
    # Decoder and tracker settings stored in every checkpoint, {"decode": {...}, "tracker": {...}} (names of
    # DecodeConfig and TrackerConfig): the app's defaults for the model. The decoder's also give the validation
    # AP. {}: the built-in defaults (the decoder's are written out in full, the tracker's only when given).
    settings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sigma_mode == "adaptive":  # the name of "size" before the embedding mode existed
            object.__setattr__(self, "sigma_mode", "size")
        if self.sigma_mode not in SIGMA_MODES:
            raise UserFacingError(f"sigma mode must be one of {', '.join(SIGMA_MODES)}, not {self.sigma_mode!r}")
        if self.sigma_mode == "embedding" and self.model.tag_dim < 2:
            raise UserFacingError("sigma mode 'embedding' reads the scale from the tag's direction: it needs tag_dim > 1")
        if self.sigma_mode == "embedding" and self.train_teacher_maps:
            # The embedding mode redraws the heatmap targets inside the loss, which would drop the teacher's maps.
            raise UserFacingError("sigma mode 'embedding' cannot be combined with dense teacher maps (train_teacher_maps)")
        if self.scale_loss not in SCALE_LOSSES:
            raise UserFacingError(f"scale loss must be one of {', '.join(SCALE_LOSSES)}, not {self.scale_loss!r}")
        if self.scale_truth not in SCALE_TRUTHS:
            raise UserFacingError(f"scale truth must be one of {', '.join(SCALE_TRUTHS)}, not {self.scale_truth!r}")
        if self.optimizer not in ("adam", "adamw"):
            raise UserFacingError(f"optimizer must be 'adam' or 'adamw', not {self.optimizer!r}")
        if self.batch_size < 1 or self.steps < 1 or self.checkpoint_every < 1:
            raise UserFacingError("batch size, steps and checkpoint interval must be positive")
        if self.loss.heatmap_foreground < 0 or self.loss.heatmap_mirror < 0:
            raise UserFacingError("the heatmap foreground and mirror weights must be 0 (off) or positive")
        if self.self_distill_zoom < 0:
            raise UserFacingError(f"self_distill_zoom must be 0 (off) or a whole zoom >= 1, not {self.self_distill_zoom}")
        if self.eval_every < 0:
            raise UserFacingError(f"eval_every must be 0 (at checkpoints) or positive, not {self.eval_every}")

    @property
    def loss_options(self) -> LossOptions:
        return LossOptions(self.scale_loss, self.scale_truth, self.sigma_mode, self.sigma)

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.model.input_height, self.model.input_width

    @property
    def output_hw(self) -> tuple[int, int]:
        return self.model.output_height, self.model.output_width

    def to_dict(self) -> dict:
        data = asdict(self)
        data["lr_decay_steps"] = list(self.lr_decay_steps)
        data["trainable"] = list(self.trainable)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UserFacingError(f"unknown training config fields: {sorted(unknown)}")
        data = dict(data)
        if "model" in data:
            data["model"] = ModelConfig.from_dict(data["model"])
        if "augment" in data:
            data["augment"] = AugmentConfig(**data["augment"])
        if "loss" in data:
            data["loss"] = LossWeights(**data["loss"])
        if "lr_decay_steps" in data:
            data["lr_decay_steps"] = tuple(int(s) for s in data["lr_decay_steps"])
        if "trainable" in data:
            data["trainable"] = tuple(str(prefix) for prefix in data["trainable"])
        return cls(**data)

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> "TrainConfig":
        data = read_json(path, "training config")
        if not isinstance(data, dict):
            raise UserFacingError(f"bad training config {path}: expected a JSON object, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as error:
            raise UserFacingError(f"bad training config {path}: {error}") from None


def _paper_schedule(steps: int) -> tuple[int, ...]:
    """The paper's single x0.1 decay late in training (at 3/4 of the run)."""
    return (int(steps * 0.75),)


PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(
        preset="tiny", model=TINY, max_people=8, sigma=1.0, batch_size=2, steps=20, lr=1e-3,
        lr_decay_steps=(15,), warmup_steps=0, checkpoint_every=10, workers=0, log_every=5,
        augment=AugmentConfig(scale_min=0.9, scale_max=1.1, rotation_degrees=10.0, translate=0.05),
    ),
    "small": TrainConfig(
        preset="small", model=SMALL, steps=150_000, lr_decay_steps=_paper_schedule(150_000), batch_size=16,
        loss=LossWeights(scale=1e-3),  # L=4 tags: the scale regularisation of Wang et al. applies
    ),
    "paper": TrainConfig(
        preset="paper", model=PAPER, steps=300_000, lr_decay_steps=(200_000,), batch_size=8, sigma=2.0,
        max_people=30, warmup_steps=0,
    ),
}


def preset(name: str, **overrides) -> TrainConfig:
    """A named preset with some fields replaced (e.g. data paths and steps from the command line)."""
    if name not in PRESETS:
        raise UserFacingError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    config = replace(PRESETS[name], **overrides)
    if "steps" in overrides and "lr_decay_steps" not in overrides:
        # Keep the decay at the same fraction of the run.
        base = PRESETS[name]
        config = replace(config, lr_decay_steps=tuple(int(d * config.steps / base.steps) for d in base.lr_decay_steps))
    return config


