"""Inference engines: one contract (`Engine`) for torch, ONNX Runtime and TensorRT.

The pipeline hands an engine a float32 batch `[B,3,H,W]` (RGB in [0,1], the network input size)
and gets numpy `(heatmaps [B,K,h,w], tags [B,K,L,h,w])` back, whichever backend runs.

`create_engine` loads a checkpoint and picks the backend by name (`realtime/backends.py`, the table
of names, and `ENGINE_CLASSES` below): `auto` means TensorRT on an NVIDIA GPU with `tensorrt`
installed, else ONNX Runtime, else torch. ONNX Runtime and TensorRT run an ONNX
file exported once per (checkpoint, input shape) into the cache directory; TensorRT engines are
built from it once per (ONNX, GPU, TensorRT version, precision, shapes) and cached beside it.
See docs/engines.md.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from tagtrack.model.config import check_input_size
from tagtrack.model.errors import UserFacingError, import_extra
from tagtrack.model.files import write_atomically
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.realtime.backends import AUTO, BACKENDS, ENGINE_CHOICES

log = logging.getLogger(__name__)

ENGINE_KINDS = ENGINE_CHOICES
DEVICES = ("auto", "cpu", "cuda")
INPUT_NAME = "images"
OUTPUT_NAMES = ("heatmaps", "tags")
CACHE_ENV = "TAGTRACK_CACHE"
TRT_VERSION_RANGE = ">=10.0,<11"  # keep in step with pyproject's `tensorrt` extra
TRT_WORKSPACE_BYTES = 1 << 30

Maps = tuple[np.ndarray, np.ndarray]


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


# ---------------------------------------------------------------- shared helpers


class ModelFacts:
    """What every engine states about its model, set by its constructor: the pipeline, the API and the outputs
    read the keypoint schema, the stored settings and the weights' file from here. An engine made from a
    checkpoint (`from_checkpoint`) states the checkpoint's; one made directly states what its caller passes
    (by default COCO-17 keypoints, no stored settings, no file)."""

    schema: KeypointSchema
    stored_settings: dict
    weights: Path | None

    def _state_model(self, schema: KeypointSchema, stored_settings: dict | None, weights: Path | None) -> None:
        self.schema = schema
        self.stored_settings = copy.deepcopy(stored_settings or {})  # its own: a caller's later edits do not reach it
        self.weights = Path(weights) if weights is not None else None


def default_cache_dir() -> Path:
    """`$TAGTRACK_CACHE`, else `~/.cache/tagtrack`."""
    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "tagtrack"


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"; "cuda" without a GPU is a user error."""
    if device not in DEVICES:
        raise UserFacingError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserFacingError("--device cuda: no CUDA GPU is visible to torch (use --device cpu)")
    return device


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_batch(batch: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    if batch.ndim != 4 or batch.shape[1] != 3 or tuple(batch.shape[2:]) != tuple(input_hw):
        raise ValueError(f"expected a batch [B,3,{input_hw[0]},{input_hw[1]}], got {list(batch.shape)}")
    return np.ascontiguousarray(batch, dtype=np.float32)


def infer_in_fixed_batches(batch: np.ndarray, batch_size: int, run: Callable[[np.ndarray], Maps]) -> Maps:
    """Run a static-batch backend on any number of images: chunk, and zero-pad the last chunk."""
    count = batch.shape[0]
    if count == batch_size:
        return run(batch)
    heatmaps, tags = [], []
    for start in range(0, count, batch_size):
        chunk = batch[start:start + batch_size]
        real = chunk.shape[0]
        if real < batch_size:
            padding = np.zeros((batch_size - real, *chunk.shape[1:]), dtype=chunk.dtype)
            chunk = np.concatenate([chunk, padding])
        chunk_heatmaps, chunk_tags = run(chunk)
        heatmaps.append(chunk_heatmaps[:real])
        tags.append(chunk_tags[:real])
    return np.concatenate(heatmaps), np.concatenate(tags)


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
        images = torch.from_numpy(_check_batch(batch, self.input_hw)).to(self.device)
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
        return infer_in_fixed_batches(_check_batch(batch, self.input_hw), self.batch_size, self._run)

    def close(self) -> None:
        self.session = None


# ---------------------------------------------------------------- TensorRT


def engine_cache_key(onnx_sha256: str, gpu_name: str, compute_capability: tuple[int, int],
                     trt_version: str, precision: str, input_shape: tuple[int, ...]) -> str:
    """The file stem of a cached TensorRT engine: readable prefix + a digest over every input.

    A serialized engine only runs on the GPU model and TensorRT version that built it, with the
    precision and shapes it was built for, so each of those is part of the key.
    """
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
    fields = {
        "onnx_sha256": onnx_sha256,
        "gpu_name": gpu_name,
        "compute_capability": [int(c) for c in compute_capability],
        "trt_version": trt_version,
        "precision": precision,
        "input_shape": [int(d) for d in input_shape],
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    shape = "x".join(str(int(d)) for d in input_shape)
    major, minor = (int(c) for c in compute_capability)
    return f"sm{major}{minor}-trt{trt_version}-{precision}-{shape}-{digest}"


def _import_tensorrt():
    """The tensorrt module, or UserFacingError saying why it cannot be used."""
    try:
        import tensorrt as trt
    except Exception as error:  # ImportError, or a broken install missing libnvinfer
        raise UserFacingError(f"TensorRT is not available ({type(error).__name__}: {error}); "
                              f"install it with: pip install 'tensorrt{TRT_VERSION_RANGE}'") from error
    major = int(trt.__version__.split(".")[0])
    if major != 10:
        raise UserFacingError(f"TensorRT {trt.__version__} found; tagtrack is written against "
                              f"TensorRT {TRT_VERSION_RANGE}")
    return trt


def tensorrt_usable() -> str | None:
    """None when TensorRT can run here, else the reason it cannot (for auto fall-through and skips)."""
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    try:
        _import_tensorrt()
    except UserFacingError as error:
        return str(error)
    return None


def _trt_logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def _onnx_input_shape(onnx_path: Path) -> tuple[int, ...]:
    onnx = import_extra("onnx", "tensorrt", "TensorRT engines")

    model = onnx.load(str(onnx_path), load_external_data=False)
    for value in model.graph.input:
        if value.name == INPUT_NAME:
            dims = value.type.tensor_type.shape.dim
            if any(not d.HasField("dim_value") for d in dims):
                raise UserFacingError(f"{onnx_path}: input {INPUT_NAME!r} has dynamic dimensions")
            return tuple(int(d.dim_value) for d in dims)
    raise UserFacingError(f"{onnx_path} has no input named {INPUT_NAME!r}")


def build_tensorrt_engine(onnx_path: Path, engine_path: Path, fp16: bool,
                          timing_cache_path: Path | None = None) -> None:
    """Build a serialized TensorRT engine from our ONNX file (static input shape) and write it atomically."""
    trt = _import_tensorrt()
    logger = _trt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10 networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserFacingError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, TRT_WORKSPACE_BYTES)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)  # weakly typed: TensorRT may pick fp16 kernels per layer
    shape = _onnx_input_shape(onnx_path)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, shape, shape, shape)  # min = opt = max: our ONNX has static shapes
    config.add_optimization_profile(profile)
    timing_cache = None
    if timing_cache_path is not None:
        previous = timing_cache_path.read_bytes() if timing_cache_path.exists() else b""
        timing_cache = config.create_timing_cache(previous)
        # The file name already carries GPU and TensorRT version, so a mismatch means a stale file.
        config.set_timing_cache(timing_cache, ignore_mismatch=False)
    log.info("building TensorRT engine from %s (%s); this takes a while once", onnx_path.name,
             "fp16" if fp16 else "fp32")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserFacingError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    if timing_cache is not None:
        _atomic_write(timing_cache_path, memoryview(config.get_timing_cache().serialize()))
    _atomic_write(engine_path, memoryview(serialized))


