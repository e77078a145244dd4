"""Whether the int16 lever is worth the user's evaluations, measured before any is spent on it.

16-bit activations repair a node whose int8 steps are too coarse for its range; they do nothing
when the range itself is the problem (a sentinel-like value that even 65536 steps cannot
resolve, a huge-range Add before a Log) or when the harm is in the 8-bit weights that the int16
lever keeps. One quantization with every ranked suspect at 16 bits, scored by output SQNR
against the float model on the sensitivity samples (no ``eval_fn`` call), tells the two apart:
if 16 bits on all of them barely move the output noise, no subset will do much, and the float
lever goes first. Quality is not monotone in the int16 set (FIX_RESULTS.md: all suspects in
int16 can score below the first 32), so this only orders the levers and never removes one; and
when int16 does go first it gets at most half of the remaining budget, so a budget cut never
leaves the float lever untried.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx

from quantdebug.errors import QuantDebugError
from quantdebug.fix._result import Candidate
from quantdebug.fix._switch import output_sqnr
from quantdebug.runtime import make_session

MIN_INT16_GAIN_DB = 6.0  # output noise power down 4x: less than that, 16 bits are not what is missing


def _outputs(model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[np.ndarray]:
    session = make_session(model, what="int16 evidence model")
    names = [o.name for o in session.get_outputs()]
    runs = [session.run(names, dict(f)) for f in feeds]
    return [np.concatenate([np.asarray(r[i]).reshape(-1) for r in runs]) for i in range(len(names))]


def int16_gain_db(
    float_model: onnx.ModelProto,
    quantize: Callable[[Candidate], onnx.ModelProto],
    start: Candidate,
    ranked: Sequence[str],
    feeds: Sequence[Mapping[str, np.ndarray]],
) -> float:
    """Output SQNR gain (dB) of ``start`` with every ``ranked`` node at 16 bits over ``start`` itself.

    ``-inf`` when the 16-bit model cannot be made or run: the lever then cannot be relied on first.
    """
    reference = _outputs(float_model, feeds)
    wide = start.merged(precision=tuple((n, "int16") for n in ranked))
    try:
        before = output_sqnr(reference, _outputs(quantize(start), feeds))
        after = output_sqnr(reference, _outputs(quantize(wide), feeds))
    except QuantDebugError:
        return -math.inf
    if math.isinf(before) and before > 0:
        return 0.0  # nothing left to gain (the start already equals the float model)
    return after - before


def lever_order(levers: Sequence[str], gain_db: float | None) -> tuple[str, ...]:
    """int16 before float when the evidence says 16 bits help (or there is no float lever to go first)."""
    order = ("int16", "float")
    if gain_db is not None and not gain_db >= MIN_INT16_GAIN_DB and "float" in levers:
        order = ("float", "int16")
    return tuple(lever for lever in order if lever in levers)


def first_lever_share(remaining: int, order: Sequence[str]) -> int | None:
    """Evaluations the first of two precision levers may spend galloping (None: no limit)."""
    if len(order) < 2:
        return None
    return max(1, math.ceil(remaining / 2))
