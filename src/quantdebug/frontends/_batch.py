"""Whether an exported model really takes any batch size: a batch of 2 must equal two runs of 1."""

from __future__ import annotations

import re

import numpy as np
import onnx

from quantdebug.frontends._verify import ConversionError, _compare, cast_like, input_names
from quantdebug.runtime import make_session


def ort_reason(exc: BaseException) -> str:
    """onnxruntime's error in one short line: the failing node and its status message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    match = re.search(r"running (\w+) node\. Name:'([^']*)' Status Message: (.*)", text)
    if match:
        op, node, message = match.groups()
        if message.startswith("/"):  # drop the source location and C++ signature
            message = message.split(" was false. ", 1)[-1] if " was false. " in message else message.split(") ", 1)[-1]
        text = f"{op} node {node!r}: {message}"
    return text[:240]


def _second_row(array: np.ndarray) -> np.ndarray:
    """Another valid row for the batch check: row 1 when there is one, else row 0 reversed on its last axis."""
    if array.shape[0] >= 2:
        return array[1:2]
    row = array[:1]
    return np.ascontiguousarray(np.flip(row, axis=-1)) if row.ndim >= 2 else row


def batch_problem(model: onnx.ModelProto, feed: dict[str, np.ndarray], rtol: float, atol: float) -> str | None:
    """None when a batch of 2 gives, row by row, what two batch-1 runs give; else why not.

    ``feed`` holds an example value for every model input (extra entries are ignored).
    """

    names = input_names(model)
    missing = [n for n in names if n not in feed]
    if missing:
        return f"no example value for the inputs {missing}"
    arrays = cast_like([np.asarray(feed[n]) for n in names], model)
    if any(a.ndim == 0 or a.shape[0] < 1 for a in arrays):
        return "an input has no batch axis"
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
        return f"a batch of 2 does not run: {ort_reason(exc)}"
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
