"""ONNX export of a HourglassNet: the hand-off to ONNX Runtime and TensorRT.

Shapes are static (batch, height, width fixed at export time): TensorRT builds its fastest
engines for fixed shapes, and the engine cache keys on them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

import torch

from tagtrack.model.errors import UserFacingError, import_extra
from tagtrack.model.hourglass import INPUT_MULTIPLE, HourglassNet

logger = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAMES = ("heatmaps", "tags")
DEFAULT_OPSET = 17  # TensorRT 8.6+ and every current ONNX Runtime read it
# onnx and onnxscript are the `export` extra: the core install runs cached ONNX files and torch only.
EXPORT_NEEDED_FOR = "exporting the model to ONNX (tagtrack export; the ONNX Runtime and TensorRT engines on first use)"


def export_onnx(
    model: HourglassNet,
    path: str | Path,
    input_height: int,
    input_width: int,
    batch_size: int = 1,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export `model` (in eval mode) to `path` as one self-contained ONNX file, checked with `onnx.checker`.

    Input `images` float32 [batch,3,H,W] RGB in [0,1]; outputs `heatmaps` [batch,K,H/4,W/4] and
    `tags` [batch,K,L,H/4,W/4]. The file is written under a temporary name and renamed, so a failed
    export never leaves a half-written model at `path`.
    """
    onnx = import_extra("onnx", "export", EXPORT_NEEDED_FOR)
    import_extra("onnxscript", "export", EXPORT_NEEDED_FOR)  # torch's ONNX exporter runs on it
    path = Path(path)
    if input_height <= 0 or input_width <= 0 or input_height % INPUT_MULTIPLE or input_width % INPUT_MULTIPLE:
        raise UserFacingError(f"ONNX input size {input_height}x{input_width} must be positive multiples of {INPUT_MULTIPLE}")
    if batch_size < 1:
        raise UserFacingError(f"ONNX batch size must be at least 1, got {batch_size}")
    temporary = _temporary_beside(path)
    device = next(model.parameters()).device
    images = torch.rand(batch_size, 3, input_height, input_width, device=device)
    was_training = model.training
    model.eval()
    try:
        with _quiet_exporter(), torch.no_grad():
            torch.onnx.export(
                model,
                (images,),
                str(temporary),
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                opset_version=opset,
                dynamo=True,
                external_data=False,  # one file: weights inside (the models are far below the 2 GB limit)
                verbose=False,
            )
        onnx.checker.check_model(str(temporary), full_check=True)
        os.replace(temporary, path)
    except Exception as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        os_error = _os_error_in(error)
        if os_error is not None:
            raise UserFacingError(f"cannot write ONNX model {path}: {os_error.strerror or os_error}") from error
        raise
    finally:
        model.train(was_training)
    logger.info("exported ONNX model %s (batch %d, %dx%d, opset %d)", path, batch_size, input_height, input_width, opset)
    return path


def _temporary_beside(path: Path) -> Path:
    """A writable temporary file next to `path` (same file system, so the final rename is atomic)."""
    if path.is_dir():
        raise UserFacingError(f"cannot write ONNX model {path}: it is a directory")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.touch()
    except OSError as error:
        raise UserFacingError(f"cannot write ONNX model {path}: {error.strerror or error}") from error
    return temporary


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError (full disk, permissions) behind an exporter error, if that is what went wrong."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs progress and warns about optional packages (torchvision); keep the CLI readable."""
    # onnxscript warns that it converts to opset 17 through the onnx C API (that path is tested), and
    # onnx_ir logs every initializer it de-duplicates.
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    previous = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for each, level in zip(loggers, previous):
            each.setLevel(level)
