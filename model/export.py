"""ONNX export of a network (any family of model/networks.py): the hand-off to ONNX Runtime and TensorRT.

Shapes are static (batch, height, width fixed at export time): TensorRT builds its fastest
engines for fixed shapes, and the engine cache keys on them.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import torch

from tagtrack.model.errors import UserFacingError, import_extra
from tagtrack.model.files import write_atomically
from tagtrack.model.config import check_input_size

logger = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAMES = ("heatmaps", "tags")
DEFAULT_OPSET = 17  # TensorRT 8.6+ and every current ONNX Runtime read it
# onnx and onnxscript are the `export` extra: the core install runs cached ONNX files and torch only.
EXPORT_NEEDED_FOR = "exporting the model to ONNX (tagtrack export; the ONNX Runtime and TensorRT engines on first use)"


def export_onnx(
    model: torch.nn.Module,
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
    input_height, input_width = check_input_size((input_height, input_width), "ONNX input size",
                                                 type(model).input_multiple)
    if batch_size < 1:
        raise UserFacingError(f"ONNX batch size must be at least 1, got {batch_size}")
    device = next(model.parameters()).device
    images = torch.rand(batch_size, 3, input_height, input_width, device=device)

    def export_and_check(temporary: Path) -> None:
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

    was_training = model.training
    model.eval()
    try:
        write_atomically(path, export_and_check, "ONNX model")
    except UserFacingError:
        raise
    except Exception as error:
        os_error = _os_error_in(error)
        if os_error is not None:
            raise UserFacingError(f"cannot write ONNX model {path}: {os_error.strerror or os_error}") from error
        raise
    finally:
        model.train(was_training)
    # Debug only: callers may export to a temporary and name the final file themselves (export, the engine cache).
    logger.debug("exported ONNX model %s (batch %d, %dx%d, opset %d)", path, batch_size, input_height, input_width, opset)
    return path


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