def _atomic_write(path: Path, data) -> None:
    """Readers never see half a file (model/files.py: write_atomically)."""
    write_atomically(path, lambda temporary: temporary.write_bytes(data))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32, "INT64": torch.int64}


class TensorRTEngine(ModelFacts):
    """A TensorRT 10 engine run with the name-based API on a CUDA stream, torch tensors as buffers.

    The engine is built from `onnx_path` on first use and cached under `cache_dir/trt/` by
    `engine_cache_key`; the builder's timing cache lives beside it, one file per GPU and version.
    """

    def __init__(self, onnx_path: Path, cache_dir: Path, fp16: bool = False, device: str = "cuda", *,
                 schema: KeypointSchema = COCO17, stored_settings: dict | None = None,
                 weights: Path | None = None) -> None:
        trt = _import_tensorrt()
        self._state_model(schema, stored_settings, weights)
        self.device = torch.device(resolve_device(device))
        if self.device.type != "cuda":
            raise UserFacingError("TensorRT needs a CUDA GPU (--device cuda)")
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        self.device = torch.device("cuda", index)
        gpu_name = torch.cuda.get_device_name(index)
        capability = torch.cuda.get_device_capability(index)
        precision = "fp16" if fp16 else "fp32"
        input_shape = _onnx_input_shape(Path(onnx_path))
        key = engine_cache_key(file_sha256(Path(onnx_path)), gpu_name, capability, trt.__version__,
                               precision, input_shape)
        trt_dir = Path(cache_dir) / "trt"
        self.engine_path = trt_dir / f"{key}.engine"
        timing_cache_path = trt_dir / f"timing-{_slug(gpu_name)}-sm{capability[0]}{capability[1]}-trt{trt.__version__}.cache"

        with torch.cuda.device(self.device):
            self._logger = _trt_logger(trt)
            self._runtime = trt.Runtime(self._logger)
            self._engine = None
            if self.engine_path.exists():
                self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
                if self._engine is None:
                    log.warning("cached TensorRT engine %s is unreadable; rebuilding", self.engine_path)
                else:
                    log.info("TensorRT engine cache hit: %s", self.engine_path.name)
            if self._engine is None:
                build_tensorrt_engine(Path(onnx_path), self.engine_path, fp16, timing_cache_path)
                self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
                if self._engine is None:
                    raise UserFacingError(f"TensorRT cannot load the engine it just built: {self.engine_path}")
            self._context = self._engine.create_execution_context()
            self._context.set_input_shape(INPUT_NAME, input_shape)
            self._stream = torch.cuda.Stream(self.device)
            self._buffers: dict[str, torch.Tensor] = {}
            for i in range(self._engine.num_io_tensors):
                name = self._engine.get_tensor_name(i)
                shape = tuple(self._context.get_tensor_shape(name))
                dtype = _TORCH_DTYPES[self._engine.get_tensor_dtype(name).name]
                self._buffers[name] = torch.empty(shape, dtype=dtype, device=self.device)
                self._context.set_tensor_address(name, self._buffers[name].data_ptr())
        missing = [n for n in (INPUT_NAME, *OUTPUT_NAMES) if n not in self._buffers]
        if missing:
            raise UserFacingError(f"TensorRT engine {self.engine_path.name} lacks tensors {missing}")
        self.batch_size = int(input_shape[0])
        self.input_hw = (int(input_shape[2]), int(input_shape[3]))
        self.name = f"tensorrt {trt.__version__} ({precision}, {gpu_name})"

    @staticmethod
    def unusable(device: str) -> str | None:
        reason = tensorrt_usable()
        if reason is None and device != "cuda":
            return "needs --device cuda (or auto on a machine with a GPU)"
        return reason

    @classmethod
    def from_checkpoint(cls, model: "CheckpointModel") -> Engine:
        return cls(model.onnx_path(), model.cache_dir, model.fp16, model.device, **model.facts())

    def _run(self, batch: np.ndarray) -> Maps:
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            images = self._buffers[INPUT_NAME]
            images.copy_(torch.from_numpy(batch).to(dtype=images.dtype), non_blocking=False)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            heatmaps = self._buffers["heatmaps"].float().cpu()  # the copy waits for the stream
            tags = self._buffers["tags"].float().cpu()
        return heatmaps.numpy(), tags.numpy()

    def infer(self, batch: np.ndarray) -> Maps:
        return infer_in_fixed_batches(_check_batch(batch, self.input_hw), self.batch_size, self._run)

    def close(self) -> None:
        if getattr(self, "_stream", None) is not None:
            self._stream.synchronize()
        self._context = None
        self._engine = None
        self._runtime = None
        self._buffers = {}
        self._stream = None


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
    _atomic_write(digest_path, (file_sha256(path) + "\n").encode())
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


