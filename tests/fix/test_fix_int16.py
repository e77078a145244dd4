"""The int16 lever goes first only where 16 bits help, and a budget cut never leaves the float lever untried."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
from tests import models
from tests.helpers import dataset, session

import quantdebug as qd
from quantdebug.fix._int16 import MIN_INT16_GAIN_DB, first_lever_share, lever_order


def _sqnr(model: onnx.ModelProto, candidate: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> float:
    """Pooled output SQNR in dB, computed here in numpy on the two models' outputs."""
    ref = np.concatenate([session(model).run(None, f)[0].ravel() for f in feeds]).astype(np.float64)
    got = np.concatenate([session(candidate).run(None, f)[0].ravel() for f in feeds]).astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((got - ref) ** 2)))


def _setup(
    rng: np.random.Generator, factor: float
) -> tuple[onnx.ModelProto, str, list[dict[str, np.ndarray]], qd.Calibration]:
    model, bad = models.wide_range_node(rng, factor=factor)
    feeds = [models.input_feed(model, rng) for _ in range(8)]
    return model, bad, feeds, qd.calibrate(model, dataset(feeds))


def _precision_steps(result: qd.FixResult) -> list[str]:
    return [t.step for t in result.trace if t.step.startswith(("int16:", "float:"))]


def test_float_is_tried_first_when_16_bits_cannot_help(rng: np.random.Generator, tmp_path: Path) -> None:
    # scale_up's range is 1e12 times its neighbours': 65536 steps cannot resolve the O(1) channels either
    model, bad, feeds, calibration = _setup(rng, 1e12)
    int8 = _sqnr(model, qd.quantize(model, calibration), feeds)
    as_int16 = _sqnr(model, qd.quantize(model, calibration, qd.QuantConfig(node_precision={bad: "int16"})), feeds)
    as_float = _sqnr(model, qd.quantize(model, calibration, qd.QuantConfig(node_precision={bad: "float"})), feeds)
    assert as_int16 < int8 + 3 and as_float > int8 + 10, "the builder's premise: only float repairs scale_up"
    trace = tmp_path / "trace.json"
    result = qd.fix(
        model,
        calibration=calibration,
        debug_dataset=dataset(feeds),
        target=as_float - 1.0,
        max_evals=5,  # the two baselines and three more: int16 first used to spend all three
        trace_path=trace,
    )
    assert result.met_target, result.summary()
    assert bad in result.float_nodes and not result.int16_nodes, result.summary()
    assert _precision_steps(result)[0].startswith("float:"), result.summary()
    saved = json.loads(trace.read_text())["int16_gain_db"]
    assert saved is not None and saved < MIN_INT16_GAIN_DB


def test_int16_still_goes_first_where_it_helps_under_a_small_budget(rng: np.random.Generator) -> None:
    model, bad, feeds, calibration = _setup(rng, 1e3)
    int8 = _sqnr(model, qd.quantize(model, calibration), feeds)
    as_int16 = _sqnr(model, qd.quantize(model, calibration, qd.QuantConfig(node_precision={bad: "int16"})), feeds)
    assert as_int16 > int8 + 10, "the builder's premise: 16 bits repair scale_up"
    result = qd.fix(model, calibration=calibration, debug_dataset=dataset(feeds), target=as_int16 - 1.0, max_evals=6)
    assert result.met_target and result.node_precision == {bad: "int16"}, result.summary()
    assert not result.float_nodes
    assert _precision_steps(result)[0].startswith("int16:"), result.summary()


def test_lever_order_and_the_budget_share() -> None:
    both = ("int16", "float")
    assert lever_order(both, None) == both  # no evidence: integer-only first
    assert lever_order(both, MIN_INT16_GAIN_DB) == both
    assert lever_order(both, MIN_INT16_GAIN_DB - 0.1) == ("float", "int16")
    assert lever_order(both, -math.inf) == ("float", "int16")
    assert lever_order(both, math.nan) == ("float", "int16")
    assert lever_order(("int16",), -math.inf) == ("int16",)  # alone, it is still tried
    assert lever_order(("float", "per_channel"), 30.0) == ("float",)
    for remaining in range(1, 40):
        share = first_lever_share(remaining, both)
        assert share is not None and 1 <= share <= max(1, remaining - remaining // 2)
        if remaining >= 2:
            assert remaining - share >= 1, "the second lever keeps at least one evaluation"
    assert first_lever_share(7, ("float",)) is None
