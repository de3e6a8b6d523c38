"""The training loop: one flat function, in the style of torchvision's reference scripts.

Single process:   python main.py train --preset small --data ANN.json --images DIR --out RUN
Several (DDP):    torchrun --nproc_per_node 4 main.py train ...   (NCCL on GPUs, gloo on CPU)

Run folder layout (rank 0 writes it):
  config.json                 the TrainConfig of the run
  last.safetensors            model weights + config + schema + metadata (model.checkpoint format)
  last.state.pt               optimiser, scheduler, AMP scaler, step, RNG states (plain tensors/dicts,
                              loaded with torch.load(weights_only=True))
  checkpoints/step_NNNNNNN.safetensors   every `checkpoint_every` steps
  best.safetensors            best validation AP so far (when validation data is given)
  log.csv, tensorboard/       losses, learning rate, images/s
  ranks/rank_R.json           per-process parameter checksum at the end (DDP consistency check)
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import logging
import math
import os
import random
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from tagtrack.model.checkpoint import load_checkpoint, save_checkpoint
from tagtrack.model.errors import UserFacingError, import_extra
from tagtrack.model.hourglass import AllStacks, HourglassNet
from tagtrack.model.schema import COCO17
from tagtrack.training.config import TrainConfig
from tagtrack.training.dataset import CocoKeypointDataset, TargetConfig, flatten_views
from tagtrack.training.losses import total_loss

log = logging.getLogger(__name__)

LOSS_NAMES = ("total", "heatmap", "pull", "push", "scale", "cross_pull", "cross_push")


@dataclass
class TrainResult:
    step: int  # steps completed in total (including before a resume)
    losses: list[float] = field(default_factory=list)  # total loss of every step run in this call
    last_checkpoint: Path | None = None
    best_metric: float | None = None
    interrupted: bool = False


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Distributed:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        # Rank 0 may evaluate on the validation set while the others wait: allow a long collective timeout.
        dist.init_process_group(backend=backend, timeout=timedelta(hours=1))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    log.info("rank %d of %d (%s)", dist.get_rank(), world_size, backend)
    return Distributed(rank=dist.get_rank(), world_size=world_size, local_rank=local_rank)


class SkipSampler(Sampler[int]):
    """The first `skip` indices of a sampler left out: where a resumed run re-enters its epoch."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)  # type: ignore[arg-type]