# ---------------------------------------------------------------- `tagtrack export`


@dataclass
class ExportResult:
    onnx_path: Path
    input_shape: list[int]
    output_shapes: dict[str, list[int]]
    engine_path: Path | None = None


def _check_writable(path: Path, flag: str) -> None:
    parent = path.expanduser().resolve().parent
    if not parent.is_dir():
        raise UserFacingError(f"{flag} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserFacingError(f"{flag} {path}: folder {parent} is not writable")
    if path.is_dir():
        raise UserFacingError(f"{flag} {path} is a folder; give a file name")


def _run_onnx_once(onnx_path: Path) -> tuple[list[int], dict[str, list[int]]]:
    """Run an ONNX file once on zeros in ONNX Runtime (CPU); its input shape and output shapes."""
    check = OnnxRuntimeEngine(onnx_path, "cpu")
    try:
        input_shape = [check.batch_size, 3, *check.input_hw]
        outputs = check.session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.zeros(input_shape, dtype=np.float32)})
    finally:
        check.close()
    for name, value in zip(OUTPUT_NAMES, outputs):
        if not np.isfinite(value).all():
            raise UserFacingError(f"the exported ONNX gives non-finite {name}; the checkpoint may be corrupt")
    return input_shape, {name: list(value.shape) for name, value in zip(OUTPUT_NAMES, outputs)}


