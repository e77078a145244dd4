"""One quantization of the float model and the units of what runs: recomputed when options change."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import numpy_helper

from quantdebug.pipeline.plan._units import Skipped, Unit, UnitMapper
from quantdebug.runtime import optimized_model

_PRECISION_OF = {
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.UINT16: "uint16",
}


@dataclasses.dataclass(frozen=True)
class RowInfo:
    """What a statistics row reports besides its metrics."""

    scale: float
    zero_point: int
    precision: str
    qmin: int
    qmax: int


@dataclasses.dataclass
class Plan:
    qdq: onnx.ModelProto  # the deployable quantized model
    optimized: onnx.ModelProto  # what onnxruntime runs for it, saved after its own fusions
    units: list[Unit]  # verified units, graph order
    skipped: list[Skipped]
    unverified: list[Unit]  # units whose nodes were meant to stay float
    info: dict[str, RowInfo]  # unit output -> parameters


def optimize_quantized(qdq: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's own fusions (level 'extended'), saved so that taps cannot change them."""
    return optimized_model(qdq, level="extended", what="quantized model")


def _row_info(qdq: onnx.ModelProto, tensor: str) -> RowInfo | None:
    init = {i.name: i for i in qdq.graph.initializer}
    for node in qdq.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] == tensor:
            scale = numpy_helper.to_array(init[node.input[1]]).reshape(-1)
            if len(node.input) > 2 and node.input[2] in init:
                zp_t = init[node.input[2]]
                zp = numpy_helper.to_array(zp_t).reshape(-1)
                dtype = zp_t.data_type
            else:
                zp, dtype = np.zeros(1, dtype=np.uint8), onnx.TensorProto.UINT8
            precision = _PRECISION_OF.get(dtype, onnx.TensorProto.DataType.Name(dtype).lower())
            info = np.iinfo(onnx.helper.tensor_dtype_to_np_dtype(dtype))
            return RowInfo(float(scale[0]), int(zp[0]), precision, int(info.min), int(info.max))
    return None


def build_plan(float_model: onnx.ModelProto, qdq: onnx.ModelProto, intended: set[str] | None) -> Plan:
    """Map what runs for ``qdq`` back to ``float_model``; keep units touching ``intended`` nodes."""
    optimized = optimize_quantized(qdq)
    mapper = UnitMapper(float_model, qdq, optimized)
    units, skipped = mapper.units()
    kept: list[Unit] = []
    unverified: list[Unit] = []
    info: dict[str, RowInfo] = {}
    seen_tensors: set[str] = set()
    ops = {n.name: n.op_type for n in float_model.graph.node}
    for unit in units:
        if intended is not None:
            chosen = [n for n in unit.twin if n in intended]
            if not chosen:
                unverified.append(unit)
                continue
            if chosen[0] != unit.node:  # e.g. a Relu quantized after a Conv left in float: name the Relu
                unit = dataclasses.replace(unit, node=chosen[0], op_type=ops[chosen[0]])
        row = _row_info(qdq, unit.qdq_tensor)
        if row is None:
            skipped.append(Skipped(unit.runtime_node, "no QuantizeLinear for its output in the quantized model"))
            continue
        if unit.float_tensor in seen_tensors:
            continue  # the same tensor quantized twice (duplicated DQ fan-out): one row is enough
        seen_tensors.add(unit.float_tensor)
        info[unit.output] = row
        kept.append(unit)
    return Plan(qdq, optimized, kept, skipped, unverified, info)
