"""Patched copies of quantdebug's debug-graph builder, to measure proposed changes without editing the library.

The experiments that were adopted (ReduceMax(Abs), reuse of existing DequantizeLinear nodes) live in
the library now. ``install(**flags)`` replaces ``quantdebug._debugger.build_debug_model`` (the name the debugger calls)
with ``build_debug_model`` below; ``uninstall()`` restores the original. The flags:

  sumsq="mul"      sum of squares as ReduceSum(Mul(d, d)) instead of ReduceSumSquare (onnxruntime has no
                   vectorised fast path for ReduceSumSquare; ReduceSum has one)
  batch_rows=True  reshape each difference to [B, -1] with B read from the model input (not from the
                   tensor's own leading axis), and move the batch axis to the front first where a tensor
                   has it elsewhere ([3, B, ...] after a Transpose), so that models whose tensors do not
                   all lead with the batch axis (the PP-OCR recogniser) can still be run in batches
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

import quantdebug._debugger as _debugger_mod
from quantdebug.graph import _debug_model as dm

_ORIGINAL = _debugger_mod.build_debug_model


def batch_axes(
    float_model: onnx.ModelProto, tensors: Sequence[str], sample: dict[str, np.ndarray]
) -> dict[str, tuple[int, int]]:
    """The axis of each float tensor that holds the batch, found by running batches of 1 and 2.

    0 when the leading axis grows with the batch (alone or merged with others, batch outermost), k when
    axis k grows and all axes before it keep their size, -1 when no single axis can be told.
    """
    import onnxruntime as ort

    from quantdebug.calibration._calibrate import augmented

    names = list(dict.fromkeys(tensors))
    so = ort.SessionOptions()
    so.log_severity_level = 4
    sess = ort.InferenceSession(
        augmented(float_model, names).SerializeToString(), so, providers=["CPUExecutionProvider"]
    )
    inputs = {i.name for i in sess.get_inputs()}
    names = [n for n in names if n not in inputs]
    one = dict(zip(names, sess.run(names, sample)))
    two = dict(zip(names, sess.run(names, {k: np.concatenate([v, v], axis=0) for k, v in sample.items()})))
    axes: dict[str, tuple[int, int]] = {k: (0, sample[k].ndim) for k in inputs}
    for name in names:
        a, b = one[name].shape, two[name].shape
        grown = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        if len(a) != len(b) or len(grown) != 1 or b[grown[0]] != 2 * a[grown[0]]:
            axes[name] = (-1, len(a))
        else:
            axes[name] = (grown[0], len(a))
    return axes


class _PatchedBuilder(dm._Builder):
    def __init__(self, optimized: onnx.ModelProto, float_model: onnx.ModelProto, flags: dict[str, Any]) -> None:
        super().__init__(optimized, float_model)
        self.flags = flags
        self.rows_shape = dm.ROWS_INPUT
        self.axes: dict[str, tuple[int, int]] = {}

    def batch_rows(self, first_input: str) -> None:
        """rows shape = [B, -1] when the debugger asks for batch rows ([0, -1]), else what it feeds."""
        shape = self.node("Shape", [first_input], "in_shape")
        b = self.node(
            "Slice",
            [shape, self.const("zero", np.array([0], np.int64)), self.const("one", np.array([1], np.int64))],
            "b",
        )
        rows = self.node("Concat", [b, self.const("minus1", np.array([-1], np.int64))], "b_rows", axis=0)
        first = self.node(
            "Slice",
            [dm.ROWS_INPUT, self.const("zero", np.array([0], np.int64)), self.const("one", np.array([1], np.int64))],
            "rows0",
        )
        is_batch = self.node("Equal", [first, self.const("zero", np.array([0], np.int64))], "is_batch")
        self.rows_shape = self.node("Where", [is_batch, rows, dm.ROWS_INPUT], "rows_shape")

    def stats(self, quantized: str, reference: str, float_tensor: str = "") -> tuple[str, str, str]:  # type: ignore[override]
        diff = self.node("Sub", [quantized, reference], "diff")
        src = diff
        axis, rank = self.axes.get(float_tensor, (0, 0))
        if self.flags.get("batch_rows") and axis > 0:
            perm = [axis] + [i for i in range(rank) if i != axis]
            src = self.node("Transpose", [diff], "batch_first", perm=perm)
        rows = self.node("Reshape", [src, self.rows_shape], "rows")
        total = self.reduce("ReduceSum", rows, "sum")
        if self.flags.get("sumsq") == "mul":
            squares = self.reduce("ReduceSum", self.node("Mul", [rows, rows], "sq"), "sumsq")
        else:
            squares = self.reduce("ReduceSumSquare", rows, "sumsq")
        peak = self.reduce("ReduceMax", self.node("Abs", [rows], "abs"), "maxabs")
        packed = self.node("Concat", [total, squares, peak], "stats", axis=1)
        size = self.node("Shape", [rows], "shape")
        return packed, diff, size


FLAGS: dict[str, Any] = {}


def build_debug_model(
    optimized: onnx.ModelProto,
    float_model: onnx.ModelProto,
    units: Sequence[Any],
    *,
    whole_model: bool = False,
    raw: bool = False,
) -> dm.DebugGraph:
    """quantdebug.graph._debug_model.build_debug_model, with the FLAGS changes (see the module doc)."""
    b = _PatchedBuilder(optimized, float_model, FLAGS)
    model_outputs = tuple(o.name for o in b.g.output)
    if FLAGS.get("batch_rows"):
        sample = FLAGS["batch_sample"]
        b.axes = batch_axes(float_model, [u.float_tensor for u in units], sample)
        b.batch_rows(next(iter(sample)))
    full: dict[str, str] = {}
    if whole_model:
        for vi in float_model.graph.input:
            full[vi.name] = vi.name
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
        packed, _diff, size = b.stats(quantized, reference, unit.float_tensor)
        stats_tensors.append(packed)
        sizes.append(size)
        raw_outputs.append((unit.output, quantized, reference))
    if stats_tensors:
        b.g.input.append(helper.make_tensor_value_info(dm.ROWS_INPUT, TensorProto.INT64, [2]))
        b.g.node.append(helper.make_node("Concat", stats_tensors, [dm.METRICS_OUTPUT], name=dm.METRICS_OUTPUT, axis=1))
        b.g.node.append(helper.make_node("Concat", sizes, [dm.SIZES_OUTPUT], name=dm.SIZES_OUTPUT, axis=0))
        b.g.output.append(helper.make_tensor_value_info(dm.METRICS_OUTPUT, TensorProto.FLOAT, None))
        b.g.output.append(helper.make_tensor_value_info(dm.SIZES_OUTPUT, TensorProto.INT64, None))
    if raw:
        present = {o.name for o in b.g.output}
        for trio in raw_outputs:
            for t in trio:
                if t not in present:
                    b.g.output.append(helper.make_empty_tensor_value_info(t))
                    present.add(t)
    del b.g.value_info[:]
    return dm.DebugGraph(b.model, tuple(units), model_outputs, tuple(raw_outputs))


def install(**flags: Any) -> None:
    FLAGS.clear()
    FLAGS.update(flags)
    _debugger_mod.build_debug_model = build_debug_model if flags else _ORIGINAL


def uninstall() -> None:
    FLAGS.clear()
    _debugger_mod.build_debug_model = _ORIGINAL
