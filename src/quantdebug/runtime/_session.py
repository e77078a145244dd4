"""Creates onnxruntime sessions with threads, providers and optimization level decided once."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx
import onnxruntime as ort

from quantdebug.config import OPT_LEVELS
from quantdebug.errors import ModelError
from quantdebug.support import external

# the level names are config's choices (written once there); this is only their onnxruntime value
_ORT_LEVELS = dict(
    zip(
        OPT_LEVELS,
        (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        ),
        strict=True,
    )
)
PROVIDERS = ["CPUExecutionProvider"]


def _options(level: str, threads: int | None, optimized_path: Path | None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = _ORT_LEVELS[level]
    so.log_severity_level = 4  # errors come back as exceptions; onnxruntime's own log only repeats them
    so.intra_op_num_threads = threads if threads is not None else 0  # 0: onnxruntime picks the cores
    so.inter_op_num_threads = 1
    # The memory pattern pre-plans one block for every intermediate of each input shape seen; on the
    # debug graph (twins and statistics beside the quantized model) that block was 100 MB of the
    # 475 MB peak of a MobileNetV3 debug run, for no measurable speed (issue 18, benchmarks/RESULTS.md)
    so.enable_mem_pattern = False
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
    disabled_optimizers: Sequence[str] = (),
) -> ort.InferenceSession:
    """Create a CPU session; errors name ``what`` (the model's role) and onnxruntime's reason.

    ``disabled_optimizers``: onnxruntime graph transformers to leave out (by their class name).
    """
    disabled = list(disabled_optimizers)
    payload: bytes | str
    if isinstance(model, bytes) and external.payload_has_references(model):
        model = onnx.load_from_string(model)
    if isinstance(model, onnx.ModelProto):
        payload = model.SerializeToString()
    elif isinstance(model, Path):
        payload = str(model)
    else:
        payload = model
    options = _options(level, threads, optimized_path)
    keep: list[object] = []
    try:
        if isinstance(model, onnx.ModelProto) and external.has_references(model):
            # weights over protobuf's limit: handed over as read-only memory maps, never serialized
            names, keep = external.session_initializers(model)
            if optimized_path is None:
                try:
                    return _shared_weights_session(model, names, keep, level, threads, disabled)
                except Exception:  # some optimizers read an initializer's data from the model itself
                    pass  # they find an empty file and fail, never a wrong value: copy the weights instead
            options.add_external_initializers(names, keep)  # copied into onnxruntime's own memory
            if optimized_path is not None:
                options.add_session_config_entry(
                    "session.optimized_model_external_initializers_file_name", optimized_path.name + ".data"
                )
                options.add_session_config_entry(
                    "session.optimized_model_external_initializers_min_size_in_bytes",
                    str(external.MIN_EXTERNAL_BYTES),
                )
        session = ort.InferenceSession(payload, options, providers=PROVIDERS, disabled_optimizers=disabled or None)
    except ModelError:
        raise
    except Exception as exc:  # onnxruntime raises several unrelated exception types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"onnxruntime cannot load the {what}: {reason}") from exc
    if keep:
        session._quantdebug_external = keep  # type: ignore[attr-defined]  # the maps must outlive the session
    return session


def _shared_weights_session(
    model: onnx.ModelProto,
    names: list[str],
    values: list[object],
    level: str,
    threads: int | None,
    disabled: list[str],
) -> ort.InferenceSession:
    """A session that runs on the memory maps themselves (``add_initializer``: no copy of the weights).

    onnxruntime only takes a pre-allocated initializer for one the model declares, and checks that
    its external-data file exists; so the model is loaded from a private folder where every
    reference points at an empty placeholder file. An optimizer that reads an initializer from the
    model instead finds no bytes there and fails the session (the caller then copies the weights).
    """
    options = _options(level, threads, None)
    for name, value in zip(names, values, strict=True):
        options.add_initializer(name, value)
    with tempfile.TemporaryDirectory(prefix="quantdebug-") as tmp:
        path = Path(tmp) / "model.onnx"
        external.write_placeholder_model(model, path)
        session = ort.InferenceSession(str(path), options, providers=PROVIDERS, disabled_optimizers=disabled or None)
    session._quantdebug_external = values  # type: ignore[attr-defined]  # the maps must outlive the session
    return session


def optimize_to_file(model: onnx.ModelProto, path: Path, *, level: str = "extended", what: str = "model") -> None:
    """Let onnxruntime optimize ``model`` at ``level`` and save the result to ``path``."""
    make_session(model, level=level, threads=1, optimized_path=path, what=what)


def optimized_model(model: onnx.ModelProto, *, level: str = "extended", what: str = "model") -> onnx.ModelProto:
    """``model`` as onnxruntime optimizes it at ``level`` (its own fusions and constant folding).

    A model whose weights are external-data references (over protobuf's limit) gets its large
    optimized tensors written to a folder of quantdebug's workspace and referenced from there.
    """
    if external.has_references(model):
        folder = external.new_folder()
        path = folder / "optimized.onnx"
        optimize_to_file(model, path, level=level, what=what)
        optimized = onnx.load(str(path), load_external_data=False)
        external.adopt(optimized, folder)
        path.unlink()
        external.share_unchanged(optimized, model, folder)
        return optimized
    with tempfile.TemporaryDirectory(prefix="quantdebug-") as tmp:
        path = Path(tmp) / "optimized.onnx"
        optimize_to_file(model, path, level=level, what=what)
        return onnx.load(str(path))
