"""Whether an exported model really takes any batch size: a batch of 2 must equal two runs of 1."""

from __future__ import annotations

import numpy as np
import onnx

from ._verify import ConversionError, _compare, input_names


def _second_row(array: np.ndarray) -> np.ndarray:
    """Another valid row for the batch check: row 1 when there is one, else row 0 reversed on its last axis."""
    if array.shape[0] >= 2:
        return array[1:2]
    row = array[:1]
    return np.ascontiguousarray(np.flip(row, axis=-1)) if row.ndim >= 2 else row


def batch_problem(model: onnx.ModelProto, arrays: list[np.ndarray], rtol: float, atol: float) -> str | None:
    """None when a batch of 2 gives, row by row, what two batch-1 runs give; else why not."""
    from ..runtime import make_session

    if any(a.ndim == 0 or a.shape[0] < 1 for a in arrays):
        return "an input has no batch axis"
    names = input_names(model)
    out_names = [o.name for o in model.graph.output]
    first = [np.ascontiguousarray(a[:1]) for a in arrays]
    second = [_second_row(a) for a in arrays]
    pair = [np.concatenate([x, y], axis=0) for x, y in zip(first, second)]
    try:
        session = make_session(model, level="all", what="batch-check model")
        one = session.run(None, dict(zip(names, first)))
        two = session.run(None, dict(zip(names, second)))
        both = session.run(None, dict(zip(names, pair)))
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"a batch of 2 does not run ({reason[:160]})"
    for name, a, b, ab in zip(out_names, one, two, both):
        if ab.ndim == 0 or ab.shape[0] != 2 or a.shape[:1] != (1,):
            return f"output {name!r} has no batch axis first (shape {list(ab.shape)} for a batch of 2)"
        for row, ref in ((0, a), (1, b)):
            try:
                diff, _, tol = _compare(ref, ab[row : row + 1], name, rtol, atol)
            except ConversionError as exc:
                return str(exc)
            if diff > tol:
                return f"output {name!r} row {row} of a batch of 2 differs from a batch-1 run by {diff:.3g} > {tol:.3g}"
    return None
