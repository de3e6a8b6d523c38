"""One training step, the same wherever a network is trained or timed: `train`'s loop, `tagtrack bench train` and the
GPU run's training-speed table (bench/gpu/run.py).

    parameters = learning_parameters(model, config.trainable)   # the `trainable` prefixes learn, the rest is frozen
    optimizer = build_optimizer(parameters, config)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)                # use_amp: config.amp on CUDA
    step = TrainingStep.for_config(config, all_stacks(model, config), parameters, optimizer, scaler, flip_index)
    terms = step(batch_on_device(batch, device, config.channels_last), step_index)

A step is: the forward pass of every stack (under fp16 autocast when AMP is on), `total_loss` with every option of
the config (loss weights incl. heatmap_foreground / heatmap_mirror, scale-loss form, sigma_mode "embedding" with
the batch's keypoints, the schema's flip_index, cross-view terms for pairs), a non-finite loss refused, the scaled
backward pass, gradient clipping and the optimiser step. The learning-rate schedule and step counting stay with
the caller.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from tagtrack.model.errors import UserFacingError
from tagtrack.model.hourglass import AllStacks
from tagtrack.training.config import TrainConfig
from tagtrack.training.dataset import flatten_views
from tagtrack.training.distill import zoomed_self_targets
from tagtrack.training.losses import LossOptions, LossTerms, LossWeights, total_loss

log = logging.getLogger(__name__)


def freeze(model: torch.nn.Module, trainable: tuple[str, ...]) -> None:
    """Only parameters whose names start with one of `trainable` learn (all when it is empty)."""
    if not trainable:
        return
    names = [name for name, _ in model.named_parameters()]
    for prefix in trainable:
        if not any(name.startswith(prefix) for name in names):
            raise UserFacingError(f"trainable {prefix!r} names no parameter of the {type(model).__name__}")
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(any(name.startswith(prefix) for prefix in trainable))
    learning = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("training %d of %d parameters (%s)", learning, sum(p.numel() for p in model.parameters()),
             ", ".join(trainable))


def learning_parameters(model: torch.nn.Module, trainable: tuple[str, ...]) -> list[torch.nn.Parameter]:
    """`freeze` the model to the `trainable` prefixes and return the parameters that still learn."""
    freeze(model, trainable)
    return [p for p in model.parameters() if p.requires_grad]


def build_optimizer(parameters: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The config's optimiser ("adam" or "adamw") at its learning rate and weight decay."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)


def all_stacks(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    """The model as trained: channels-last when the config asks, every stack's output (intermediate supervision),
    in training mode. DDP and SyncBatchNorm wrap this where several processes train (training.train)."""
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    network = AllStacks(model)
    network.train()
    return network


def batch_on_device(batch: dict[str, torch.Tensor], device: torch.device,
                    channels_last: bool = False) -> dict[str, torch.Tensor]:
    """A loader's batch with its views flattened into the batch dimension, on the device (images channels-last
    when the network is)."""
    moved = {name: value.to(device, non_blocking=True) for name, value in flatten_views(batch).items()}
    if channels_last:
        moved["images"] = moved["images"].contiguous(memory_format=torch.channels_last)
    return moved


@dataclass
class TrainingStep:
    """Everything one step needs besides the batch; calling it runs the step on a batch (`batch_on_device`)."""

    network: torch.nn.Module  # returns every stack's (heatmaps, tags): all_stacks(model), or DDP around it
    parameters: list[torch.nn.Parameter]  # the learning ones: clipped together
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # disabled (a pass-through) without AMP
    loss: LossWeights
    options: LossOptions
    num_views: int  # 2: pairs of views, adjacent in the batch, with the cross-view terms
    flip_index: tuple[int, ...] | None  # the data set's schema's left/right permutation (heatmap_mirror)
    clip_grad_norm: float  # 0: no clipping
    use_amp: bool  # forward under fp16 autocast on CUDA
    # config.self_distill_zoom > 0: the heatmap targets come from this frozen network (the starting weights)
    # at that zoom (training.distill.zoomed_self_targets) instead of the batch's
    target_network: torch.nn.Module | None = None
    target_zoom: int = 0

    @classmethod
    def for_config(cls, config: TrainConfig, network: torch.nn.Module, parameters: list[torch.nn.Parameter],
                   optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   flip_index: tuple[int, ...] | None,
                   target_network: torch.nn.Module | None = None) -> "TrainingStep":
        """The step a TrainConfig trains with; AMP is on where the scaler is (config.amp on CUDA). With
        config.self_distill_zoom, `target_network` (frozen starting weights) makes the heatmap targets."""
        if config.self_distill_zoom and target_network is None:
            raise ValueError("self_distill_zoom needs the starting network (target_network)")
        return cls(network=network, parameters=parameters, optimizer=optimizer, scaler=scaler, loss=config.loss,
                   options=config.loss_options, num_views=2 if config.pairs else 1, flip_index=flip_index,
                   clip_grad_norm=config.clip_grad_norm, use_amp=scaler.is_enabled(),
                   target_network=target_network if config.self_distill_zoom else None,
                   target_zoom=config.self_distill_zoom)

    def losses(self, batch: dict[str, torch.Tensor]) -> LossTerms:
        """The forward pass and every loss term on a batch."""
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.use_amp else nullcontext()
        with autocast:
            stacks = self.network(batch["images"])
        heatmaps = batch["heatmaps"]
        if self.target_network is not None:
            heatmaps = zoomed_self_targets(self.target_network, batch["images"], self.target_zoom)
        return total_loss(stacks, heatmaps, batch["masks"], batch["joints"], self.loss,
                          scales=batch["scales"], ids=batch["ids"], num_views=self.num_views, options=self.options,
                          keypoints=batch["keypoints"], flip_index=self.flip_index)

    def learn(self, terms: LossTerms) -> None:
        """The backward pass of the total loss, clipping and the optimiser step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms.total).backward()
        if self.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters, self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def __call__(self, batch: dict[str, torch.Tensor], step_index: int = 0) -> LossTerms:
        """One step on a batch; `step_index` (steps done before it) names the step in the error when the loss is
        not finite. Returns the loss terms."""
        terms = self.losses(batch)
        if not math.isfinite(terms.parts["total"]):
            raise UserFacingError(f"loss became {terms.parts['total']} at step {step_index}; lower --lr")
        self.learn(terms)
        return terms