def export_checkpoint(weights: Path | None, onnx_out: Path, input_hw: tuple[int, int] | None = None,
                      batch_size: int = 1, engine_out: Path | None = None, fp16: bool = False) -> ExportResult:
    """Write the checkpoint as ONNX (checked by running it once in ONNX Runtime) and optionally a TensorRT engine."""
    from tagtrack.model.checkpoint import load_checkpoint, resolve_weights
    from tagtrack.model.export import export_onnx
    from tagtrack.realtime.sinks import refuse_overwriting, write_whole_file

    if batch_size < 1:
        raise UserFacingError(f"--batch must be at least 1, got {batch_size}")
    if fp16 and engine_out is None:
        raise UserFacingError("--fp16 applies to the TensorRT engine; add --trt out.engine")
    check_input_limit(input_hw)
    _check_writable(onnx_out, "--onnx")
    if engine_out is not None:
        _check_writable(engine_out, "--trt")
    # Never over the checkpoint it reads (nor a bundled model: refuse_overwriting adds them).
    refuse_overwriting({"--weights": resolve_weights(weights)} if weights is not None else {},
                       {"--onnx": onnx_out} | ({"--trt": engine_out} if engine_out is not None else {}))
    if engine_out is not None:
        reason = tensorrt_usable()  # fail before the export, not after it
        if reason is not None:
            raise UserFacingError(f"--trt: {reason}")
    loaded = load_checkpoint(resolve_weights(weights))
    if input_hw is None:
        input_hw = (loaded.config.input_height, loaded.config.input_width)
    height, width = check_input_size(input_hw)
    shapes = {}

    def export_and_check(temporary: Path) -> None:  # renamed into place only once ONNX Runtime has run it
        # The temporary was created with the mode any new file gets here; export_onnx replaces it by its own
        # mkstemp file (mode 0600), so the mode is put back.
        mode = temporary.stat().st_mode & 0o777
        export_onnx(loaded.model, temporary, height, width, batch_size=batch_size)
        os.chmod(temporary, mode)
        shapes["input"], shapes["outputs"] = _run_onnx_once(temporary)

    # Under a new temporary name, renamed into place only once ONNX Runtime has run it; with the mode any
    # new file gets (write_atomically's mkstemp would leave the user's model readable by them alone).
    write_whole_file(onnx_out, export_and_check)
    result = ExportResult(onnx_out, shapes["input"], shapes["outputs"])
    if engine_out is not None:
        build_tensorrt_engine(onnx_out, engine_out, fp16)
        result.engine_path = engine_out
    return result
