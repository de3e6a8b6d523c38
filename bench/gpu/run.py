"""The prepared GPU run: everything a bare GPU machine should measure, within a time budget.

    OUT=/some/empty/folder bash bench/gpu/run.sh          # on the GPU machine (installs carried wheels first)
    python -m tagtrack.bench.gpu.run --out DIR --dry      # the same code on a CPU: tiny sizes, a few steps

Sections, in order (each one timed, its failure recorded in the report without stopping the others):
  environment   GPU, driver, torch/CUDA/cuDNN, CPU, package versions
  tests         `pytest -m gpu` on the test files that have GPU tests (TensorRT ones skip with their reason)
  agreement     the torch engine on CUDA, fp32 and fp16, against the same engine on the CPU
  inference     model-only images/s of the default model and the `small` / `paper` presets, batch 1 and 8,
                fp32 / fp16 / channels-last / CUDA graphs / torch.compile (compile only where time is left)
  pipeline      end to end on vtest.avi per engine, with per-stage and per-thread times
  train_speed   training images/s per preset, with and without AMP, on one batch held on the device
  training      `tagtrack train` on the carried corpus for the minutes left, stopped with SIGINT (which saves)

Files in --out (at most 8 come back from the GPU machine, so these are all): report.json (written after
every section), pytest.log, train.log, train_log.csv, train_config.json, gpu_trained.safetensors; run.sh adds
run.log. See docs/engines.md and docs/training.md.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import tagtrack
from tagtrack.model.config import PAPER, SMALL, TINY, ModelConfig
from tagtrack.model.errors import UserFacingError
from tagtrack.model.files import write_atomically

log = logging.getLogger("gpu_run")

REPO = Path(tagtrack.__file__).resolve().parent
DEFAULT_CARRY = REPO / "bench" / "gpu" / "carry"
# What the run compares on CUDA: max |cuda - cpu| over max |cpu|, per output. fp32 convolutions may run
# as TF32 on CUDA (cuDNN's default), so fp32 is not bit-equal either.
TOLERANCE = {"fp32": 5e-3, "fp16": 3e-2}
# Inference variants: how the network is run. "autocast" is what TorchEngine does with fp16; "half" converts
# the weights; channels-last lets cuDNN pick NHWC tensor-core kernels; "graph" replays a captured CUDA graph;
# "compile" is torch.compile(mode="reduce-overhead") (inductor kernels + CUDA graphs) of the half channels-last net.
VARIANTS = ("fp32", "fp32-channels-last", "fp16-autocast", "fp16-half", "fp16-half-channels-last",
            "fp16-half-channels-last-graph", "fp16-half-channels-last-compile")
CPU_VARIANTS = ("fp32", "fp32-channels-last")
OUT_FILES = ("report.json", "pytest.log", "train.log", "train_log.csv", "train_config.json",
             "gpu_trained.safetensors")


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is: the GPU run's, or the dry run's tiny ones."""

    inference_batches: tuple[int, ...]
    measure_seconds: float  # timed seconds per inference variant (after warm-up)
    train_warmup_steps: int
    train_steps: int
    pipeline_frames: int | None  # None: the whole video
    training_batch: int
    training_log_every: int
    reserve_seconds: float  # kept at the end for stopping the training and writing the report
    compile_needs_seconds: float  # torch.compile is tried only with this much time left


GPU_SIZES = Sizes(inference_batches=(1, 8), measure_seconds=0.5, train_warmup_steps=3, train_steps=8,
                  pipeline_frames=None, training_batch=32, training_log_every=20, reserve_seconds=40.0,
                  compile_needs_seconds=300.0)
DRY_SIZES = Sizes(inference_batches=(1, 2), measure_seconds=0.05, train_warmup_steps=1, train_steps=2,
                  pipeline_frames=8, training_batch=2, training_log_every=1, reserve_seconds=5.0,
                  compile_needs_seconds=float("inf"))


