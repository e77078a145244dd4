"""Run onnxruntime's own static QDQ quantizer on ranges that quantdebug calibrated.

The ranges reach onnxruntime through its calibration cache (a JSON of per-tensor ranges), so
onnxruntime never runs its own calibrators and everything happens in a private temp folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

from quantdebug.config import QuantConfig
from quantdebug.errors import ModelError
from quantdebug.pipeline.plan._ort_index import IndexedRun, indexed_quantizer
from quantdebug.support import external, write_text

QUANT_TYPES = {
    "int8": QuantType.QInt8,
    "uint8": QuantType.QUInt8,
    "int16": QuantType.QInt16,
    "uint16": QuantType.QUInt16,
}


def default_op_types() -> tuple[str, ...]:
    """onnxruntime's own default set of op types that static quantization handles."""
    return tuple(sorted(set(QLinearOpsRegistry) | set(QDQRegistry)))


@dataclasses.dataclass(frozen=True)
class PlannedPrecision:
    """The resolved precision of every node of the pre-processed model for one quantization."""

    exclude: tuple[str, ...]  # left in float
    int16: tuple[str, ...]  # raised to 16-bit activations
    per_channel: tuple[str, ...] = ()


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    # onnxruntime's quantizer logs advice through the root logger on every call
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _tensors_data(ranges: Mapping[str, tuple[float, float]]) -> TensorsData:
    data = {
        name: TensorData(lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32))
        for name, (lo, hi) in ranges.items()
    }
    return TensorsData(CalibrationMethod.MinMax, data)


# the last ranges written as onnxruntime's calibration cache, and the file's text: fix's candidates
# quantize with the same ranges, and onnxruntime's JSON writer costs more than the rest of the file work
_last_ranges: tuple[tuple[tuple[str, tuple[float, float]], ...], str] | None = None


def _write_ranges(ranges: Mapping[str, tuple[float, float]], path: Path) -> None:
    global _last_ranges
    key = tuple(ranges.items())
    last = _last_ranges
    if last is not None and last[0] == key:
        write_text(path, last[1])
        return
    save_tensors_data(_tensors_data(ranges), path)
    _last_ranges = (key, path.read_text())


@contextlib.contextmanager
def _plain() -> Iterator[IndexedRun]:
    yield IndexedRun(active=False)


def _int16_overrides(
    model: onnx.ModelProto, nodes: tuple[str, ...], config: QuantConfig, floats: frozenset[str] = frozenset()
) -> dict[str, list[dict[str, Any]]]:
    """TensorQuantOverrides that run ``nodes`` on 16-bit activations, with conversions at the seams.

    A 16-bit node's outputs are produced in 16 bits and converted back for 8-bit consumers; its
    activation inputs from 8-bit producers are converted up for it. So the 16-bit region is
    exactly the chosen nodes, not everything downstream of them. Constant operands of element-wise
    ops (a Mul's scale vector) get 16 bits too: an 8-bit copy of them is often what breaks the
    node; Conv, MatMul and Gemm keep 8-bit weights (TFLite's 16x8 scheme).
    """
    if not nodes:
        return {}
    signed = config.activation_type in ("int8", "int16")
    wide = QuantType.QInt16 if signed else QuantType.QUInt16
    narrow = QUANT_TYPES[config.activation_type]
    chosen = set(nodes)
    overrides: dict[str, list[dict[str, Any]]] = {}
    init = {i.name for i in model.graph.initializer}
    init_types = {i.name: i.data_type for i in model.graph.initializer}
    producer = {o: n.name for n in model.graph.node for o in n.output if o}
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for t in node.input:
            if t and t not in init:
                consumers.setdefault(t, []).append(node.name)
    tensors = {t for n in model.graph.node if n.name in chosen for t in [*n.input, *n.output] if t and t not in init}
    for node in model.graph.node:
        if node.name in chosen and node.op_type not in _WEIGHT_AXIS:
            for t in node.input:
                if t in init and init_types.get(t) == onnx.TensorProto.FLOAT:
                    overrides[t] = [{"quant_type": wide}]
    for tensor in sorted(tensors):
        wide_producer = producer.get(tensor) in chosen
        users = consumers.get(tensor, [])
        # float consumers read whatever is produced; only quantized ones need a converted copy
        other = {u for u in users if (u in chosen) != wide_producer and u not in floats}
        entry: dict[str, Any] = {"quant_type": wide if wide_producer else narrow}
        if other:
            entry["convert"] = {"quant_type": narrow if wide_producer else wide, "recv_nodes": other}
        if entry["quant_type"] != narrow or "convert" in entry:
            overrides[tensor] = [entry]
    return overrides


# Which input of a node holds its weight, and the per-channel axis onnxruntime uses for it.
_WEIGHT_AXIS = {"Conv": (1, 0), "ConvTranspose": (1, 1), "MatMul": (1, 1), "Gemm": (1, 0)}


