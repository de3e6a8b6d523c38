"""`tagtrack export`: a checkpoint written as an ONNX file, checked by running it once in ONNX Runtime before it is
put in place, and optionally a TensorRT engine built from it (no engine cache: the file is the product).

The ONNX export itself is `model/export.py`'s; this module adds what the command needs from `realtime/`: the
ONNX Runtime check (realtime/engines.py), the TensorRT build (realtime/tensorrt_engine.py) and the output-path
safety (realtime/output_paths.py, through realtime/sinks.py). `export_checkpoint` and `ExportResult` are
importable from `realtime.engines` too. See docs/engines.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagtrack.model.config import check_input_size
from tagtrack.model.errors import UserFacingError
from tagtrack.model.export import INPUT_NAME, OUTPUT_NAMES
from tagtrack.realtime.engines import OnnxRuntimeEngine, check_input_limit
from tagtrack.realtime.tensorrt_engine import build_tensorrt_engine, tensorrt_usable


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