def learning_rate_factor(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then x lr_decay_factor at each of lr_decay_steps (the paper's step schedule)."""
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps > 0 else 1.0
    decays = sum(step >= boundary for boundary in config.lr_decay_steps)
    return warmup * config.lr_decay_factor**decays


def parameters_sha256(model: torch.nn.Module) -> str:
    """Checksum of the learned parameters (not BatchNorm running statistics, which DDP on CPU keeps per rank
    between forwards and broadcasts from rank 0 at the next one)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _rng_state() -> dict:
    numpy_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_position": int(numpy_state[2]),
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_position"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_torch_save(state: dict, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


class _StopRequest:
    """Turns Ctrl-C / SIGTERM into a flag checked between steps, so a checkpoint is saved first."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "_StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ANN001
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stop requested: saving a checkpoint after this step (Ctrl-C again to abort)")

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _build_dataset(config: TrainConfig) -> CocoKeypointDataset:
    if not config.train_annotations or not config.train_images:
        raise UserFacingError("training data missing: give the annotation JSON (--data) and image folder (--images)")
    targets = TargetConfig(config.model.input_height, config.model.input_width, config.sigma, config.sigma_mode,
                           config.max_people)
    return CocoKeypointDataset(config.train_annotations, config.train_images, targets, config.augment,
                               views=2 if config.pairs else 1, max_frame_gap=config.max_frame_gap, seed=config.seed,
                               teacher_maps=config.train_teacher_maps or None,
                               suppress_mirror_peaks=config.suppress_mirror_peaks)


def _make_loader(dataset: CocoKeypointDataset, sampler: Sampler[int], config: TrainConfig, epoch: int,
                 device: torch.device) -> DataLoader:
    generator = torch.Generator()
    generator.manual_seed(config.seed + epoch)
    return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers,
                      drop_last=True, pin_memory=device.type == "cuda", generator=generator,
                      persistent_workers=False)


def _evaluate(weights: Path, config: TrainConfig, device: torch.device) -> float | None:
    """COCO AP on the validation set through the evaluation module, or None without validation data."""
    if not config.val_annotations:
        return None
    try:
        from tagtrack.training.evaluate import evaluate_checkpoint
    except ImportError:
        log.warning("training.evaluate is not available; best-by-metric checkpoints are off")
        return None
    metrics = evaluate_checkpoint(weights, config.val_annotations, config.val_images, device=str(device),
                                  progress=False)
    return float(metrics["AP"])


def _load_initial_weights(model: HourglassNet, config: TrainConfig) -> None:
    """Copy a checkpoint's weights into the new model; its architecture must be the run's."""
    initial = load_checkpoint(config.init_weights, expected_schema=COCO17)
    if not initial.config.same_network(config.model):
        raise UserFacingError(
            f"{config.init_weights} is a {initial.config.describe()} network, but this run trains a "
            f"{config.model.describe()} one"
        )
    model.load_state_dict(initial.model.state_dict())
    log.info("initialised from %s", config.init_weights)


def train(config: TrainConfig, out_dir: Path | str, resume: bool = False, stop_at: int | None = None) -> TrainResult:
    """Train for config.steps steps (or until `stop_at`, for tests of resume), checkpointing into out_dir."""
    out_dir = Path(out_dir)
    ddp = setup_distributed()
    device = torch.device(f"cuda:{ddp.local_rank}" if torch.cuda.is_available() else "cpu")
    use_amp = config.amp and device.type == "cuda"
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)

    state_path, last_path = out_dir / "last.state.pt", out_dir / "last.safetensors"
    if resume and not state_path.is_file():
        raise UserFacingError(f"nothing to resume in {out_dir} (no {state_path.name})")
    if not resume and state_path.is_file():
        raise UserFacingError(f"{out_dir} already holds a run; use --resume to continue it or choose another folder")
    dataset = _build_dataset(config)  # checks the data before anything is written
    if ddp.is_main:
        (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        config.save(out_dir / "config.json")
    sampler = DistributedSampler(dataset, num_replicas=ddp.world_size, rank=ddp.rank, shuffle=True,
                                 seed=config.seed, drop_last=True)
    steps_per_epoch = len(sampler) // config.batch_size
    if steps_per_epoch == 0:
        raise UserFacingError(
            f"{config.train_annotations} has {len(dataset)} usable images, fewer than batch size "
            f"{config.batch_size} x {ddp.world_size} process(es)"
        )

    model = HourglassNet(config.model).to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(config, step))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    step, best_metric = 0, None
    if config.init_weights and not resume:
        _load_initial_weights(model, config)
    if resume:
        model.load_state_dict(load_checkpoint(last_path).model.state_dict())
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as error:  # a truncated or foreign file: say which one
            raise UserFacingError(f"cannot read training state {state_path}: {error}") from None
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when the run so far had AMP off (e.g. began on a CPU)
            scaler.load_state_dict(state["scaler"])
        step, best_metric = int(state["step"]), state.get("best_metric")
        _set_rng_state(state["rng"])
        log.info("resumed %s at step %d", out_dir, step)

    network: torch.nn.Module = AllStacks(model)
    if ddp.world_size > 1 and device.type == "cuda":
        # Per-GPU batches are small: normalise with statistics over all processes (NCCL only).
        network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
    if ddp.world_size > 1:
        network = DistributedDataParallel(network, device_ids=[ddp.local_rank] if device.type == "cuda" else None)

    def save(reason: str) -> Path:
        """Rank 0 writes weights then training state; the state names the step both belong to."""
        if ddp.is_main:
            metadata = {"step": step, "train_config": config.to_dict(), "best_metric": best_metric}
            save_checkpoint(last_path, model, COCO17, metadata)
            if step % config.checkpoint_every == 0:
                save_checkpoint(out_dir / "checkpoints" / f"step_{step:07d}.safetensors", model, COCO17, metadata)
            _atomic_torch_save({
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": _rng_state(),
                "best_metric": best_metric,
            }, state_path)
            log.info("checkpoint at step %d (%s)", step, reason)
        if ddp.world_size > 1:
            dist.barrier()
        return last_path

    writer = csv_file = csv_writer = None
    if ddp.is_main:
        # imported here: slow, only rank 0 needs it, and tensorboard is the `train` extra
        SummaryWriter = import_extra("torch.utils.tensorboard", "train", "the training log").SummaryWriter

        writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=step if resume else None)
        if resume:
            _drop_log_rows_after(out_dir / "log.csv", step)
        new_csv = not (out_dir / "log.csv").is_file()
        csv_file = open(out_dir / "log.csv", "a", newline="")
        csv_writer = csv.writer(csv_file)
        if new_csv:
            csv_writer.writerow(["step", "epoch", "lr", *LOSS_NAMES, "images_per_s"])

    result = TrainResult(step=step, best_metric=best_metric)
    end = min(config.steps, stop_at) if stop_at is not None else config.steps
    progress = tqdm(total=config.steps, initial=step, desc="train", disable=not ddp.is_main, dynamic_ncols=True)
    network.train()
    last_time, last_step = time.perf_counter(), step
    images_per_step = config.batch_size * ddp.world_size * (2 if config.pairs else 1)
    try:
        with _StopRequest() as stop:
            while step < end:
                epoch, offset = divmod(step, steps_per_epoch)
                sampler.set_epoch(epoch)
                dataset.set_epoch(epoch)
                loader = _make_loader(dataset, SkipSampler(sampler, offset * config.batch_size), config, epoch, device)
                for batch in loader:
                    batch = {k: v.to(device, non_blocking=True) for k, v in flatten_views(batch).items()}
                    autocast = torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext()
                    with autocast:
                        stacks = network(batch["images"])
                    terms = total_loss(stacks, batch["heatmaps"], batch["masks"], batch["joints"], config.loss,
                                       scales=batch["scales"], ids=batch["ids"], num_views=2 if config.pairs else 1,
                                       options=config.loss_options, keypoints=batch["keypoints"])
                    if not math.isfinite(terms.parts["total"]):
                        raise UserFacingError(f"loss became {terms.parts['total']} at step {step}; lower --lr")
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(terms.total).backward()
                    if config.clip_grad_norm > 0:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(parameters, config.clip_grad_norm)
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    step += 1
                    result.losses.append(terms.parts["total"])
                    progress.update(1)

                    if ddp.is_main and (step % config.log_every == 0 or step == end):
                        now = time.perf_counter()
                        speed = (step - last_step) * images_per_step / max(now - last_time, 1e-9)
                        last_time, last_step = now, step
                        lr = optimizer.param_groups[0]["lr"]
                        csv_writer.writerow([step, epoch, f"{lr:.6g}", *(f"{terms.parts[n]:.6g}" for n in LOSS_NAMES),
                                             f"{speed:.2f}"])
                        csv_file.flush()
                        for name in LOSS_NAMES:
                            writer.add_scalar(f"loss/{name}", terms.parts[name], step)
                        writer.add_scalar("lr", lr, step)
                        writer.add_scalar("images_per_s", speed, step)
                        progress.set_postfix(loss=f"{terms.parts['total']:.4g}", lr=f"{lr:.2g}")

                    if step % config.checkpoint_every == 0 or step == end:
                        result.last_checkpoint = save("interval" if step < end else "end")
                        metric = _evaluate(last_path, config, device) if ddp.is_main else None
                        if metric is not None:
                            writer.add_scalar("val/AP", metric, step)
                            if best_metric is None or metric > best_metric:
                                best_metric = metric
                                save_checkpoint(out_dir / "best.safetensors", model, COCO17,
                                                {"step": step, "AP": metric, "train_config": config.to_dict()})
                                log.info("new best AP %.4f at step %d", metric, step)
                    if _agreed_stop(stop.requested, ddp, device):
                        result.interrupted = True
                        break
                    if step >= end:
                        break
                if result.interrupted:
                    break
            if result.interrupted and step % config.checkpoint_every != 0 and step != end:
                result.last_checkpoint = save("stopped")
    finally:
        progress.close()
        if writer is not None:
            writer.close()
        if csv_file is not None:
            csv_file.close()

    result.step, result.best_metric = step, best_metric
    if ddp.world_size > 1:
        (out_dir / "ranks").mkdir(parents=True, exist_ok=True)
        (out_dir / "ranks" / f"rank_{ddp.rank}.json").write_text(
            f'{{"rank": {ddp.rank}, "step": {step}, "parameters_sha256": "{parameters_sha256(model)}"}}\n')
        dist.barrier()
        dist.destroy_process_group()
    if result.interrupted:
        log.warning("stopped at step %d; continue with --resume", step)
    return result


def _drop_log_rows_after(path: Path, step: int) -> None:
    """Rows logged after the checkpoint a run resumes from are repeated by the resumed run: drop them."""
    if not path.is_file():
        return
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    kept = rows[:1] + [row for row in rows[1:] if row and int(row[0]) <= step]
    if len(kept) != len(rows):
        with open(path, "w", newline="") as handle:
            csv.writer(handle).writerows(kept)


def _agreed_stop(requested: bool, ddp: Distributed, device: torch.device) -> bool:
    """All processes stop at the same step when any of them was asked to (collectives must match)."""
    if ddp.world_size == 1:
        return requested
    flag = torch.tensor([1.0 if requested else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item() > 0)
