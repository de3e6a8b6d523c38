"""The training loop: `train` runs named steps (start, optimiser, restore, one step, log, checkpoint-and-evaluate).

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
import os
import random
import signal
import time
from contextlib import closing
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
from tagtrack.model.files import write_atomically
from tagtrack.model.hourglass import refined_state_dict, widened_state_dict
from tagtrack.model.networks import build_network, shares_trunk, trunk_state_dict
from tagtrack.training.config import TrainConfig
from tagtrack.training.dataset import CocoKeypointDataset, TargetConfig
from tagtrack.training.losses import LossTerms
from tagtrack.training.step import (
    TrainingStep,
    all_stacks,
    batch_on_device,
    build_optimizer,
    learning_parameters,
)

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
    write_atomically(path, lambda temporary: torch.save(state, temporary))


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
    return CocoKeypointDataset(config.train_annotations, config.train_images, TargetConfig.of_training(config),
                               config.augment,
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
    """COCO AP on the validation set through the evaluation module (with the decoder settings the checkpoints
    store), or None without validation data."""
    if not config.val_annotations:
        return None
    try:
        from tagtrack.training.evaluate import evaluate_checkpoint
    except ImportError:
        log.warning("training.evaluate is not available; best-by-metric checkpoints are off")
        return None
    from tagtrack.model.predict import PredictConfig

    predict_config = PredictConfig(decode=_resolved_settings(config).decode)
    metrics = evaluate_checkpoint(weights, config.val_annotations, config.val_images, predict_config,
                                  device=str(device), progress=False)
    return float(metrics["AP"])


def _load_initial_weights(model: torch.nn.Module, config: TrainConfig) -> None:
    """Copy a checkpoint's weights into the new model: the run's architecture, or a narrower one of the same
    shape, embedded so that the wider model starts computing what the checkpoint did."""
    initial = load_checkpoint(config.init_weights)
    if initial.config.same_network(config.model):
        model.load_state_dict(initial.model.state_dict())
        log.info("initialised from %s", config.init_weights)
    elif shares_trunk(initial.config, config.model):
        model.load_state_dict(trunk_state_dict(initial.model, model))
        log.info("initialised from %s (%s) in the layers this %s network shares with it", config.init_weights,
                 initial.config.family, config.model.family)
    elif initial.config.refines_to(config.model):
        model.load_state_dict(refined_state_dict(initial.model, model))
        log.info("initialised from %s, with a finer heatmap head added (it starts at the coarse maps)",
                 config.init_weights)
    elif initial.config.widens_to(config.model):
        model.load_state_dict(widened_state_dict(initial.model, model))
        log.info("initialised from %s, widened from %s to %s", config.init_weights, initial.config.describe(),
                 config.model.describe())
    else:
        raise UserFacingError(
            f"{config.init_weights} is a {initial.config.describe()} network, but this run trains a "
            f"{config.model.describe()} one"
        )


@dataclass
class _Run:
    """Everything one training run holds between its steps (built by _start and _build_optimiser)."""

    config: TrainConfig
    out_dir: Path
    ddp: Distributed
    device: torch.device
    use_amp: bool
    dataset: CocoKeypointDataset
    sampler: DistributedSampler
    steps_per_epoch: int
    end: int  # the step this call stops at
    model: torch.nn.Module  # a network of config.model.family
    parameters: list = field(default_factory=list)
    optimizer: torch.optim.Optimizer = None
    scheduler: torch.optim.lr_scheduler.LRScheduler = None
    scaler: torch.amp.GradScaler = None
    training_step: TrainingStep = None  # the network as trained (all stacks, SyncBatchNorm / DDP where used)
    step: int = 0
    best_metric: float | None = None

    @property
    def state_path(self) -> Path:
        return self.out_dir / "last.state.pt"

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.safetensors"

    @property
    def views(self) -> int:
        return 2 if self.config.pairs else 1


def train(config: TrainConfig, out_dir: Path | str, resume: bool = False, stop_at: int | None = None) -> TrainResult:
    """Train for config.steps steps (or until `stop_at`, for tests of resume), checkpointing into out_dir."""
    run = _start(config, Path(out_dir), resume, stop_at)
    _build_optimiser(run)
    if resume:
        _restore(run)
    elif config.init_weights:
        _load_initial_weights(run.model, config)
    _wrap_network(run)
    result = TrainResult(step=run.step, best_metric=run.best_metric)
    with _RunLog(run, resume) as run_log, _StopRequest() as stop:
        try:
            _steps(run, run_log, stop, result)
        except RuntimeError as error:
            if not _is_loader_worker_death(error):
                raise
            raise UserFacingError(_after_worker_death(run, error)) from None
    result.step, result.best_metric = run.step, run.best_metric
    _finish(run)
    if result.interrupted:
        log.warning("stopped at step %d; continue with --resume", run.step)
    return result


def _steps(run: _Run, run_log: "_RunLog", stop: _StopRequest, result: TrainResult) -> None:
    """The training steps until the end of the schedule or an agreed stop (then a checkpoint is saved)."""
    with closing(_batches(run)) as batches:  # the loader's workers stop here, whichever way the loop ends
        _steps_from(batches, run, run_log, stop, result)


def _steps_from(batches: Iterator[tuple[int, dict]], run: _Run, run_log: "_RunLog", stop: _StopRequest,
                result: TrainResult) -> None:
    for epoch, batch in batches:
        terms = _one_step(run, batch)
        result.losses.append(terms.parts["total"])
        run_log.record(run, epoch, terms)
        saved = _checkpoint_and_evaluate(run, run_log)
        if saved is not None:
            result.last_checkpoint = saved
        if _agreed_stop(stop.requested, run.ddp, run.device):
            result.interrupted = True
            if saved is None:
                result.last_checkpoint = _save(run, "stopped")
            return


def _is_loader_worker_death(error: RuntimeError) -> bool:
    # torch's DataLoader (training or validation) reports a worker that was killed or exited as a RuntimeError
    # with this prefix.
    return str(error).startswith("DataLoader worker")


def _loader_batches(loader: DataLoader) -> Iterator[dict]:
    """The loader's batches; a data-loading worker that dies is raised here, between steps, as torch's RuntimeError
    ("DataLoader worker (pid N) ..."). Left to torch, its SIGCHLD handler raises that error at whatever line the
    main thread runs then (half-way through an optimiser update, or inside an __exit__ or a __del__, where it
    becomes a traceback or is lost), and a worker killed while it hands a batch over shows as a
    ConnectionResetError or EOFError instead. So while the loader runs, SIGCHLD is left at its default (ignored,
    children still reaped by their owners) and the workers' exit codes are read after each batch."""
    iterator = iter(loader)  # starts the workers; torch sets its SIGCHLD handler (once per process)
    workers = list(getattr(iterator, "_workers", ()))  # their multiprocessing.Process objects (none: workers=0)
    if not workers:
        yield from iterator
        return
    torch_handler = _set_sigchld_handler(signal.SIG_DFL)
    try:
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                # the loader stopped its workers (exit code 0, or SIGTERM from torch if one did not stop in time)
                _raise_if_a_worker_died(workers, normal=(0, -signal.SIGTERM))
                return
            except (OSError, EOFError):  # a hand-over cut off: a killed worker's exit code follows within moments
                _raise_if_a_worker_died(workers, wait=5.0)
                raise
            _raise_if_a_worker_died(workers)
            yield batch
    finally:
        iterator._shutdown_workers()  # noqa: SLF001 - unregisters the workers before torch's handler is back
        _set_sigchld_handler(torch_handler)


