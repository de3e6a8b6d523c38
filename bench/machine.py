"""What the benchmarks ran on: CPU model, its SIMD extensions and the load, printed beside every timing."""

from __future__ import annotations

import os
import platform

# The extensions that decide how fast ONNX Runtime / OpenCV / numpy kernels run, in rising order.
SIMD_FLAGS = ("sse4_2", "avx", "fma", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
              "amx_tile", "amx_int8", "neon", "asimd", "sve")


def cpu_description() -> str:
    """One line: CPU model, usable cores, SIMD flags present, 1-minute load average (Linux /proc; elsewhere less)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model") and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    simd = " ".join(flag for flag in SIMD_FLAGS if flag in flags) or "unknown"
    try:
        load = f", load average {os.getloadavg()[0]:.1f}"
    except OSError:
        load = ""
    return f"CPU: {model}, {cores} usable cores, SIMD: {simd}{load}"
