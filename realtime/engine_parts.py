"""What every inference engine shares (realtime/engines.py, realtime/tensorrt_engine.py): the model facts an engine
states, the device rule, the batch check, fixed-batch chunking, file digests and atomic writes.

A module of its own so that the TensorRT engine can use them while `realtime/engines.py` (the factory) imports
the TensorRT engine, without an import cycle. Everything here is importable from `realtime.engines` too.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tagtrack.model.errors import UserFacingError
from tagtrack.model.files import write_atomically
from tagtrack.model.schema import KeypointSchema

DEVICES = ("auto", "cpu", "cuda")

Maps = tuple[np.ndarray, np.ndarray]


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


def checked_batch(batch: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
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


def write_bytes_atomically(path: Path, data) -> None:
    """Readers never see half a file (model/files.py: write_atomically)."""
    write_atomically(path, lambda temporary: temporary.write_bytes(data))
