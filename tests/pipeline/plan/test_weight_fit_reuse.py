"""16-bit nodes and the weight levers: one fit serves every precision-only variant of a config.

A node raised to 16 bits keeps its 8-bit weight (16x8), so adaptive rounding's integers, learned
with every node at 8 bits, carry over unchanged; a corrected bias is carried in float and put on
the bias scale the 16-bit input gives. References: the QDQ models' own initializers (numpy).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from tests.helpers import spy
from tests.models import weight_layers
from tests.pipeline.plan.test_weight_levers import LAYERS, _bias, _dequantized_weight, _nodes, _samples

import quantdebug as qd
from quantdebug.pipeline.plan import weight_changes
from quantdebug.pipeline.prepare import _prepared

WIDE = ("gconv", "pwconv")  # raised to 16 bits: a grouped conv and a pointwise conv


@pytest.fixture
def case(rng: np.random.Generator) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]], qd.Calibration]:
    model = weight_layers(rng)
    samples = _samples(model, rng)
    return model, samples, qd.calibrate(model, samples, progress=False)


def _input_type(qdq: onnx.ModelProto, layer: str) -> int:
    """The element type the QuantizeLinear in front of ``layer``'s activation input produces."""
    producer = {o: n for n in qdq.graph.node for o in n.output}
    dq = producer[_nodes(qdq)[layer].input[0]]
    inits = {i.name: i for i in qdq.graph.initializer}
    return inits[dq.input[2]].data_type if len(dq.input) > 2 else onnx.TensorProto.INT8


def test_16bit_nodes_keep_the_8bit_fits_integers_and_its_biases(case) -> None:
    model, _, calibration = case
    levers = {"weight_rounding": "adaround", "bias_correction": True}
    base = qd.quantize(model, calibration, qd.QuantConfig(**levers))
    wide = qd.quantize(model, calibration, qd.QuantConfig(**levers, node_precision={n: "int16" for n in WIDE}))
    nearest = qd.quantize(model, calibration, qd.QuantConfig(node_precision={n: "int16" for n in WIDE}))
    for layer in WIDE:  # the test is about 16-bit inputs: they must be 16-bit
        assert _input_type(wide, layer) in (onnx.TensorProto.INT16, onnx.TensorProto.UINT16)
    moved = 0
    for layer in LAYERS:
        q_base, scale_base, _, _ = _dequantized_weight(base, layer)
        q_wide, scale_wide, _, _ = _dequantized_weight(wide, layer)
        q_near, _, _, _ = _dequantized_weight(nearest, layer)
        np.testing.assert_array_equal(scale_wide, scale_base)  # 16x8: the weight grid is the same
        np.testing.assert_array_equal(q_wide, q_base)
        moved += int(np.sum(q_wide != q_near))
        if len(_nodes(wide)[layer].input) < 3:
            continue  # no bias (the MatMul)
        # the same float bias on each model's own bias scale: within half a step of each
        b_base, step_base = _bias(base, layer)
        b_wide, step_wide = _bias(wide, layer)
        assert np.max(np.abs(b_wide - b_base)) <= 0.5 * (step_base + step_wide) + 1e-9, layer
    assert moved > 0  # the fit is really there: the rounding differs from nearest somewhere
    kinds = {r["kind"]: r for r in weight_changes(wide)}
    assert kinds["adaround"]["nodes"] == next(r for r in weight_changes(base) if r["kind"] == "adaround")["nodes"]


def test_precision_only_variants_share_one_fit(case, monkeypatch) -> None:
    model, samples, calibration = case
    calls = spy(monkeypatch, _prepared, "fit_weights")
    config = qd.QuantConfig(weight_rounding="adaround", node_precision={"gconv": "int16"})
    prepared = _prepared.PreparedModel(model, config)
    outputs = []
    for wide in ((), ("gconv",), ("gconv", "pwconv"), ("fc",)):
        precisions = prepared.precisions(qd.QuantConfig(node_precision={n: "int16" for n in wide}))
        outputs.append(prepared.quantize(calibration, config, precisions))  # the calibration's samples
    assert len(calls) == 1
    # and each is the model qd.quantize writes for that config
    last = qd.QuantConfig(weight_rounding="adaround", node_precision={"fc": "int16"})
    again = qd.quantize(model, calibration, last, dataset=samples)
    assert again.graph.SerializeToString(deterministic=True) == outputs[-1].graph.SerializeToString(deterministic=True)


