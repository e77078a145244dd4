"""Build the debug model: the optimized quantized graph plus float twins and in-graph reductions.

Per sample and per unit only four numbers leave onnxruntime (sum, sum of squares, largest and
smallest value of ``dequant(quantized) - float``), packed into one output by one Concat, so memory
does not grow with the number of samples and no tensor is copied that no metric needs. The reductions run in float32
(a float64 cast of every tensor tripled the cost of a debug run); sums across samples are
accumulated in float64 outside.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantdebug.pipeline.plan import Unit

PREFIX = "__qd"
METRICS_OUTPUT = f"{PREFIX}/metrics"
SIZES_OUTPUT = f"{PREFIX}/sizes"
ROWS_INPUT = f"{PREFIX}/rows_shape"  # fed per run: [1, -1] for one sample, [0, -1] for a batch
STATS_PER_UNIT = 4  # sum, sum of squares, max and min of the difference


@dataclasses.dataclass(frozen=True)
class DebugGraph:
    model: onnx.ModelProto
    units: tuple[Unit, ...]
    model_outputs: tuple[str, ...]  # the quantized model's own outputs, for the fidelity check
    raw_outputs: tuple[tuple[str, str, str], ...]  # per unit: (quantized int, dequantized, float) tensor names


def _opset(model: onnx.ModelProto) -> int:
    return next((int(i.version) for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)


class _Builder:
    def __init__(self, optimized: onnx.ModelProto, float_model: onnx.ModelProto) -> None:
        self.model = onnx.ModelProto()
        self.model.CopyFrom(optimized)
        self.f = float_model
        self.g = self.model.graph
        self.opset = _opset(self.model)
        self.f_init = {i.name: i for i in float_model.graph.initializer}
        self.added_init: set[str] = set()
        self.f_nodes = {n.name: n for n in float_model.graph.node}
        self.counter = 0
        self.const_cache: dict[str, str] = {}
        self.dq_cache: dict[str, str] = {}
        # DequantizeLinear nodes the quantized graph already has, by (tensor, scale, zero point, axis):
        # a twin or a statistic reads their output instead of dequantizing the same tensor again
        self.existing_dq: dict[tuple[str, str, str, int | None], str] = {}
        for n in self.g.node:
            if n.op_type == "DequantizeLinear" and n.domain in ("", "ai.onnx") and len(n.output) == 1:
                axis = next((int(a.i) for a in n.attribute if a.name == "axis"), None)
                if all(a.name == "axis" for a in n.attribute):
                    key = (n.input[0], n.input[1], n.input[2] if len(n.input) > 2 else "", axis)
                    self.existing_dq.setdefault(key, n.output[0])

    def name(self, hint: str) -> str:
        self.counter += 1
        return f"{PREFIX}/{self.counter}/{hint}"

    def node(self, op: str, inputs: Sequence[str], hint: str, **attrs: Any) -> str:
        out = self.name(hint)
        self.g.node.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def const(self, key: str, array: np.ndarray) -> str:
        if key not in self.const_cache:
            name = f"{PREFIX}/const/{key}"
            self.g.initializer.append(numpy_helper.from_array(array, name))
            self.const_cache[key] = name
        return self.const_cache[key]

    def float_init(self, name: str) -> str:
        new = f"{PREFIX}/f/{name}"
        if new not in self.added_init:
            init = onnx.TensorProto()
            init.CopyFrom(self.f_init[name])
            init.name = new
            self.g.initializer.append(init)
            self.added_init.add(new)
        return new

    def dequantize(self, tensor: str, scale: str, zero_point: str, axis: int | None) -> str:
        """The dequantized ``tensor``, read through one Identity by every twin and statistic.

        onnxruntime gives each consumer of a DequantizeLinear its own copy of it, so a dequantized
        tensor read by the model, a statistic and a twin was dequantized three times on every run.
        Behind the Identity the debug graph's reads count as one consumer: one more DequantizeLinear
        at most, whether the model's own is reused or one is added. The debug session keeps the
        Identity (``debug_session``), an alias of its input that copies nothing.
        """
        if tensor in self.dq_cache:  # one dequantized copy per integer tensor, shared by every twin
            return self.dq_cache[tensor]
        existing = self.existing_dq.get((tensor, scale, zero_point, axis))
        if existing is None:
            inputs = [tensor, scale] + ([zero_point] if zero_point else [])
            attrs = {"axis": axis} if axis is not None else {}
            existing = self.node("DequantizeLinear", inputs, "dq", **attrs)
        self.dq_cache[tensor] = self.node("Identity", [existing], "dq_read")
        return self.dq_cache[tensor]

    def copy_float_nodes(self, names: Sequence[str], mapping: dict[str, str], tag: str) -> None:
        """Append copies of float-model nodes; ``mapping`` fixes inputs and receives new outputs."""
        for name in names:
            src = self.f_nodes[name]
            inputs = []
            for t in src.input:
                if not t:
                    inputs.append("")
                elif t in mapping:
                    inputs.append(mapping[t])
                elif t in self.f_init:
                    inputs.append(self.float_init(t))
                else:
                    inputs.append(t)  # a tensor shared with the quantized graph (e.g. a computed shape)
            outputs = []
            for t in src.output:
                if t:
                    mapping[t] = f"{PREFIX}/{tag}/{t}"
                outputs.append(mapping.get(t, ""))
            copy = onnx.NodeProto()
            copy.CopyFrom(src)
            copy.name = f"{PREFIX}/{tag}/{src.name}"
            del copy.input[:]
            copy.input.extend(inputs)
            del copy.output[:]
            copy.output.extend(outputs)
            self.g.node.append(copy)

    def reduce(self, op: str, tensor: str, hint: str) -> str:
        # ReduceSum took axes as an input from opset 13, the other reductions from opset 18
        if self.opset >= (13 if op == "ReduceSum" else 18):
            axes = self.const("axes1", np.array([1], dtype=np.int64))
            return self.node(op, [tensor, axes], hint, keepdims=1)
        return self.node(op, [tensor], hint, axes=[1], keepdims=1)

    def stats(self, quantized: str, reference: str) -> tuple[list[str], str, str]:
        """[B,1] sum, sum of squares, max and min of quantized - reference; the diff; the rows' shape.

        The largest magnitude is max(max, -min) outside: a ReduceMax and a ReduceMin read the
        difference once each where Abs wrote a copy of it for a ReduceMax to read (8% less time
        for the statistics). The sum of squares is ReduceSum(Mul) rather than ReduceSumSquare,
        which onnxruntime does not vectorise: a quarter of the time and a 10x smaller float32
        rounding error (2e-4 -> 1e-5 at 600k elements); a MatMul or Einsum dot product of the rows
        with themselves took three times as long (benchmarks/RESULTS.md, issue 18).
        """
        diff = self.node("Sub", [quantized, reference], "diff")
        rows = self.node("Reshape", [diff, ROWS_INPUT], "rows")
        total = self.reduce("ReduceSum", rows, "sum")
        squares = self.reduce("ReduceSum", self.node("Mul", [rows, rows], "sq"), "sumsq")
        high = self.reduce("ReduceMax", rows, "max")
        low = self.reduce("ReduceMin", rows, "min")
        size = self.node("Shape", [rows], "shape")
        return [total, squares, high, low], diff, size


def build_debug_model(
    optimized: onnx.ModelProto,
    float_model: onnx.ModelProto,
    units: Sequence[Unit],
    *,
    whole_model: bool = False,
    raw: bool = False,
) -> DebugGraph:
    """Add float twins (per-layer) or the whole float model (whole-model) and the statistics."""
    b = _Builder(optimized, float_model)
    model_outputs = tuple(o.name for o in b.g.output)
    full: dict[str, str] = {}
    if whole_model:
        for vi in float_model.graph.input:
            full[vi.name] = vi.name  # the same float inputs feed both paths
        b.copy_float_nodes([n.name for n in float_model.graph.node], full, "f")
    stats_tensors: list[str] = []
    sizes: list[str] = []
    raw_outputs: list[tuple[str, str, str]] = []
    for k, unit in enumerate(units):
        q = unit.qparams
        quantized = b.dequantize(unit.output, q.scale, q.zero_point, q.axis)
        if whole_model:
            reference = full[unit.float_tensor]
        else:
            mapping: dict[str, str] = {}
            for bd in unit.boundaries:
                if bd.qparams is not None:
                    mapping[bd.float_tensor] = b.dequantize(
                        bd.source, bd.qparams.scale, bd.qparams.zero_point, bd.qparams.axis
                    )
                else:
                    mapping[bd.float_tensor] = bd.source
            b.copy_float_nodes(unit.twin, mapping, f"t{k}")
            reference = mapping[unit.float_tensor]
        columns, _diff, size = b.stats(quantized, reference)
        stats_tensors.extend(columns)
        sizes.append(size)
        raw_outputs.append((unit.output, quantized, reference))
    if stats_tensors:
        b.g.input.append(helper.make_tensor_value_info(ROWS_INPUT, TensorProto.INT64, [2]))
        # one Concat of every unit's [B,1] columns: a Concat per unit cost a node each for no work
        b.g.node.append(helper.make_node("Concat", stats_tensors, [METRICS_OUTPUT], name=METRICS_OUTPUT, axis=1))
        b.g.node.append(helper.make_node("Concat", sizes, [SIZES_OUTPUT], name=SIZES_OUTPUT, axis=0))
        b.g.output.append(helper.make_tensor_value_info(METRICS_OUTPUT, TensorProto.FLOAT, None))
        b.g.output.append(helper.make_tensor_value_info(SIZES_OUTPUT, TensorProto.INT64, None))
    if raw:
        present = {o.name for o in b.g.output}
        for trio in raw_outputs:
            for t in trio:
                if t not in present:
                    b.g.output.append(helper.make_empty_tensor_value_info(t))
                    present.add(t)
    del b.g.value_info[:]  # stale shapes from the optimizer must not constrain the new nodes
    return DebugGraph(b.model, tuple(units), model_outputs, tuple(raw_outputs))
