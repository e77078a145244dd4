"""Creates onnxruntime sessions with threads, providers and optimization level decided once."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import onnxruntime as ort

from ..errors import ModelError

OPT_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}
PROVIDERS = ["CPUExecutionProvider"]


def _options(level: str, threads: int | None, optimized_path: Path | None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = OPT_LEVELS[level]
    so.log_severity_level = 4  # errors come back as exceptions; onnxruntime's own log only repeats them
    if threads is None:
        env = os.environ.get("QUANTDEBUG_THREADS")
        threads = int(env) if env else 0
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return so


def make_session(
    model: onnx.ModelProto | bytes | str | Path,
    *,
    level: str = "all",
    threads: int | None = None,
    optimized_path: Path | None = None,
    what: str = "model",
) -> ort.InferenceSession:
    """Create a CPU session; errors name ``what`` (the model's role) and onnxruntime's reason."""
    payload: bytes | str
    if isinstance(model, onnx.ModelProto):
        payload = model.SerializeToString()
    elif isinstance(model, Path):
        payload = str(model)
    else:
        payload = model
    try:
        return ort.InferenceSession(payload, _options(level, threads, optimized_path), providers=PROVIDERS)
    except Exception as exc:  # onnxruntime raises several unrelated exception types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"onnxruntime cannot load the {what}: {reason}") from exc


def optimize_to_file(model: onnx.ModelProto, path: Path, *, level: str = "extended", what: str = "model") -> None:
    """Let onnxruntime optimize ``model`` at ``level`` and save the result to ``path``."""
    make_session(model, level=level, threads=1, optimized_path=path, what=what)