@dataclass
class RunSettings:
    out: Path
    dry: bool
    budget_seconds: float
    carry: Path
    weights: Path | None = None  # the default model's checkpoint (None: the bundled one)
    init: Path | None = None  # start the training from these weights instead of from scratch
    run_tests: bool = True

    @property
    def sizes(self) -> Sizes:
        return DRY_SIZES if self.dry else GPU_SIZES

    @property
    def corpus(self) -> Path:
        return self.carry / "corpus"

    @property
    def video(self) -> Path:
        return self.carry / "vtest.avi"


class Report:
    """The JSON report, rewritten after every section so a run killed at its limit still leaves one."""

    def __init__(self, path: Path, budget_seconds: float) -> None:
        self.path = path
        self.started = time.monotonic()
        self.deadline = self.started + budget_seconds
        self.data: dict = {"started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "budget_seconds": budget_seconds, "section_seconds": {}, "errors": {}, "skipped": {}}

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        self.data["elapsed_seconds"] = round(time.monotonic() - self.started, 1)
        document = json.dumps(self.data, indent=2, default=str) + "\n"
        write_atomically(self.path, lambda temporary: temporary.write_text(document))

    @contextmanager
    def section(self, name: str, needs_seconds: float = 0.0):
        """Run a section if `needs_seconds` are left; record its time, or its error, and save."""
        if needs_seconds > 0 and self.remaining() < needs_seconds:
            self.data["skipped"][name] = f"{self.remaining():.0f} s left, needs {needs_seconds:.0f}"
            log.warning("skipping %s: %s", name, self.data["skipped"][name])
            yield False
            return
        log.info("== %s (%.0f s left)", name, self.remaining())
        started = time.monotonic()
        try:
            yield True
        except Exception as error:  # one broken measurement must not lose the others
            self.data["errors"][name] = f"{type(error).__name__}: {error}"
            log.error("%s failed:\n%s", name, traceback.format_exc())
        finally:
            self.data["section_seconds"][name] = round(time.monotonic() - started, 1)
            self.save()


# ---------------------------------------------------------------- environment


def _package_versions() -> dict[str, str | None]:
    from importlib import metadata

    versions = {}
    for name in ("torch", "numpy", "opencv-python-headless", "onnx", "onnxruntime", "filterpy", "pycocotools",
                 "motmetrics", "safetensors", "scipy", "triton", "tensorrt"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "packages": _package_versions(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                    compute_capability=list(torch.cuda.get_device_capability(0)), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    return info


# ---------------------------------------------------------------- tests


def gpu_test_files() -> list[Path]:
    """The test files that hold GPU tests (collecting only these keeps the run short and its imports few)."""
    return sorted(p for p in (REPO / "tests").glob("test_*.py") if "pytest.mark.gpu" in p.read_text())


def parse_pytest_output(text: str) -> dict:
    """Counts from pytest's last line ("2 passed, 3 skipped, 5 deselected in 4.1s") and the skip reasons (-rs)."""
    counts = {}
    summary = [line for line in text.splitlines() if re.search(r"\b(passed|failed|skipped|deselected|error)", line)]
    if summary:
        for number, word in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)", summary[-1]):
            counts[word.rstrip("s") if word.startswith("error") else word] = int(number)
    reasons = [line.split(": ", 1)[-1] for line in text.splitlines() if line.startswith("SKIPPED")]
    return {"counts": counts, "skip_reasons": reasons}


def run_gpu_tests(out: Path, timeout: float) -> dict:
    files = gpu_test_files()
    if not files:
        raise UserFacingError(f"no test files with GPU tests under {REPO / 'tests'}")
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
               *(str(f.relative_to(REPO)) for f in files)]
    log.info("running %s", " ".join(command))
    with open(out / "pytest.log", "w") as output:
        completed = subprocess.run(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, timeout=timeout)
    result = parse_pytest_output((out / "pytest.log").read_text())
    result.update(exit_code=completed.returncode, files=[f.name for f in files])
    log.info("tests: exit %d, %s", completed.returncode, result["counts"])
    return result


# ---------------------------------------------------------------- agreement


def sample_batch(input_hw: tuple[int, int], count: int = 2) -> np.ndarray:
    """`count` generated street-like frames letterboxed to the input, as the pipeline feeds the engine."""
    from tagtrack.bench.pipeline import GeneratedSource
    from tagtrack.model.transforms import Letterbox, to_network_input

    source = GeneratedSource(count, (480, 640), people=4, seed=3)
    frames = [source.read().image for _ in range(count)]
    return np.stack([to_network_input(Letterbox.fit(f.shape[:2], input_hw).apply(f)) for f in frames])


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| over max |expected|: the scale of the maps differs between outputs and models."""
    return float(np.abs(got - expected).max() / max(float(np.abs(expected).max()), 1e-12))


def engine_agreement(model: torch.nn.Module, input_hw: tuple[int, int], device: str) -> dict:
    """TorchEngine on `device` in fp32 and fp16 against TorchEngine on the CPU, on the same frames."""
    from tagtrack.realtime.engines import TorchEngine

    batch = sample_batch(input_hw)
    reference = TorchEngine(copy.deepcopy(model), "cpu", input_hw=input_hw).infer(batch)
    result = {}
    for precision in ("fp32", "fp16"):
        engine = TorchEngine(copy.deepcopy(model), device, fp16=precision == "fp16", input_hw=input_hw)
        outputs = engine.infer(batch)
        errors = {name: relative_error(got, expected)
                  for name, got, expected in zip(("heatmaps", "tags"), outputs, reference)}
        result[precision] = dict(errors, engine=engine.name, tolerance=TOLERANCE[precision],
                                 within=all(e <= TOLERANCE[precision] for e in errors.values()))
        engine.close()
    return result


# ---------------------------------------------------------------- inference


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare_variant(model: torch.nn.Module, variant: str, batch: int, input_hw: tuple[int, int],
                    device: torch.device) -> Callable[[], object]:
    """A no-argument call that runs the network once on a fixed device batch, set up as `variant` says."""
    network = copy.deepcopy(model).to(device).eval()
    images = torch.rand(batch, 3, *input_hw, device=device)
    if "half" in variant:
        network, images = network.half(), images.half()
    if "channels-last" in variant:
        network = network.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    if variant == "fp16-autocast":
        def autocast_call():
            with torch.autocast("cuda", dtype=torch.float16):
                return network(images)
        return autocast_call
    if variant.endswith("-graph"):
        # Warm up on a side stream (cuDNN picks its algorithms), then capture one forward and replay it.
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                network(images)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = network(images)

        def replay(graph=graph, kept=(network, images, outputs)) -> None:  # the graph uses their memory: keep it
            graph.replay()
        return replay
    if variant.endswith("-compile"):
        compiled = torch.compile(network, mode="reduce-overhead")
        return lambda: compiled(images)
    return lambda: network(images)


def measure_rate(call: Callable[[], object], device: torch.device, seconds: float, warmup: int = 3) -> float:
    """Calls per second over at least `seconds` (and 3 calls), after `warmup` calls."""
    for _ in range(warmup):
        call()
    _synchronize(device)
    calls, started = 0, time.perf_counter()
    while True:
        for _ in range(3):
            call()
        calls += 3
        _synchronize(device)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return calls / elapsed


def inference_models(weights: Path | None, dry: bool) -> dict[str, tuple[torch.nn.Module, tuple[int, int]]]:
    """name -> (network, input size): the default model (its weights) and random-weight presets."""
    from tagtrack.model.checkpoint import load_checkpoint, resolve_weights
    from tagtrack.model.hourglass import HourglassNet

    default = load_checkpoint(resolve_weights(weights))
    if dry:  # the default network at a tiny input, and the tiny preset
        return {"default": (default.model, (64, 64)), "tiny": (HourglassNet(TINY), (TINY.input_height, TINY.input_width))}
    models = {"default": (default.model, (default.config.input_height, default.config.input_width))}
    for name, config in (("small", SMALL), ("paper", PAPER)):
        models[name] = (HourglassNet(config), (config.input_height, config.input_width))
    return models


def measure_inference(settings: RunSettings, report: Report) -> list[dict]:
    """Model-only images/s per model, batch and variant; each row saved as soon as it is measured."""
    from tagtrack.model.hourglass import count_flops

    device = torch.device("cpu" if settings.dry else "cuda")
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time its algorithms once
    rows: list[dict] = report.data.setdefault("inference", [])
    variants = VARIANTS if device.type == "cuda" else CPU_VARIANTS
    for name, (model, input_hw) in inference_models(settings.weights, settings.dry).items():
        config: ModelConfig = replace(model.config, input_height=input_hw[0], input_width=input_hw[1])
        gflops = round(count_flops(config), 2)
        for batch in settings.sizes.inference_batches:
            for variant in variants:
                row = {"model": name, "input_hw": list(input_hw), "gflops_per_image": gflops, "batch": batch,
                       "variant": variant, "device": str(device)}
                if variant.endswith("-compile") and (name != "default" or batch != 1
                                             or report.remaining() < settings.sizes.compile_needs_seconds):
                    continue  # compiling takes a minute or more per shape: the app's model at batch 1, time allowing
                call = None
                try:
                    started = time.monotonic()
                    with torch.no_grad():
                        call = prepare_variant(model, variant, batch, input_hw, device)
                        calls_per_second = measure_rate(call, device, settings.sizes.measure_seconds)
                    row.update(images_per_s=round(calls_per_second * batch, 1),
                               ms_per_batch=round(1000 / calls_per_second, 3),
                               setup_seconds=round(time.monotonic() - started, 1))
                except Exception as error:  # e.g. torch.compile without a working compiler: note it, go on
                    row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                    log.warning("%s batch %d %s failed: %s", name, batch, variant, row["error"])
                log.info("inference %s", row)
                rows.append(row)
                del call
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            report.save()
    return rows


# ---------------------------------------------------------------- pipeline


def pipeline_row(bench_report) -> dict:
    summary = bench_report.summary
    frames = max(summary.frames, 1)
    thread_fps = summary.thread_fps()
    return {
        "engine": bench_report.engine, "input_hw": list(bench_report.input_hw),
        "model_only_fps": round(bench_report.model_fps, 1), "end_to_end_fps": round(summary.fps, 1),
        "frames": summary.frames, "people": summary.people, "tracks": summary.tracks, "dropped": summary.dropped,
        "stage_ms_per_frame": {stage: round(1000 * seconds / frames, 3) for stage, seconds in summary.stage_seconds.items()},
        "thread_fps": {thread: round(fps, 1) for thread, fps in thread_fps.items()},
        "slowest_thread": min(thread_fps, key=thread_fps.get) if thread_fps else None,
        "pipeline_over_slowest_thread": round(summary.slowest_stage_ratio(), 3),
    }


def measure_pipeline(settings: RunSettings, report: Report) -> list[dict]:
    """bench.pipeline on the carried vtest.avi (generated frames when it is absent) for each engine."""
    from tagtrack.bench.pipeline import bench_pipeline
    from tagtrack.realtime.run import RunOptions

    video = settings.video if settings.video.is_file() else None
    if video is None:
        log.warning("%s not found: the pipeline runs on generated frames", settings.video)
    if settings.dry:
        engines = [("torch", "cpu", False)]
    else:  # torch on the GPU both ways, and ONNX Runtime on this machine's CPU cores for comparison
        engines = [("torch", "cuda", False), ("torch", "cuda", True), ("ort", "cpu", False)]
    rows: list[dict] = report.data.setdefault("pipeline", [])
    for kind, device, fp16 in engines:
        options = RunOptions(source=str(video) if video else None, weights=settings.weights, engine=kind,
                             device=device, fp16=fp16, progress=False,
                             input_hw=(64, 64) if settings.dry else None, max_frames=settings.sizes.pipeline_frames)
        row = pipeline_row(bench_pipeline(options, frames=settings.sizes.pipeline_frames or 200,
                                          frame_hw=(120, 160) if settings.dry else (480, 640)))
        row["source"] = video.name if video else "generated"
        log.info("pipeline %s", row)
        rows.append(row)
        report.save()
    return rows


# ---------------------------------------------------------------- training speed


def one_training_batch(config, device: torch.device) -> tuple[dict[str, torch.Tensor], tuple[int, ...]]:
    """One batch of synthetic scenes at the config's input size, through the training dataset, on the device, and
    the data set's flip index (the heatmap mirror weight's)."""
    from torch.utils.data import DataLoader

    from tagtrack.bench.train import synthetic_training_set
    from tagtrack.training.step import batch_on_device

    with tempfile.TemporaryDirectory(prefix="tagtrack-gpu-batch-") as folder:
        dataset = synthetic_training_set(config, folder, config.batch_size)
        batch = next(iter(DataLoader(dataset, batch_size=config.batch_size)))
    return batch_on_device(batch, device, config.channels_last), dataset.schema.flip_index


def training_step_rate(config, device: torch.device, amp: bool, warmup: int, steps: int) -> dict:
    """Images/s of training.train's step (training.step: forward under autocast when AMP, every loss term, scaled
    backward, clipping, the optimiser step) on one batch held on the device: the network's training speed without
    data loading."""
    from tagtrack.model.networks import build_network
    from tagtrack.training.step import TrainingStep, all_stacks, build_optimizer, learning_parameters

    batch, flip_index = one_training_batch(config, device)
    model = build_network(config.model).to(device)
    parameters = learning_parameters(model, config.trainable)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    step = TrainingStep.for_config(config, all_stacks(model, config), parameters, build_optimizer(parameters, config),
                                   scaler, flip_index)
    for index in range(warmup):
        step(batch, index)
    _synchronize(device)
    started = time.perf_counter()
    for index in range(steps):
        step(batch, warmup + index)
    _synchronize(device)
    seconds = (time.perf_counter() - started) / steps
    images = int(batch["images"].shape[0])
    return {"images_per_step": images, "ms_per_step": round(1000 * seconds, 2),
            "images_per_s": round(images / seconds, 1)}


def train_speed_configs(settings: RunSettings) -> dict:
    """name -> TrainConfig for the training-speed table: the corpus run's own config and the presets."""
    from tagtrack.training.config import preset

    corpus_config = corpus_train_config(settings)
    if settings.dry:
        return {"corpus": corpus_config, "tiny": preset("tiny")}
    return {"corpus": corpus_config, "small": preset("small"), "paper": preset("paper")}