def test_a_config_tried_again_after_others_reuses_its_fit(case, monkeypatch) -> None:
    """fix tries a weight lever, then others, then goes back to its best: the first fit is still there."""
    model, _, calibration = case
    calls = spy(monkeypatch, _prepared, "fit_weights")
    prepared = _prepared.PreparedModel(model)
    configs = [
        qd.QuantConfig(weight_rounding="adaround"),
        qd.QuantConfig(weight_rounding="adaround", bias_correction=True),
        qd.QuantConfig(bias_correction=True),
        qd.QuantConfig(weight_rounding="adaround"),  # back to the first
    ]
    outputs = [prepared.quantize(calibration, c, prepared.precisions(c)) for c in configs]
    fitted = [args[2].weight_rounding + ("+bias" if args[2].bias_correction_on else "") for args, _ in calls]
    assert fitted == ["adaround", "adaround+bias", "nearest+bias"]
    assert outputs[3].SerializeToString(deterministic=True) == outputs[0].SerializeToString(deterministic=True)
    # a fresh prepared model (nothing cached) writes the same bytes
    fresh = _prepared.PreparedModel(model)
    again = fresh.quantize(calibration, configs[3], fresh.precisions(configs[3]))
    assert again.SerializeToString(deterministic=True) == outputs[3].SerializeToString(deterministic=True)
    assert len(calls) == 4


def test_fits_kept_are_bounded(case, monkeypatch) -> None:
    model, _, calibration = case
    monkeypatch.setattr(_prepared, "FITS_KEPT", 2)
    prepared = _prepared.PreparedModel(model)
    for iterations in (10, 20, 30):
        config = qd.QuantConfig(weight_rounding="adaround", adaround_iterations=iterations)
        prepared.quantize(calibration, config, prepared.precisions(config))
    assert [c[0][3] for c in prepared._fits] == [20, 30]  # the newest two, oldest first


def test_a_16bit_variant_is_quantized_once_when_its_fit_is_known(case, monkeypatch) -> None:
    """The 8-bit model a fit is keyed by is built for the first variant only; later ones quantize once."""
    model, _, calibration = case
    built = spy(monkeypatch, _prepared, "quantize_with_ranges")
    config = qd.QuantConfig(weight_rounding="adaround", bias_correction=True, node_precision={"gconv": "int16"})
    prepared = _prepared.PreparedModel(model, config)
    outputs = []
    for wide in (("gconv",), ("gconv", "pwconv"), ("fc",), ("pwconv",)):
        built.clear()
        precisions = prepared.precisions(qd.QuantConfig(node_precision={n: "int16" for n in wide}))
        outputs.append(prepared.quantize(calibration, config, precisions))
        assert len(built) == (2 if len(outputs) == 1 else 1), wide  # the first also builds its 8-bit base
    # each is the model a fresh prepared model (nothing remembered) writes for that variant
    fresh = _prepared.PreparedModel(model, config)
    precisions = fresh.precisions(qd.QuantConfig(node_precision={"pwconv": "int16"}))
    again = fresh.quantize(calibration, config, precisions)
    assert again.SerializeToString(deterministic=True) == outputs[-1].SerializeToString(deterministic=True)


def test_bias_correction_where_no_layer_has_a_bias_reuses_the_rounding_fit(case, monkeypatch) -> None:
    """fix asks for bias correction on top of adaround; on layers without a bias (a transformer's
    MatMuls) it changes nothing, so the adaround fit serves it, with bias correction's own records."""
    model, _, calibration = case
    calls = spy(monkeypatch, _prepared, "fit_weights")
    prepared = _prepared.PreparedModel(model)
    rounding = {"weight_rounding": "adaround", "adaround_nodes": ("matmul1", "fc")}
    configs = [
        qd.QuantConfig(**rounding),
        qd.QuantConfig(**rounding, bias_correction=True, bias_correction_nodes=("matmul1",)),  # no bias there
        qd.QuantConfig(**rounding, bias_correction=True, bias_correction_nodes=("fc",)),  # a Gemm with a bias
    ]
    outputs = [prepared.quantize(calibration, c, prepared.precisions(c)) for c in configs]
    assert len(calls) == 2  # the first and the last; the middle one is the first's scope
    records = weight_changes(outputs[1])
    bias = next(r for r in records if r["kind"] == "bias_correction")
    assert bias["status"] == "skipped" and bias["nodes"] == []
    assert {"node": "matmul1", "reason": "no quantized bias to correct"} in bias["skipped"]
    assert outputs[2].graph.SerializeToString() != outputs[0].graph.SerializeToString()  # fc's bias moved
    # every model, metadata included, is the one a prepared model with nothing remembered writes
    for config, out in zip(configs, outputs):
        fresh = _prepared.PreparedModel(model)
        again = fresh.quantize(calibration, config, fresh.precisions(config))
        assert again.SerializeToString(deterministic=True) == out.SerializeToString(deterministic=True)
    assert len(calls) == 5
