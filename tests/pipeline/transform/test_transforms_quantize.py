"""The transforms through ``qd.quantize``: ``QuantConfig(equalize=True)`` and ``smooth_quant=0.5`` give
a QDQ model that runs, keeps the user's node names, stays close to float and records what changed."""

from __future__ import annotations

import json

import numpy as np
import onnx
from tests.helpers import dataset, session
from tests.pipeline.transform.test_transforms_smooth import _feeds, _ln_model
from tests.random_chains import Layer, chain_model, feeds_for

import quantdebug as qd

WEIGHT_CHANGES = "quantdebug.weight_changes"  # the metadata key the quantize stage writes its records to


def _records(qdq: onnx.ModelProto) -> list[dict[str, object]]:
    return list(json.loads({p.key: p.value for p in qdq.metadata_props}[WEIGHT_CHANGES]))


def _close_to_float(model: onnx.ModelProto, qdq: onnx.ModelProto, feed: dict[str, np.ndarray]) -> None:
    """int8 noise of random layers reaches ~15% of the output rms (plain int8 alike); a broken rewrite ~100%."""
    for want, got in zip(session(model).run(None, feed), session(qdq).run(None, feed)):
        assert np.sqrt(np.mean((got - want) ** 2)) <= 0.3 * np.sqrt(np.mean(want**2))


def _int8_inputs(qdq: onnx.ModelProto, names: list[str]) -> None:
    producers = {o: n.op_type for n in qdq.graph.node for o in n.output}
    for n in qdq.graph.node:
        if n.name in names:
            assert producers[n.input[0]] == producers[n.input[1]] == "DequantizeLinear", f"{n.name} not int8"


def test_quantize_with_equalize(rng: np.random.Generator) -> None:
    layers = [Layer("Conv", 6, "Clip6", k=1, bn=True), Layer("Conv", 6, "Clip6", k=3, group=6), Layer("Conv", 4, k=1)]
    model = chain_model(rng, layers, channels=3, spatial=6, decades=1.0)
    feeds = feeds_for(model, rng, 8)
    calibration = qd.calibrate(model, dataset(feeds), progress=False)
    qdq = qd.quantize(model, calibration, qd.QuantConfig(equalize=True, per_channel=False))
    assert {"l0", "l1", "l2"} <= {n.name for n in qdq.graph.node}
    _int8_inputs(qdq, ["l0", "l1", "l2"])
    applied = [r["nodes"] for r in _records(qdq) if r["kind"] == "equalize" and r["status"] == "applied"]
    assert [(n[0], n[-1]) for n in applied] == [("l0", "l1"), ("l1", "l2")]  # type: ignore[index]
    _close_to_float(model, qdq, feeds[0])
    plain = qd.quantize(model, calibration, qd.QuantConfig(per_channel=False))
    assert WEIGHT_CHANGES not in {p.key for p in plain.metadata_props}


def test_quantize_with_smooth_quant(rng: np.random.Generator) -> None:
    model = _ln_model(rng, heads=3)
    feeds = _feeds(rng, 8)
    calibration = qd.calibrate(model, dataset(feeds), progress=False)
    qdq = qd.quantize(model, calibration, qd.QuantConfig(smooth_quant=0.5, per_channel=False))
    _int8_inputs(qdq, ["fc1", "fc2", "fc3"])
    records = _records(qdq)
    assert [(r["kind"], r["nodes"], r["status"]) for r in records] == [
        ("smooth_quant", ["ln", "fc1", "fc2", "fc3"], "applied")
    ]
    _close_to_float(model, qdq, feeds[0])
