"""debugger.culprits(): the layer that breaks the model ranks first by impact, for the right reason.

The four failure shapes of issue 15 (tests/fix/culprit_shapes.py) each have one known culprit that
the tutorial's rmse/scale ranks lower; impact agrees with each layer quantized alone (and left
alone in float) in its own onnxruntime session (tests/fix/culprit_reference.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from tests.fix.culprit_reference import independent_impacts
from tests.fix.culprit_shapes import SHAPES, Shape

import quantdebug as qd
from quantdebug.fix import REASONS

SAMPLES = 4


def _debugger(name: str, rng: np.random.Generator) -> tuple[qd.QuantizationDebugger, Shape]:
    shape = SHAPES[name](rng)
    model, data, _, _ = shape
    debugger = qd.QuantizationDebugger(model, lambda: iter(data), debug_options=qd.DebugOptions(progress=False))
    return debugger, shape


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_the_culprit_ranks_first_by_impact_for_its_reason_while_rmse_over_scale_ranks_it_lower(
    name: str, rng: np.random.Generator
) -> None:
    debugger, (_, _, culprit, reason) = _debugger(name, rng)
    debugger.run()
    frame = debugger.culprits(samples=SAMPLES)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["impact"]) == sorted(frame["impact"], reverse=True)
    top = frame.iloc[0]
    assert top["node_name"] == culprit, frame[["node_name", "impact", "reason"]]
    assert top["reason"] == reason, top["detail"]
    assert set(frame["reason"]) <= set(REASONS)
    stats = debugger.layer_statistics_frame()
    by_ratio = list(stats.sort_values("rmse/scale", ascending=False)["node_name"])
    assert by_ratio.index(culprit) > 0, stats[["node_name", "rmse/scale"]]
    assert frame.attrs["suggested_denylist"][0] == culprit
    # the suggestion is the fewest top culprits that take most of the noise: measured, not assumed
    assert frame.attrs["denylist_removes"] >= 0.9 or len(frame.attrs["suggested_denylist"]) == len(
        frame[frame["impact"] >= 0.01]
    )


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_impact_equals_each_layer_quantized_alone_in_its_own_session(name: str, rng: np.random.Generator) -> None:
    debugger, (model, data, _, _) = _debugger(name, rng)
    frame = debugger.culprits(samples=SAMPLES)
    assert debugger.calibration is not None
    expected = independent_impacts(
        model,
        debugger.calibration,
        debugger.float_model,
        list(frame["node_name"]),
        data[:SAMPLES],
    )
    got = dict(zip(frame["node_name"], frame["impact"]))
    for node, value in expected.items():
        assert got[node] == pytest.approx(value, abs=1e-6), node


def test_the_suggested_change_is_code_that_builds_the_lever(rng: np.random.Generator) -> None:
    debugger, (model, data, _, _) = _debugger("softmax_mask", rng)
    frame = debugger.culprits(samples=2)
    namespace = {"QuantConfig": qd.QuantConfig, "DebugOptions": qd.DebugOptions}
    for change in frame["suggested_change"]:
        built = eval(change, namespace)  # the cell is meant to be pasted: it must be valid code
        assert isinstance(built, (qd.QuantConfig, qd.DebugOptions))
    clamp = eval(frame.iloc[0]["suggested_change"], namespace)
    ((tensor, lo, hi),) = clamp.tensor_clamps
    assert tensor == frame.iloc[0]["tensor_name"] and -1e30 < lo < hi < 1e30
    # applied, the clamp repairs the model: the culprit's impact is gone
    fixed = qd.QuantizationDebugger(
        model,
        lambda: iter(data),
        quant_config=clamp,
        debug_options=qd.DebugOptions(progress=False),
    )
    after = fixed.culprits(samples=2)
    assert after.attrs["all_quantized_sqnr_db"] > frame.attrs["all_quantized_sqnr_db"] + 10


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_the_suggested_denylist_repairs_the_deployed_model(name: str, rng: np.random.Generator) -> None:
    """Applied as a real denylist, in a real onnxruntime session with its int8 kernels, the suggestion
    removes most of the output noise, as the switchable graph measured."""
    debugger, (model, data, _, _) = _debugger(name, rng)
    frame = debugger.culprits(samples=SAMPLES)
    float_session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = [float_session.run(None, d)[0].astype(np.float64) for d in data]

    def noise(quantized: onnx.ModelProto) -> float:
        session = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
        got = [session.run(None, d)[0].astype(np.float64) for d in data]
        return float(sum(np.sum((g - r) ** 2) for g, r in zip(got, reference)))

    before = noise(debugger.get_nondebug_quantized_model())
    debugger.options = qd.DebugOptions(progress=False, denylisted_nodes=frame.attrs["suggested_denylist"])
    after = noise(debugger.get_nondebug_quantized_model())
    assert after < 0.5 * before or (not np.isfinite(before) and np.isfinite(after)), (before, after)


def test_impact_fills_the_statistics_only_when_asked(rng: np.random.Generator) -> None:
    debugger, _ = _debugger("depthwise_spread", rng)
    debugger.run()
    assert debugger.layer_statistics_frame()["impact"].isna().all()
    assert all(math.isnan(r.impact) for r in debugger.layer_rows)
    debugger.options = qd.DebugOptions(progress=False, impact=True)
    debugger.run()
    stats = debugger.layer_statistics_frame()
    frame = debugger.culprits(samples=4)
    assert dict(zip(stats["node_name"], stats["impact"])) == pytest.approx(
        dict(zip(frame["node_name"], frame["impact"]))
    )
    header = debugger.layer_statistics_csv().splitlines()[0].split(",")
    assert header[-2:] == ["node_name", "impact"]


def test_impact_survives_save_and_load(rng: np.random.Generator, tmp_path: Path) -> None:
    debugger, (_, _, culprit, _) = _debugger("softmax_mask", rng)
    debugger.options = qd.DebugOptions(progress=False, impact=True)
    debugger.run()
    saved = debugger.statistics()
    saved.save(tmp_path)
    loaded = qd.Statistics.load(tmp_path)
    assert [r.impact for r in loaded.layers] == pytest.approx([r.impact for r in saved.layers])
    assert loaded.extras["culprits"]["rows"][0]["node_name"] == culprit
    csv = pd.read_csv(tmp_path / "layer_statistics.csv")
    assert list(csv.columns)[-2:] == ["node_name", "impact"]
    assert csv["impact"].to_numpy() == pytest.approx([r.impact for r in saved.layers])


def test_bad_samples_are_refused(rng: np.random.Generator) -> None:
    debugger, _ = _debugger("depthwise_spread", rng)
    with pytest.raises(qd.ConfigError, match="samples must be a positive integer"):
        debugger.culprits(samples=0)
    with pytest.raises(qd.ConfigError, match="impact must be True or False"):
        qd.DebugOptions(impact="yes")  # type: ignore[arg-type]
