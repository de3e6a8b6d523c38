"""Inference engines: one contract (`Engine`) for torch, ONNX Runtime and TensorRT.

The pipeline hands an engine a float32 batch `[B,3,H,W]` (RGB in [0,1], the network input size)
and gets numpy `(heatmaps [B,K,h,w], tags [B,K,L,h,w])` back, whichever backend runs.

`create_engine` loads a checkpoint and picks the backend by name (`realtime/backends.py`, the table
of names, and `ENGINE_CLASSES` below): `auto` means TensorRT on an NVIDIA GPU with `tensorrt`
installed, else ONNX Runtime, else torch. ONNX Runtime and TensorRT run an ONNX
file exported once per (checkpoint, input shape) into the cache directory; TensorRT engines are
built from it once per (ONNX, GPU, TensorRT version, precision, shapes) and cached beside it.

Here: the `Engine` protocol, the torch and ONNX Runtime engines, the ONNX cache and the factory. The TensorRT
engine and its engine cache are `realtime/tensorrt_engine.py`, `tagtrack export` is `realtime/model_export.py`,
the helpers every engine shares are `realtime/engine_parts.py`; their names stay importable from here.
See docs/engines.md.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from tagtrack.model.config import check_input_size
from tagtrack.model.errors import UserFacingError
from tagtrack.model.export import INPUT_NAME, OUTPUT_NAMES
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.realtime.backends import AUTO, BACKENDS, ENGINE_CHOICES
from tagtrack.realtime.engine_parts import (
    Maps,
    ModelFacts,
    checked_batch,
    file_sha256,
    infer_in_fixed_batches,
    resolve_device,
    write_bytes_atomically,
)
from tagtrack.realtime.tensorrt_engine import TensorRTEngine

log = logging.getLogger(__name__)

ENGINE_KINDS = ENGINE_CHOICES
CACHE_ENV = "TAGTRACK_CACHE"


class Engine(Protocol):
    """What the pipeline needs from a backend. `infer` is called from one thread only."""

    name: str                     # for logs and the summary, e.g. "onnxruntime (CPUExecutionProvider)"
    input_hw: tuple[int, int]     # network input height, width
    batch_size: int               # the batch the engine was built for; infer accepts any B
    # What the engine states about the model it runs, set at construction (ModelFacts): its keypoints, the
    # settings stored with it ({} for none) and its file (None for a network handed over in memory).
    schema: KeypointSchema
    stored_settings: dict
    weights: Path | None

    def infer(self, batch: np.ndarray) -> Maps: ...

    def close(self) -> None: ...


def default_cache_dir() -> Path:
    """`$TAGTRACK_CACHE`, else `~/.cache/tagtrack`."""
    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "tagtrack"


# ---------------------------------------------------------------- torch


class TorchEngine(ModelFacts):
    """The network in eager PyTorch. fp16 runs under CUDA autocast (batch norm stays fp32)."""

    def __init__(self, model: torch.nn.Module, device: str = "cpu", fp16: bool = False,
                 input_hw: tuple[int, int] | None = None, batch_size: int = 1, *,
                 schema: KeypointSchema = COCO17, stored_settings: dict | None = None,
                 weights: Path | None = None) -> None:
        self._state_model(schema, stored_settings, weights)
        self.device = resolve_device(device)
        if fp16 and self.device != "cuda":
            log.warning("fp16 needs CUDA; running the torch engine in fp32 on %s", self.device)
            fp16 = False
        self.fp16 = fp16
        config = getattr(model, "config", None)
        if input_hw is None:
            if config is None:
                raise ValueError("input_hw is required for a model without a .config")
            input_hw = (config.input_height, config.input_width)
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.batch_size = batch_size
        self.model = model.to(self.device).eval()
        self.name = f"torch ({self.device}, {'fp16' if fp16 else 'fp32'})"

    @staticmethod
    def unusable(device: str) -> str | None:
        return None

    @classmethod
    def from_checkpoint(cls, model: "CheckpointModel") -> Engine:
        return cls(model.loaded.model, model.device, model.fp16, input_hw=model.input_hw, batch_size=model.batch_size,
                   **model.facts())

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> Maps:
        images = torch.from_numpy(checked_batch(batch, self.input_hw)).to(self.device)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.fp16):
            heatmaps, tags = self.model(images)
        return heatmaps.float().cpu().numpy(), tags.float().cpu().numpy()

    def close(self) -> None:
        self.model = None
        if self.device == "cuda":
            torch.cuda.empty_cache()


# ---------------------------------------------------------------- ONNX Runtime


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class OnnxRuntimeEngine(ModelFacts):
    """An exported ONNX file in ONNX Runtime: CPU provider, or CUDA when onnxruntime-gpu is installed."""

    def __init__(self, onnx_path: Path, device: str = "cpu", num_threads: int | None = None, *,
                 schema: KeypointSchema = COCO17, stored_settings: dict | None = None,
                 weights: Path | None = None) -> None:
        import onnxruntime as ort

        self._state_model(schema, stored_settings, weights)

        self.device = resolve_device(device)
        available = ort.get_available_providers()
        if self.device == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise UserFacingError("ONNX Runtime on CUDA needs the onnxruntime-gpu package "
                                      "(installed providers: " + ", ".join(available) + ")")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        # Chosen by measurement (docs/engines.md, 2026-12-01): ALL (with its NCHWc layout rewrite) took half
        # the CPU time of EXTENDED or BASIC per inference; the memory arena saves a little, so it stays on.
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = True
        # All cores: one thread costs ~8 % less CPU per inference, but would cap the network at one core while
        # capture and decoding (~5 ms a frame together) leave most of the second one free.
        options.intra_op_num_threads = num_threads or _cpu_cores()
        options.inter_op_num_threads = 1  # the graph is one chain of convolutions; no parallel branches worth it
        # Idle ORT threads spin by default; in the pipeline they would steal the cores that capture,
        # decode and tracking run on (and on a loaded 2-core machine spinning doubled the latency).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise UserFacingError(f"cannot load ONNX model {onnx_path}: {str(error).splitlines()[0]}") from error
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if INPUT_NAME not in inputs or any(name not in outputs for name in OUTPUT_NAMES):
            raise UserFacingError(f"{onnx_path} is not a tagtrack model (inputs {list(inputs)}, outputs {outputs})")
        shape = inputs[INPUT_NAME].shape
        if not all(isinstance(d, int) for d in shape):
            raise UserFacingError(f"{onnx_path}: expected static input shape, got {shape}")
        self.batch_size = int(shape[0])
        self.input_hw = (int(shape[2]), int(shape[3]))
        self.providers = self.session.get_providers()
        if self.device == "cuda" and self.providers[0] != "CUDAExecutionProvider":
            # ORT silently drops a provider whose libraries (CUDA, cuDNN) fail to load.
            raise UserFacingError("ONNX Runtime could not start its CUDA provider (CUDA/cuDNN libraries missing?)")
        self.name = f"onnxruntime ({self.providers[0]})"

    @staticmethod
    def unusable(device: str) -> str | None:
        return None

    @classmethod
    def from_checkpoint(cls, model: "CheckpointModel") -> Engine:
        if model.fp16:
            log.warning("--fp16 is ignored by the ONNX Runtime engine (it runs the fp32 export)")
        return cls(model.onnx_path(), model.device, **model.facts())

    def _run(self, batch: np.ndarray) -> Maps:
        heatmaps, tags = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        return heatmaps, tags

    def infer(self, batch: np.ndarray) -> Maps:
        return infer_in_fixed_batches(checked_batch(batch, self.input_hw), self.batch_size, self._run)

    def close(self) -> None:
        self.session = None



# ---------------------------------------------------------------- ONNX cache and create_engine


def cached_onnx(model: torch.nn.Module, checkpoint_sha256: str, input_hw: tuple[int, int], batch_size: int,
                cache_dir: Path) -> Path:
    """The model's ONNX export for this input shape, exported once into `cache_dir/onnx/` with its
    SHA-256 beside it (`.onnx.sha256`); a cached file that does not match is exported again."""
    from tagtrack.model.export import export_onnx

    height, width = input_hw
    path = Path(cache_dir) / "onnx" / f"{checkpoint_sha256[:16]}-b{batch_size}-{height}x{width}.onnx"
    digest_path = path.with_name(path.name + ".sha256")
    if path.exists():
        # A cached file is used only if it is byte for byte what was exported (a cut or damaged file
        # would otherwise send every later run to the slower torch fallback).
        expected = digest_path.read_text().strip() if digest_path.is_file() else None
        if expected is not None and file_sha256(path) == expected:
            log.info("ONNX cache hit: %s", path)
            return path
        log.warning("cached ONNX export %s is damaged or unverified; exporting it again", path)
    log.info("exporting ONNX %dx%d (batch %d) to %s", height, width, batch_size, path)
    export_onnx(model, path, height, width, batch_size=batch_size)  # writes a temporary file and renames it
    write_bytes_atomically(digest_path, (file_sha256(path) + "\n").encode())
    return path


# The class of each name in realtime/backends.py (same keys; `auto` tries them in that table's order).
# Each has unusable(device) -> the reason it cannot run here or None, and from_checkpoint(CheckpointModel).
ENGINE_CLASSES: dict[str, type] = {"trt": TensorRTEngine, "ort": OnnxRuntimeEngine, "torch": TorchEngine}


@dataclass
class CheckpointModel:
    """A loaded checkpoint and how to run it: what every engine class is made from."""

    loaded: object  # model.checkpoint.LoadedCheckpoint
    weights: Path
    device: str  # resolved: "cpu" or "cuda"
    fp16: bool
    input_hw: tuple[int, int]
    batch_size: int
    cache_dir: Path

    def onnx_path(self) -> Path:
        """The ONNX export ONNX Runtime and TensorRT run (cached; exported on first use)."""
        from tagtrack.model.checkpoint import checkpoint_sha256

        return cached_onnx(self.loaded.model, checkpoint_sha256(self.weights), self.input_hw, self.batch_size,
                           self.cache_dir)

    def facts(self) -> dict:
        """What an engine made from this checkpoint states about it (ModelFacts): keypoints, stored settings, file."""
        return {"schema": self.loaded.schema, "stored_settings": self.loaded.settings, "weights": self.weights}


# The largest network input side accepted. The network's memory grows with the input's pixels: 2048x2048 is
# 16 times the pixels of the paper preset's 512x512 and already needs gigabytes; 64000x64000 took 23 s to
# fail with a MemoryError (45.8 GiB for the input alone).
MAX_INPUT_SIDE = 2048


def check_input_limit(input_hw: tuple[int, int] | None, what: str = "--input-size") -> None:
    """Refuse an input size beyond MAX_INPUT_SIDE at once (None: the checkpoint's, always fine)."""
    if input_hw is None:
        return
    height, width = (int(side) for side in input_hw)
    if max(height, width) > MAX_INPUT_SIDE:
        raise UserFacingError(f"{what} {height}x{width}: at most {MAX_INPUT_SIDE} per side (the network's memory "
                              "grows with the input's pixels)")


def check_stored_settings(stored: dict | None, weights: Path) -> None:
    """The decoder and tracker settings stored in a checkpoint, checked on their own (model/settings.py)
    as soon as it is loaded: a value out of range is the checkpoint's fault, and the error names it."""
    from tagtrack.model.settings import resolve_settings

    resolve_settings(stored, stored_origin=f"settings stored in checkpoint {weights}")


def create_engine(kind: str, weights: Path | None, device: str = "auto", fp16: bool = False,
                  input_hw: tuple[int, int] | None = None, cache_dir: Path | None = None,
                  batch_size: int = 1, frame_hw: tuple[int, int] | None = None) -> Engine:
    """Load a checkpoint and wrap it in the requested backend (see the module docstring for `auto`).

    Input shape: input_hw when given; else, for frames of frame_hw, the shape with no more pixels than the
    checkpoint's input that covers the frame best (`transforms.choose_input_hw`: a portrait video gets a
    portrait input); else the checkpoint's. Each shape has its own ONNX / TensorRT cache entry."""
    from tagtrack.model.checkpoint import load_checkpoint, resolve_weights
    from tagtrack.model.transforms import choose_input_hw

    if kind not in ENGINE_KINDS:
        raise UserFacingError(f"unknown engine {kind!r}; choose one of {', '.join(ENGINE_KINDS)}")
    check_input_limit(input_hw, "input size")
    resolved_device = resolve_device(device)
    if batch_size < 1:
        raise UserFacingError(f"batch size must be at least 1, got {batch_size}")
    weights_path = resolve_weights(weights)
    # safetensors reports a file it may not read as "No such file or directory": say what it is.
    if weights_path.is_file() and not os.access(weights_path, os.R_OK):
        raise UserFacingError(f"cannot read checkpoint {weights_path}: permission denied")
    loaded = load_checkpoint(weights_path)
    check_stored_settings(loaded.settings, weights_path)  # before an ONNX export takes seconds
    input_hw = choose_input_hw((loaded.config.input_height, loaded.config.input_width), input_hw, frame_hw)
    model = CheckpointModel(loaded, weights_path, resolved_device, fp16, check_input_size(input_hw), batch_size,
                            Path(cache_dir) if cache_dir is not None else default_cache_dir())
    # The engine states the checkpoint's keypoint schema, stored settings and file (CheckpointModel.facts).
    return _open_engine(kind, model)


def _open_engine(kind: str, model: CheckpointModel) -> Engine:
    if kind != AUTO:
        reason = ENGINE_CLASSES[kind].unusable(model.device)
        if reason is not None:
            raise UserFacingError(f"--engine {kind}: {reason}")
        return ENGINE_CLASSES[kind].from_checkpoint(model)
    # auto: the first backend in the table that works on the resolved device, falling through on failure.
    *earlier, last = BACKENDS
    for name in earlier:
        engine_class = ENGINE_CLASSES[name]
        reason = engine_class.unusable(model.device)
        if reason is not None:
            log.info("not using %s: %s", BACKENDS[name].description, reason)
            continue
        try:
            return engine_class.from_checkpoint(model)
        except (UserFacingError, ImportError, RuntimeError) as error:
            log.warning("%s engine unavailable (%s); trying the next backend", BACKENDS[name].description, error)
    return ENGINE_CLASSES[last].from_checkpoint(model)