def _set_sigchld_handler(handler):  # noqa: ANN001, ANN202
    """Sets SIGCHLD's handler (main thread, POSIX; None: the default); returns the previous one."""
    if not hasattr(signal, "SIGCHLD"):  # Windows: torch has no such handler either
        return None
    try:
        return signal.signal(signal.SIGCHLD, signal.SIG_DFL if handler is None else handler)
    except ValueError:  # not the main thread: torch's handler is not set from there either
        return None


def _raise_if_a_worker_died(workers: list, wait: float = 0.0, normal: tuple[int, ...] = (0,)) -> None:
    """RuntimeError in torch's words for the first worker that exited with a code outside `normal`, waiting up to
    `wait` seconds for one."""
    deadline = time.monotonic() + wait
    while True:
        dead = [w for w in workers if w.exitcode is not None and w.exitcode not in normal]
        if dead or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if dead:
        pid, code = dead[0].pid, dead[0].exitcode
        if code < 0:
            raise RuntimeError(f"DataLoader worker (pid {pid}) is killed by signal: {signal.strsignal(-code)}.")
        raise RuntimeError(f"DataLoader worker (pid {pid}) exited unexpectedly with exit code {code}.")


def _after_worker_death(run: _Run, error: RuntimeError) -> str:
    """A data-loading worker died between steps: the model and optimiser are whole, so save them (one process;
    under DDP the other ranks could not join the save) and say how to go on."""
    reason = str(error).split(". ")[0].rstrip(".")
    if run.ddp.world_size > 1:
        return f"{reason}; the last checkpoint is kept, continue with --resume"
    _save(run, "data-loading worker died")
    return f"{reason}; saved step {run.step}, continue with --resume"


