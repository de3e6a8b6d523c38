"""The TensorRT engine: built from the ONNX export once per (ONNX, GPU, TensorRT version, precision, shapes),
cached under `cache_dir/trt/` by `engine_cache_key`, and run with TensorRT 10's name-based API on a CUDA stream.

`tensorrt` is imported only when an engine is built or run (`_import_tensorrt`), so machines without it import
this module (and `realtime/engines.py`, whose `ENGINE_CLASSES` names `TensorRTEngine`) without touching it.
`build_tensorrt_engine` is also what `tagtrack export --trt` runs (realtime/model_export.py). See docs/engines.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tagtrack.model.errors import UserFacingError, import_extra
from tagtrack.model.export import INPUT_NAME, OUTPUT_NAMES
from tagtrack.model.schema import COCO17, KeypointSchema
from tagtrack.realtime.engine_parts import (
    Maps,
    ModelFacts,
    write_bytes_atomically,
    checked_batch,
    file_sha256,
    infer_in_fixed_batches,
    resolve_device,
)

if TYPE_CHECKING:
    from tagtrack.realtime.engines import CheckpointModel, Engine

# The engines' one logger, as before TensorRT had its own module: whoever filters engine logs keeps seeing these.
log = logging.getLogger("tagtrack.realtime.engines")

TRT_VERSION_RANGE = ">=10.0,<11"  # keep in step with pyproject's `tensorrt` extra
TRT_WORKSPACE_BYTES = 1 << 30

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
        write_bytes_atomically(timing_cache_path, memoryview(config.get_timing_cache().serialize()))
    write_bytes_atomically(engine_path, memoryview(serialized))


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
            # The copies to the host wait for the stream.
            heatmaps, tags = (self._buffers[name].float().cpu() for name in OUTPUT_NAMES)
        return heatmaps.numpy(), tags.numpy()

    def infer(self, batch: np.ndarray) -> Maps:
        return infer_in_fixed_batches(checked_batch(batch, self.input_hw), self.batch_size, self._run)

    def close(self) -> None:
        if getattr(self, "_stream", None) is not None:
            self._stream.synchronize()
        self._context = None
        self._engine = None
        self._runtime = None
        self._buffers = {}
        self._stream = None

