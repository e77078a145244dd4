"""A patched debug-graph builder, to measure a proposed change without editing the library.

The experiments that were adopted (ReduceMax(Abs), Mul+ReduceSum for the sum of squares, reuse of
existing DequantizeLinear nodes) live in the library now. What is left:

  batch_rows=True  reshape each difference to [B, -1] with B read from the model input (not from the
                   tensor's own leading axis), and move the batch axis to the front first where a tensor
                   has it elsewhere ([3, B, ...] after a Transpose), so that models whose tensors do not
                   all lead with the batch axis (the PP-OCR recogniser) can still be run in batches

``install(batch_rows=True, batch_sample=feed)`` replaces the builder class that
``quantdebug.pipeline.run._debug_model.build_debug_model`` instantiates; ``uninstall()`` restores it. The
library's own ``build_debug_model`` runs, so the rest of the debug graph is exactly the library's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from quantdebug.pipeline.run import _debug_model as dm

_ORIGINAL = dm._Builder


def batch_axes(
    float_model: onnx.ModelProto, tensors: Sequence[str], sample: dict[str, np.ndarray]
) -> dict[str, tuple[int, int]]:
    """The axis of each float tensor that holds the batch, found by running batches of 1 and 2.

    0 when the leading axis grows with the batch (alone or merged with others, batch outermost), k when
    axis k grows and all axes before it keep their size, -1 when no single axis can be told.
    """
    import onnxruntime as ort

    from quantdebug.pipeline.calibrate._calibrate import augmented

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
    def __init__(self, optimized: onnx.ModelProto, float_model: onnx.ModelProto) -> None:
        super().__init__(optimized, float_model)
        sample = FLAGS["batch_sample"]
        tensors = [t for n in float_model.graph.node for t in n.output if t]
        self.axes = batch_axes(float_model, tensors, sample)
        self.rows_shape = dm.ROWS_INPUT
        self.batch_rows(next(iter(sample)))

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

    def stats(self, quantized: str, reference: str) -> tuple[list[str], str, str]:
        diff = self.node("Sub", [quantized, reference], "diff")
        src = diff
        # the reference is the float tensor's copy in the debug graph: __qd/<twin or f>/<float tensor>
        float_tensor = reference.split("/", 2)[2] if reference.startswith(dm.PREFIX + "/") else reference
        axis, rank = self.axes.get(float_tensor, (0, 0))
        if axis > 0:
            perm = [axis] + [i for i in range(rank) if i != axis]
            src = self.node("Transpose", [diff], "batch_first", perm=perm)
        rows = self.node("Reshape", [src, self.rows_shape], "rows")
        total = self.reduce("ReduceSum", rows, "sum")
        squares = self.reduce("ReduceSum", self.node("Mul", [rows, rows], "sq"), "sumsq")
        high = self.reduce("ReduceMax", rows, "max")
        low = self.reduce("ReduceMin", rows, "min")
        size = self.node("Shape", [rows], "shape")
        return [total, squares, high, low], diff, size


FLAGS: dict[str, Any] = {}


def install(**flags: Any) -> None:
    FLAGS.clear()
    FLAGS.update(flags)
    dm._Builder = _PatchedBuilder if flags.get("batch_rows") else _ORIGINAL  # type: ignore[misc]


def uninstall() -> None:
    FLAGS.clear()
    dm._Builder = _ORIGINAL  # type: ignore[misc]