def _start(config: TrainConfig, out_dir: Path, resume: bool, stop_at: int | None) -> _Run:
    """Seeds, the run folder's checks, the data set (checked before anything is written), config.json."""
    ddp = setup_distributed()
    device = torch.device(f"cuda:{ddp.local_rank}" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    state_path = out_dir / "last.state.pt"
    if resume and not state_path.is_file():
        raise UserFacingError(f"nothing to resume in {out_dir} (no {state_path.name})")
    if not resume and state_path.is_file():
        raise UserFacingError(f"{out_dir} already holds a run; use --resume to continue it or choose another folder")
    checkpoint_settings(config)  # the settings every checkpoint stores, refused now rather than at the first save
    dataset = _build_dataset(config)
    if dataset.schema.num_keypoints != config.model.num_keypoints:
        raise UserFacingError(f"{config.train_annotations} has {dataset.schema.num_keypoints} keypoints "
                              f"({dataset.schema.name}), the network predicts {config.model.num_keypoints}")
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
    end = min(config.steps, stop_at) if stop_at is not None else config.steps
    return _Run(config, out_dir, ddp, device, config.amp and device.type == "cuda", dataset, sampler,
                steps_per_epoch, end, build_network(config.model).to(device))


def _build_optimiser(run: _Run) -> None:
    config = run.config
    run.parameters = learning_parameters(run.model, config.trainable)
    run.optimizer = build_optimizer(run.parameters, config)
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, lambda step: learning_rate_factor(config, step))
    run.scaler = torch.amp.GradScaler("cuda", enabled=run.use_amp)


