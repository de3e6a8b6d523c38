"""The inference engines by name: the one table `--engine`, `create_engine` and `auto` read.

Nothing heavy is imported here (no torch, no onnxruntime), so the command line can offer the names
and `tagtrack --help` stays fast. Each name's class is in `realtime/engines.py` (`ENGINE_CLASSES`,
same keys); adding an engine is one class there and one entry in each table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backend:
    name: str  # the --engine value
    description: str


# In `auto` order: the first that can run here wins, falling through to the next when it cannot
# start (docs/engines.md).
BACKENDS: dict[str, Backend] = {
    "trt": Backend("trt", "TensorRT (an NVIDIA GPU, the tensorrt extra)"),
    "ort": Backend("ort", "ONNX Runtime (CPU; CUDA with onnxruntime-gpu)"),
    "torch": Backend("torch", "PyTorch, eager"),
}
AUTO = "auto"
ENGINE_CHOICES = (AUTO, *BACKENDS)


def engine_help() -> str:
    """The --engine help text, from the table."""
    names = ", else ".join(backend.description for backend in BACKENDS.values())
    return f"inference backend (auto: the first that runs here of {names})"