def measure_train_speed(settings: RunSettings, report: Report) -> list[dict]:
    device = torch.device("cpu" if settings.dry else "cuda")
    rows: list[dict] = report.data.setdefault("train_speed", [])
    amps = (True, False) if device.type == "cuda" else (False,)
    for name, config in train_speed_configs(settings).items():
        for amp in amps:
            row = {"config": name, "input_hw": list(config.input_hw), "batch_size": config.batch_size,
                   "pairs": config.pairs, "amp": amp, "device": str(device)}
            row.update(training_step_rate(config, device, amp, settings.sizes.train_warmup_steps,
                                          settings.sizes.train_steps))
            log.info("train speed %s", row)
            rows.append(row)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            report.save()
    return rows


# ---------------------------------------------------------------- training on the corpus


def corpus_train_config(settings: RunSettings):
    """The training run's config: the corpus's own train_config.json when the packer was given one, else the
    default model's recipe (phase 2: its network, 192x192 views, augmentation and loss weights), with the
    data paths pointed at the corpus, no validation, no learning-rate decay and a length only time limits."""
    from tagtrack.training.config import TrainConfig

    own = settings.corpus / "train_config.json"
    if own.is_file():
        config = TrainConfig.load(own)
    else:
        from tagtrack.training.recipes.default_model import training_config

        config = training_config(settings.corpus, phase=2)
    workers = 0 if settings.dry else max(1, min(12, (os.cpu_count() or 2) - 2))
    overrides = dict(train_annotations=str(settings.corpus / "annotations.json"),
                     train_images=str(settings.corpus / "images"), val_annotations="", val_images="",
                     init_weights=str(settings.init) if settings.init else "", steps=1_000_000, lr_decay_steps=(),
                     checkpoint_every=1_000_000, batch_size=settings.sizes.training_batch, workers=workers,
                     log_every=settings.sizes.training_log_every)
    if "train_teacher_maps" in {f.name for f in fields(config)}:
        overrides["train_teacher_maps"] = ""  # the teacher's stored maps are not carried (and not resized)
    config = replace(config, **overrides)
    if settings.dry:  # the tiny network at 64x64: a few steps take seconds on a CPU
        config = replace(config, model=replace(TINY, tag_dim=config.model.tag_dim), max_people=8)
    return config