def _restore(run: _Run) -> None:
    """Weights, optimiser, scheduler, scaler, step and RNG states of the last checkpoint."""
    run.model.load_state_dict(load_checkpoint(run.last_path).model.state_dict())
    try:
        state = torch.load(run.state_path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one
        raise UserFacingError(f"cannot read training state {run.state_path}: {error}") from None
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:  # empty when the run so far had AMP off (e.g. began on a CPU)
        run.scaler.load_state_dict(state["scaler"])
    run.step, run.best_metric = int(state["step"]), state.get("best_metric")
    _set_rng_state(state["rng"])
    log.info("resumed %s at step %d", run.out_dir, run.step)


def _wrap_network(run: _Run) -> None:
    """The network as trained (all stacks; SyncBatchNorm and DDP over several processes) and the step around it."""
    network = all_stacks(run.model, run.config)
    if run.ddp.world_size > 1 and run.device.type == "cuda":
        # Per-GPU batches are small: normalise with statistics over all processes (NCCL only).
        network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
    if run.ddp.world_size > 1:
        network = DistributedDataParallel(network, device_ids=[run.ddp.local_rank] if run.device.type == "cuda" else None)
    network.train()
    run.training_step = TrainingStep.for_config(run.config, network, run.parameters, run.optimizer, run.scaler,
                                                run.dataset.schema.flip_index, _target_network(run))


def _target_network(run: _Run) -> torch.nn.Module | None:
    """config.self_distill_zoom: the starting weights (init_weights), frozen, in eval mode, to make the heatmap
    targets; None otherwise. A resumed run rebuilds it from the same file (its config keeps the path)."""
    config = run.config
    if not config.self_distill_zoom:
        return None
    if not config.init_weights:
        raise UserFacingError("self_distill_zoom makes the targets from the starting weights: give --init")
    # The starting checkpoint's own network: what the run's network computed at step 0 (the same one, or one of
    # another family or width that _load_initial_weights started to compute the same heatmaps).
    reference = load_checkpoint(config.init_weights).model.to(run.device)
    if reference.config.output_stride != config.model.output_stride:
        raise UserFacingError(f"self_distill_zoom needs the starting weights' maps at the run's stride: "
                              f"{config.init_weights} has output stride {reference.config.output_stride}, "
                              f"the run {config.model.output_stride}")
    reference.requires_grad_(False)
    if config.channels_last:
        reference.to(memory_format=torch.channels_last)
    return reference.eval()


def _batches(run: _Run) -> Iterator[tuple[int, dict]]:
    """(epoch, batch on the device) until run.step reaches run.end; a resumed run re-enters its epoch where it
    stopped. The caller advances run.step (_one_step)."""
    config = run.config
    while run.step < run.end:
        epoch, offset = divmod(run.step, run.steps_per_epoch)
        run.sampler.set_epoch(epoch)
        run.dataset.set_epoch(epoch)
        loader = _make_loader(run.dataset, SkipSampler(run.sampler, offset * config.batch_size), config, epoch,
                              run.device)
        with closing(_loader_batches(loader)) as batches:
            for batch in batches:
                yield epoch, batch_on_device(batch, run.device, config.channels_last)
                if run.step >= run.end:
                    return


def _one_step(run: _Run, batch: dict) -> LossTerms:
    """The training step (training.step), then the learning-rate schedule; run.step + 1. Returns the loss terms."""
    terms = run.training_step(batch, run.step)
    run.scheduler.step()
    run.step += 1
    return terms


def _resolved_settings(config: TrainConfig):
    """The training config's settings over the defaults, every section checked (model/settings.py)."""
    from tagtrack.model.settings import resolve_settings

    return resolve_settings(None, [("training config settings", config.settings)])


def checkpoint_settings(config: TrainConfig) -> dict:
    """The settings saved with the run's checkpoints: the decoder's in full, the tracker's as given (so the app's
    later tracker defaults still reach the fields the config leaves out), both checked."""
    from dataclasses import asdict

    settings = _resolved_settings(config)
    tracker = {name: getattr(settings.tracker, name) for name in config.settings.get("tracker") or {}}
    return {"decode": asdict(settings.decode)} | ({"tracker": tracker} if tracker else {})


def _save(run: _Run, reason: str) -> Path:
    """Rank 0 writes weights then training state; the state names the step both belong to."""
    if run.ddp.is_main:
        config, step = run.config, run.step
        metadata = {"step": step, "train_config": config.to_dict(), "best_metric": run.best_metric}
        schema, settings = run.dataset.schema, checkpoint_settings(config)
        save_checkpoint(run.last_path, run.model, schema, metadata, settings)
        if step % config.checkpoint_every == 0:
            save_checkpoint(run.out_dir / "checkpoints" / f"step_{step:07d}.safetensors", run.model, schema,
                            metadata, settings)
        _atomic_torch_save({
            "step": step,
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "rng": _rng_state(),
            "best_metric": run.best_metric,
        }, run.state_path)
        log.info("checkpoint at step %d (%s)", step, reason)
    if run.ddp.world_size > 1:
        dist.barrier()
    return run.last_path


def _checkpoint_and_evaluate(run: _Run, run_log: "_RunLog") -> Path | None:
    """At a checkpoint step (and the last) save; with validation data, at an evaluation step (eval_every; 0: every
    checkpoint) save and keep best.safetensors by AP. The checkpoint path when one was saved, else None."""
    config, step = run.config, run.step
    at_end = step == run.end
    checkpoint_due = step % config.checkpoint_every == 0 or at_end
    evaluation_due = bool(config.val_annotations) and (
        at_end or step % (config.eval_every or config.checkpoint_every) == 0)
    if not (checkpoint_due or evaluation_due):
        return None
    saved = _save(run, "end" if at_end else "interval" if checkpoint_due else "evaluation")
    metric = _evaluate(run.last_path, config, run.device) if run.ddp.is_main and evaluation_due else None
    if metric is not None:
        run_log.add_scalar("val/AP", metric, step)
        if run.best_metric is None or metric > run.best_metric:
            run.best_metric = metric
            save_checkpoint(run.out_dir / "best.safetensors", run.model, run.dataset.schema,
                            {"step": step, "AP": metric, "train_config": config.to_dict()}, checkpoint_settings(config))
            log.info("new best AP %.4f at step %d", metric, step)
    return saved


class _RunLog:
    """Rank 0's record of the run: log.csv, TensorBoard and the progress bar (every rank's bar is off but rank 0's)."""

    def __init__(self, run: _Run, resume: bool) -> None:
        self.writer = self.csv_file = self.csv_writer = None
        config, out_dir = run.config, run.out_dir
        if run.ddp.is_main:
            # imported here: slow, only rank 0 needs it, and tensorboard is the `train` extra
            SummaryWriter = import_extra("torch.utils.tensorboard", "train", "the training log").SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=run.step if resume else None)
            if resume:
                _drop_log_rows_after(out_dir / "log.csv", run.step)
            new_csv = not (out_dir / "log.csv").is_file()
            self.csv_file = open(out_dir / "log.csv", "a", newline="")  # noqa: SIM115 - closed in __exit__
            self.csv_writer = csv.writer(self.csv_file)
            if new_csv:
                self.csv_writer.writerow(["step", "epoch", "lr", *LOSS_NAMES, "images_per_s"])
        self.progress = tqdm(total=config.steps, initial=run.step, desc="train", disable=not run.ddp.is_main,
                             dynamic_ncols=True)
        self.last_time, self.last_step = time.perf_counter(), run.step
        self.images_per_step = config.batch_size * run.ddp.world_size * run.views

    def __enter__(self) -> "_RunLog":
        return self

    def record(self, run: _Run, epoch: int, terms) -> None:
        """One step done: the bar, and every log_every steps (and the last) a row and the scalars."""
        self.progress.update(1)
        step = run.step
        if not run.ddp.is_main or not (step % run.config.log_every == 0 or step == run.end):
            return
        now = time.perf_counter()
        speed = (step - self.last_step) * self.images_per_step / max(now - self.last_time, 1e-9)
        self.last_time, self.last_step = now, step
        lr = run.optimizer.param_groups[0]["lr"]
        self.csv_writer.writerow([step, epoch, f"{lr:.6g}", *(f"{terms.parts[n]:.6g}" for n in LOSS_NAMES),
                                  f"{speed:.2f}"])
        self.csv_file.flush()
        for name in LOSS_NAMES:
            self.writer.add_scalar(f"loss/{name}", terms.parts[name], step)
        self.writer.add_scalar("lr", lr, step)
        self.writer.add_scalar("images_per_s", speed, step)
        self.progress.set_postfix(loss=f"{terms.parts['total']:.4g}", lr=f"{lr:.2g}")

    def add_scalar(self, name: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(name, value, step)

    def __exit__(self, *exc_info) -> None:
        self.progress.close()
        if self.writer is not None:
            self.writer.close()
        if self.csv_file is not None:
            self.csv_file.close()


def _finish(run: _Run) -> None:
    """DDP: every rank writes its parameter checksum (ranks/rank_R.json), then the process group ends."""
    ddp = run.ddp
    if ddp.world_size > 1:
        (run.out_dir / "ranks").mkdir(parents=True, exist_ok=True)
        (run.out_dir / "ranks" / f"rank_{ddp.rank}.json").write_text(
            f'{{"rank": {ddp.rank}, "step": {run.step}, "parameters_sha256": "{parameters_sha256(run.model)}"}}\n')
        dist.barrier()
        dist.destroy_process_group()


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
