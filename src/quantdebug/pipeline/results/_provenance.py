"""Where a result came from: versions, CPU instruction sets, config and fingerprints."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path
from typing import Any

import numpy
import onnx
import onnxruntime

from quantdebug.config import DebugOptions, QuantConfig
from quantdebug.pipeline.calibrate import FINGERPRINT_VERSION

_FLAGS_OF_INTEREST = (
    "avx",
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
    "fma",
    "sse4_1",
    "sse4_2",
    "f16c",
    "neon",
    "asimd",
    "asimddp",
    "i8mm",
    "sve",
)


def cpu_flags() -> list[str]:
    """Instruction-set flags that change onnxruntime's integer kernels (VNNI, AVX-512, dot products)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present = set(value.split())
            return [f for f in _FLAGS_OF_INTEREST if f in present]
    return []


def provenance(
    model_fingerprint: str,
    config: QuantConfig,
    options: DebugOptions,
    dataset_fingerprint: str,
    graph_name: str = "",
) -> dict[str, Any]:
    from quantdebug import __version__  # import cycle: quantdebug/__init__ imports the whole pipeline

    return {
        "quantdebug": __version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_flags": cpu_flags(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "graph_name": graph_name,
        "model_fingerprint": model_fingerprint,
        "model_fingerprint_version": FINGERPRINT_VERSION,
        "dataset_fingerprint": dataset_fingerprint,
        "quant_config": config.to_dict(),
        "debug_options": options.to_dict(),
    }