def _log_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def stop_training(process: subprocess.Popen, log_csv: Path, wait_for_first_row: float, wait_for_exit: float) -> None:
    """SIGINT to the training process only (not its data workers), which saves a checkpoint and exits.
    Stopping before the loop has started would lose everything, so first wait a while for its first log row."""
    waited = time.monotonic()
    while process.poll() is None and not _log_rows(log_csv) and time.monotonic() - waited < wait_for_first_row:
        time.sleep(0.5)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=wait_for_exit)
        except subprocess.TimeoutExpired:
            log.error("training did not stop within %.0f s of SIGINT; killing it", wait_for_exit)
            process.kill()
            process.wait()


def run_training(settings: RunSettings, seconds: float) -> dict:
    """`tagtrack train` on the corpus for `seconds`, then SIGINT; brings the checkpoint, log and config into --out."""
    if not (settings.corpus / "annotations.json").is_file():
        raise UserFacingError(f"no packed corpus in {settings.corpus} (make gpu-carry, or python -m "
                              f"tagtrack.bench.gpu.pack)")
    config = corpus_train_config(settings)
    run_dir = Path(tempfile.mkdtemp(prefix="tagtrack-gpu-train-"))
    config_path = run_dir.parent / f"{run_dir.name}.json"
    config.save(config_path)
    command = [sys.executable, "-m", "tagtrack.main", "train", "--config", str(config_path), "--out", str(run_dir / "run")]
    log.info("training for %.0f s: %s", seconds, " ".join(command))
    started = time.monotonic()
    with open(settings.out / "train.log", "w") as output:
        # Its own session: a signal to run.sh's process group (timeout's TERM) must not reach the data workers,
        # whose death would end the training without a checkpoint; this process stops it with SIGINT instead.
        process = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=dict(os.environ, TQDM_DISABLE="1", PYTHONUNBUFFERED="1",
                                            **({"OMP_NUM_THREADS": "1"} if settings.dry else {})))
        interrupted = False
        try:
            process.wait(timeout=max(1.0, seconds))
        except subprocess.TimeoutExpired:
            # The first step can take long (data workers starting, cuDNN autotuning; a busy CPU in the dry run).
            stop_training(process, run_dir / "run" / "log.csv", wait_for_first_row=600.0 if settings.dry else 120.0,
                          wait_for_exit=120.0 if settings.dry else 30.0)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM from run.sh's time limit: keep what was trained
            interrupted = True
            stop_training(process, run_dir / "run" / "log.csv", wait_for_first_row=0.0, wait_for_exit=10.0)
    wall = time.monotonic() - started
    run = run_dir / "run"
    for source, target in (("last.safetensors", "gpu_trained.safetensors"), ("log.csv", "train_log.csv"),
                           ("config.json", "train_config.json")):
        if (run / source).is_file():
            shutil.copyfile(run / source, settings.out / target)
    rows = _log_rows(run / "log.csv")
    result = {"exit_code": process.returncode, "wall_seconds": round(wall, 1), "interrupted": interrupted,
              "config": config.to_dict(),
              "steps": int(rows[-1]["step"]) if rows else 0,
              "checkpoint": "gpu_trained.safetensors" if (settings.out / "gpu_trained.safetensors").is_file() else None}
    if rows:
        speeds = sorted(float(row["images_per_s"]) for row in rows[1:] or rows)  # the first row includes start-up
        result.update(images_per_s_median=speeds[len(speeds) // 2], last_row=rows[-1],
                      images_seen=result["steps"] * config.batch_size * (2 if config.pairs else 1))
    shutil.rmtree(run_dir, ignore_errors=True)
    config_path.unlink(missing_ok=True)
    log.info("training: %s", {k: v for k, v in result.items() if k != "config"})
    return result


# ---------------------------------------------------------------- the run


def run(settings: RunSettings) -> dict:
    settings.out.mkdir(parents=True, exist_ok=True)
    report = Report(settings.out / "report.json", settings.budget_seconds)
    report.data["mode"] = "dry (CPU, tiny sizes)" if settings.dry else "gpu"
    sizes = settings.sizes
    if settings.dry:
        torch.set_num_threads(1)  # a shared CPU: torch's OpenMP threads collapse when the cores are busy

    def needs(seconds: float) -> float:
        """A GPU section starts only with `seconds` left besides the reserve; the dry run does every section."""
        return 0.0 if settings.dry else sizes.reserve_seconds + seconds

    with report.section("environment") as go:
        if go:
            report.data["environment"] = environment()
            log.info("environment %s", report.data["environment"])
    if settings.run_tests:
        with report.section("tests", needs_seconds=needs(60)) as go:
            if go:
                timeout = 300.0 if settings.dry else min(180.0, report.remaining() / 3)
                report.data["tests"] = run_gpu_tests(settings.out, timeout)
    with report.section("agreement") as go:
        if go:
            from tagtrack.model.checkpoint import load_checkpoint, resolve_weights

            loaded = load_checkpoint(resolve_weights(settings.weights))
            device = "cpu" if settings.dry else "cuda"
            input_hw = (64, 64) if settings.dry else (loaded.config.input_height, loaded.config.input_width)
            report.data["agreement"] = engine_agreement(loaded.model, input_hw, device)
    with report.section("inference", needs_seconds=needs(60)) as go:
        if go:
            measure_inference(settings, report)
    with report.section("pipeline", needs_seconds=needs(30)) as go:
        if go:
            measure_pipeline(settings, report)
    with report.section("train_speed", needs_seconds=needs(30)) as go:
        if go:
            measure_train_speed(settings, report)
    with report.section("training", needs_seconds=needs(10)) as go:
        if go:
            seconds = max(3.0 if settings.dry else 10.0, report.remaining() - sizes.reserve_seconds)
            report.data["training"] = run_training(settings, seconds)
    report.save()
    return report.data


def _raise_keyboard_interrupt(signum, frame) -> None:  # noqa: ANN001
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tagtrack.bench.gpu.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the report, logs and checkpoint")
    parser.add_argument("--dry", action="store_true", help="CPU dry run: tiny sizes, a few steps (the test suite's)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds for the whole run; training gets what is left (default 400, dry 60)")
    parser.add_argument("--carry", type=Path, default=DEFAULT_CARRY,
                        help="folder with vtest.avi and corpus/ (default bench/gpu/carry)")
    parser.add_argument("--weights", type=Path, help="the default model's checkpoint (default: the bundled one)")
    parser.add_argument("--init", type=Path, help="start the corpus training from these weights")
    parser.add_argument("--no-tests", action="store_true", help="skip the pytest section")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    budget = args.budget_s if args.budget_s is not None else (60.0 if args.dry else 400.0)
    if not args.dry and not torch.cuda.is_available():
        print("error: no CUDA GPU visible to torch; use --dry for the CPU dry run", file=sys.stderr)
        return 2
    for path, flag in ((args.weights, "--weights"), (args.init, "--init")):
        if path is not None and not path.is_file():
            print(f"error: {flag} {path} not found", file=sys.stderr)
            return 2
    settings = RunSettings(out=args.out, dry=args.dry, budget_seconds=budget, carry=args.carry, weights=args.weights,
                           init=args.init, run_tests=not args.no_tests)
    # run.sh's time limit sends SIGTERM: stop like Ctrl-C, so the training's checkpoint and the report are kept.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        data = run(settings)
    except KeyboardInterrupt:
        print(f"interrupted; report so far: {args.out / 'report.json'}", file=sys.stderr)
        return 130
    print(f"report: {args.out / 'report.json'} ({data['elapsed_seconds']} s; errors: {sorted(data['errors']) or 'none'}"
          f"; skipped: {sorted(data['skipped']) or 'none'})")
    return 1 if data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
