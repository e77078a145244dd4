"""The fix ranking reads both verify modes' per-layer statistics as well as the switchable graph."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from tests import models
from tests.helpers import dataset

import quantdebug as qd
from quantdebug.fix import _ranking as fix_ranking
from quantdebug.fix._evidence import ROUNDING, layer_evidence


def _chain(rng: np.random.Generator, factor: float) -> onnx.ModelProto:
    """16 blocks of 1x1 conv + relu, with a moderate culprit after block 13, then a head.

    The culprit is a Mul by c = [factor, 1, ..., 1] per channel undone by a Div, as in
    ``models.wide_range_node`` but mild: channels 1..7 lose about log2(factor) bits at its output.
    With factor 20 its group is not among those the switchable graph refines node by node, and
    the accumulated error jumps at it (whole-model rmse/scale about 4x its input's).
    """
    g = models._GraphBuilder(rng, "chain", 17)
    x = g.input("input", ["N", 8, 8, 8])
    for i in range(16):
        x = g.node("Relu", [g.conv(x, f"conv{i}", 8, 8, k=1)], f"relu{i}")
        if i == 13:
            c = np.ones((1, 8, 1, 1), np.float32)
            c[0, 0] = factor
            x = g.node("Mul", [x, g.const("culprit.factor", c)], "culprit")
            x = g.node("Div", [x, g.const("undo.divisor", c.copy())], "undo")
    return g.build([g.head(x, 8, 10)])


def _debugger_ratios(
    model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], mode: str, debug: int | None = None
) -> dict[str, float]:
    """rmse/scale per node from the debugger, calibrated on ``feeds``, debugging the first ``debug``."""
    options = qd.DebugOptions(verify_mode=mode, batch_size=1, progress=False)  # type: ignore[arg-type]
    debugger = qd.QuantizationDebugger(
        model, dataset(feeds), debug_dataset=dataset(feeds[:debug]), debug_options=options
    )
    debugger.run()
    return {r.node_name: r.rmse_over_scale for r in debugger._require_rows()}


def test_evidence_is_the_debuggers_rmse_over_scale_in_both_verify_modes(rng: np.random.Generator) -> None:
    model, bad = models.wide_range_node(rng)
    feeds = [models.input_feed(model, rng) for _ in range(4)]
    per_layer = _debugger_ratios(model, feeds, "per_layer")
    whole = _debugger_ratios(model, feeds, "whole_model")
    debugger = qd.QuantizationDebugger(model, dataset(feeds))
    assert debugger._plan is not None
    evidence = layer_evidence(debugger.float_model, debugger._plan, feeds)
    assert set(evidence) == set(per_layer) == set(whole)
    for node, ev in evidence.items():
        assert ev.per_layer == pytest.approx(per_layer[node], rel=1e-6), node
        assert ev.whole_model == pytest.approx(whole[node], rel=1e-6), node
    # conv2 reads the wide-range node through the Div, which is not verified: the walk goes through it
    assert evidence["conv2"].inputs_whole_model == pytest.approx(whole[bad], rel=1e-6)
    assert evidence["conv2"].growth == pytest.approx(whole["conv2"] / max(whole[bad], ROUNDING), rel=1e-6)
    # the wide node's own steps are so coarse that its error in steps is small; the jump shows at conv2
    assert evidence["conv2"].growth > 2.0


def _ranking(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, object]]:
    # an unreachable target and two evaluations: the search ranks, then its budget ends
    result = qd.fix(model, dataset(feeds), levers=("float",), max_evals=2, target=1e3)
    assert not result.met_target
    return result.ranking


def test_statistics_order_the_nodes_of_a_group_the_switchable_graph_did_not_measure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(0)  # a fixed model: which groups are noisiest depends on the weights
    model = _chain(rng, 20.0)
    feeds = [{"input": rng.normal(0, 1, (1, 8, 8, 8)).astype(np.float32)} for _ in range(8)]
    ranking = _ranking(model, feeds)
    names = [str(r["node_name"]) for r in ranking]
    # Which groups the switchable graph refines depends on their noise shares, which the CPU's int8
    # kernels move a little (AVX-512 VNNI rounds differently): the rule is checked on every group
    # left unrefined, and the culprit (score ~4x its neighbours') is checked wherever it lands.
    groups: dict[object, list[dict[str, object]]] = {}
    for r in ranking:
        groups.setdefault(r["group_noise_share"], []).append(r)
    unrefined = [g for g in groups.values() if all(r["noise_share"] is None for r in g)]
    assert unrefined, "some group is ordered by the statistics alone"
    for group in unrefined:
        scores = [float(r["statistics_score"]) for r in group]  # type: ignore[arg-type]
        assert scores == sorted(scores, reverse=True)
    culprit_group = groups[ranking[names.index("culprit")]["group_noise_share"]]
    best = max(culprit_group, key=lambda r: float(r["statistics_score"]))  # type: ignore[arg-type]
    assert best["node_name"] == "culprit"
    if culprit_group in unrefined:
        assert culprit_group[0]["node_name"] == "culprit"

    monkeypatch.setattr(fix_ranking, "layer_evidence", lambda *args: {})  # without statistics: graph order
    plain = [str(r["node_name"]) for r in _ranking(model, feeds)]
    graph_order = [n.name for n in model.graph.node]
    for group in unrefined:
        members = [str(r["node_name"]) for r in group]
        assert [n for n in plain if n in members] == sorted(members, key=graph_order.index)
    if culprit_group in unrefined:
        assert plain.index("culprit") > names.index("culprit")


def test_ranking_rows_carry_both_verify_modes_and_flagged_nodes_are_measured() -> None:
    rng = np.random.default_rng(1)
    model = _chain(rng, 20.0)
    feeds = [{"input": rng.normal(0, 1, (1, 8, 8, 8)).astype(np.float32)} for _ in range(8)]
    ranking = _ranking(model, feeds)
    per_layer = _debugger_ratios(model, feeds, "per_layer", debug=4)  # fix ranks on 4 samples
    whole = _debugger_ratios(model, feeds, "whole_model", debug=4)
    assert [r["rank"] for r in ranking] == list(range(1, len(ranking) + 1))
    by_node = {str(r["node_name"]): r for r in ranking}
    debugger = qd.QuantizationDebugger(model, dataset(feeds))
    assert debugger._plan is not None
    evidence = layer_evidence(debugger.float_model, debugger._plan, feeds[:4])
    for node, r in by_node.items():
        assert r["per_layer_rmse/scale"] == pytest.approx(per_layer[node], rel=1e-6)
        assert r["whole_model_rmse/scale"] == pytest.approx(whole[node], rel=1e-6)
        assert r["statistics_score"] == pytest.approx(evidence[node].score)
    # unmeasured values are None, not NaN: the rows go into statistics files, which are strict JSON
    json.dumps(ranking, allow_nan=False)
    assert {r["noise_share"] is None for r in ranking} == {True, False}


def test_fix_goes_on_when_the_statistics_cannot_be_measured(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantdebug.errors import ModelError

    def broken(*args: object) -> object:
        raise ModelError("onnxruntime refused the debug model (simulated)")

    monkeypatch.setattr(fix_ranking, "layer_evidence", broken)
    model, _ = models.wide_range_node(rng)
    feeds = [models.input_feed(model, rng) for _ in range(8)]
    with pytest.warns(UserWarning, match="without the per-layer statistics: onnxruntime refused"):
        result = qd.fix(model, dataset(feeds), levers=("float",), target=1e3, max_evals=4)
    assert result.ranking and all(r["per_layer_rmse/scale"] is None for r in result.ranking)