def _per_channel_overrides(model: onnx.ModelProto, nodes: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """TensorQuantOverrides that quantize the weights of ``nodes`` per output channel."""
    init = {i.name: i for i in model.graph.initializer}
    chosen = set(nodes)
    overrides: dict[str, list[dict[str, Any]]] = {}
    for node in model.graph.node:
        if node.name not in chosen or node.op_type not in _WEIGHT_AXIS:
            continue
        index, axis = _WEIGHT_AXIS[node.op_type]
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            axis = 0 if trans_b else 1
        if len(node.input) > index and node.input[index] in init and len(init[node.input[index]].dims) >= 2:
            overrides[node.input[index]] = [{"axis": axis}]
    return overrides


def tensor_overrides(model: onnx.ModelProto, config: QuantConfig, plan: PlannedPrecision) -> dict[str, dict[str, Any]]:
    """One TensorQuantOverrides entry per tensor for ``plan``: its 16-bit nodes and per-channel weights, merged.

    The quantizer and the exported onnxruntime settings both take their overrides from here, so
    the two cannot merge them by different rules.
    """
    op_types = set(config.op_types_to_quantize if config.op_types_to_quantize is not None else default_op_types())
    floats = frozenset(plan.exclude) | {n.name for n in model.graph.node if n.op_type not in op_types}
    per_channel = () if config.per_channel else tuple(config.per_channel_nodes)
    merged: dict[str, dict[str, Any]] = {}
    for source in (_int16_overrides(model, plan.int16, config, floats), _per_channel_overrides(model, per_channel)):
        for tensor, entries in source.items():
            merged.setdefault(tensor, {}).update(entries[0])
    return merged


def quantize_with_ranges(
    model: onnx.ModelProto,
    ranges: Mapping[str, tuple[float, float]],
    config: QuantConfig,
    plan: PlannedPrecision,
    *,
    indexed: bool = True,
) -> onnx.ModelProto:
    """Quantize the pre-processed ``model`` with the given per-tensor ranges; return the QDQ model.

    ``indexed`` lets onnxruntime's quantizer answer its scans from indexes and its weight
    quantization and shape inference from memos (``indexed_quantizer``): the same model, built in a
    fraction of the time on large graphs; False runs it untouched.
    """
    op_types = (
        list(config.op_types_to_quantize) if config.op_types_to_quantize is not None else list(default_op_types())
    )
    extra: dict[str, Any] = {
        "ActivationSymmetric": config.symmetric_activations,
    }
    if config.symmetric_weights is not None:
        extra["WeightSymmetric"] = config.symmetric_weights
    quantized_ops = set(op_types)
    overrides = {tensor: [entry] for tensor, entry in tensor_overrides(model, config, plan).items()}
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    extra.update(config.extra_options)
    work = onnx.ModelProto()
    work.CopyFrom(model)
    meta = work.metadata_props.add()
    meta.key, meta.value = "onnx.quant.pre_process", "onnxruntime.quant"
    big = external.has_references(work)
    with tempfile.TemporaryDirectory(prefix="quantdebug-") as tmp:
        cache = Path(tmp) / "ranges.json"
        # a model over protobuf's limit goes to the quantizer as a file with its weights beside it,
        # and its quantized weights stay in a data file of quantdebug's workspace
        folder = external.new_folder() if big else Path(tmp)
        out = folder / "quantized.onnx"
        source: onnx.ModelProto | str = work
        hidden: list[str] = []
        if big:
            needed = {t for n in work.graph.node if n.op_type in quantized_ops for t in n.input}
            path, hidden = external.materialize(work, folder, "float.onnx", needed)
            source = str(path)
        _write_ranges(ranges, cache)
        try:
            # work is model's graph copied; model is never changed in place, so the shape inference
            # onnxruntime runs on work is kept between calls (the external-data path loads from a file)
            indexes = (
                indexed_quantizer(capture_to=None if big else str(out), copied_graph=None if big else (work, model))
                if indexed
                else _plain()
            )
            with _quiet_root_logger(), indexes as run:
                quantize_static(
                    source,
                    str(out),
                    None,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=op_types,
                    per_channel=config.per_channel,
                    reduce_range=config.reduce_range,
                    activation_type=QUANT_TYPES[config.activation_type],
                    weight_type=QUANT_TYPES[config.weight_type],
                    nodes_to_exclude=list(plan.exclude),
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options=extra,
                    calibration_cache_path=str(cache),
                    use_external_data_format=big,
                )
        except Exception as exc:
            raise ModelError(f"onnxruntime's quantizer failed on this model: {exc}") from exc
        finally:
            if big:
                for leftover in folder.glob("float.onnx*"):
                    leftover.unlink()
        if not big:
            # the indexed run keeps the model onnxruntime would write and this would read straight back
            return run.model if run.model is not None else onnx.load(str(out))
        quantized = onnx.load(str(out), load_external_data=False)
        external.adopt(quantized, folder)
        external.restore(quantized, work, hidden)
        out.unlink()
    return quantized
