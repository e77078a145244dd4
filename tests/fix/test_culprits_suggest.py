"""The culprits' suggested config: each top culprit's own change in one QuantConfig, that really repairs the model.

The config is checked where it is used: built by ``qd.quantize`` and run in a real onnxruntime session
(its int8 kernels, default optimizations), against the float model's outputs in numpy.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tests.fix.culprit_shapes import SHAPES

import quantdebug as qd
from quantdebug.fix import apply_suggestion

SAMPLES = 4
LEVER_OF = {"channel_spread": "per_channel", "sentinel": "clamp", "float_consumer": "float"}


def _noise(model: onnx.ModelProto, data: list[dict[str, np.ndarray]], reference: list[np.ndarray]) -> float:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = [session.run(None, d)[0].astype(np.float64) for d in data]
    return float(sum(np.sum((g - r) ** 2) for g, r in zip(got, reference)))


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_the_suggested_config_applies_the_culprits_levers_and_repairs_the_deployed_model(
    name: str, rng: np.random.Generator
) -> None:
    model, data, culprit, reason = SHAPES[name](rng)
    debugger = qd.QuantizationDebugger(model, lambda: iter(data), debug_options=qd.DebugOptions(progress=False))
    frame = debugger.culprits(samples=SAMPLES)
    suggestion = frame.attrs["suggestion"]
    assert suggestion["nodes"][0] == culprit
    # the fewest top culprits, in rank order, then every other culprit whose own lever is free (int8 still)
    prefix, above = suggestion["prefix"], int((frame["impact"] >= 0.01).sum())
    assert suggestion["nodes"][:prefix] == list(frame["node_name"][:prefix]) and 1 <= prefix <= above
    rest = frame.iloc[prefix:above]
    assert suggestion["nodes"][prefix:] == list(
        rest[rest["lever"].isin(["per_channel", "clamp", "calibration"])]["node_name"]
    )
    assert suggestion["removes"] >= 0.9 or prefix == above
    # float only where nothing else applies: never more float layers than the denylist has
    assert suggestion["float_layers"] == suggestion["levers"].count("float")
    assert suggestion["float_layers"] <= len(frame.attrs["suggested_denylist"])
    config = apply_suggestion(qd.QuantConfig(), suggestion["config"])
    # the code printed is the config: pasting it builds the same QuantConfig
    assert eval(suggestion["code"], {"QuantConfig": qd.QuantConfig}) == config
    tensor = frame.iloc[0]["tensor_name"]
    lever = LEVER_OF[reason]
    if lever == "per_channel":
        assert culprit in config.per_channel_nodes
    elif lever == "clamp":
        assert [t for t, _, _ in config.tensor_clamps] == [tensor]
    else:
        assert (culprit, "float") in config.precision_rules
    assert debugger.calibration is not None
    float_session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = [float_session.run(None, d)[0].astype(np.float64) for d in data]
    before = _noise(qd.quantize(model, debugger.calibration, qd.QuantConfig()), data, reference)
    after = _noise(qd.quantize(model, debugger.calibration, config), data, reference)
    assert math.isfinite(after) and (after < 0.5 * before or not math.isfinite(before)), (before, after)


def test_the_suggestion_extends_the_config_it_was_measured_under() -> None:
    base = qd.QuantConfig(per_channel_nodes=["a"], node_precision=[("b", "int16")], calibration_method="percentile")
    config = apply_suggestion(
        base,
        {
            "per_channel_nodes": ["c"],
            "node_precision": [["b", "float"]],
            "tensor_clamps": [["t", -1.0, 2.0]],
            "calibration_overrides": [["u", "percentile"]],
        },
    )
    assert config.per_channel_nodes == ("a", "c")
    assert config.precision_rules == (("b", "int16"), ("b", "float"))  # later rules win: the suggestion's
    assert config.tensor_clamps == (("t", -1.0, 2.0),) and config.calibration_overrides == (("u", "percentile"),)
    assert config.calibration_method == "percentile"
    assert apply_suggestion(base, {}) == base
