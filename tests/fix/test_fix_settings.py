"""The fix as onnxruntime settings: plain JSON on disk, and quantize_static reproduces the fixed model from it."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static
from tests.fix_models import mask_and_spike, mask_and_spike_feeds
from tests.helpers import dataset, session

import quantdebug as qd


class Reader(CalibrationDataReader):
    """onnxruntime's calibration reader over the same samples quantdebug calibrated on."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self.feeds: Iterator[dict[str, np.ndarray]] = iter([dict(f) for f in feeds])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def _outputs(model: onnx.ModelProto | str, feeds: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
    sess = session(onnx.load(model) if isinstance(model, str) else model)
    return [np.concatenate([np.asarray(o).reshape(-1) for o in sess.run(None, f)]) for f in feeds]


def _quantize_static_from(result: qd.FixResult, feeds: list[dict[str, np.ndarray]], tmp_path: Path) -> str:
    settings_path, float_path, out = tmp_path / "ort.json", tmp_path / "float.onnx", tmp_path / "ort_int8.onnx"
    result.save_onnxruntime_settings(settings_path)
    result.save_float_model(float_path)
    settings = qd.onnxruntime_settings(settings_path)
    quantize_static(str(float_path), str(out), Reader(feeds), **settings)
    return str(out)


def test_settings_reproduce_a_fix_with_range_overrides_through_quantize_static(
    rng: np.random.Generator, tmp_path: Path
) -> None:
    model = mask_and_spike(rng)
    feeds = mask_and_spike_feeds(rng)
    result = qd.fix(
        model,
        dataset(feeds),
        quant_config=qd.QuantConfig(percentile=99.99),
        levers=("calibration", "clamp"),
        target=20.0,
    )
    # both range levers are in the result, so the settings carry rmin/rmax overrides
    assert result.candidate.clamps and result.candidate.calibration, result.summary()
    clamped = {t for t, _, _ in result.candidate.clamps}
    assert "mask_add_out" in clamped and "spike_out" in dict(result.candidate.calibration), result.summary()

    path = tmp_path / "settings.json"
    result.save_onnxruntime_settings(path)
    text = json.loads(path.read_text())  # plain JSON, and it says how to load it
    assert "onnxruntime_settings" in text["how_to_load"]
    overrides = text["extra_options"]["TensorQuantOverrides"]
    assert isinstance(overrides["mask_add_out"][0]["rmin"], float)
    settings = qd.onnxruntime_settings(path)
    entry = settings["extra_options"]["TensorQuantOverrides"]["mask_add_out"][0]
    assert isinstance(entry["rmin"], np.ndarray) and entry["rmin"].dtype == np.float32
    assert settings["activation_type"] is QuantType.QInt8 and settings["weight_type"] is QuantType.QInt8

    out = _quantize_static_from(result, feeds, tmp_path)
    fresh = mask_and_spike_feeds(rng, 4)
    for got, want in zip(_outputs(out, fresh + feeds), _outputs(result.model, fresh + feeds)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # and it is the same model: the same quantized tensors with the same scales
    ours, theirs = _scales(result.model), _scales(onnx.load(out))
    assert ours.keys() == theirs.keys()
    for tensor, scale in ours.items():
        np.testing.assert_array_equal(theirs[tensor], scale, err_msg=tensor)


def _scales(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    init = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: init[n.input[1]] for n in model.graph.node if n.op_type == "QuantizeLinear"}


def _sqnr(reference: list[np.ndarray], got: list[np.ndarray]) -> float:
    r, g = np.concatenate(reference).astype(np.float64), np.concatenate(got).astype(np.float64)
    return float(10 * np.log10(np.sum(r**2) / np.sum((g - r) ** 2)))


def test_settings_of_a_fix_with_int16_nodes_reproduce_it(rng: np.random.Generator, tmp_path: Path) -> None:
    """16-bit nodes: the settings carry 16-bit quant types and the conversions at the seams."""
    from tests import models

    model, bad = models.wide_range_node(rng, factor=1e3)
    feeds = [models.input_feed(model, rng) for _ in range(8)]
    calibration = qd.calibrate(model, dataset(feeds))
    reference = _outputs(model, feeds)
    int16 = qd.quantize(model, calibration, qd.QuantConfig(node_precision={bad: "int16"}))
    target = _sqnr(reference, _outputs(int16, feeds)) - 1.0
    result = qd.fix(model, calibration=calibration, debug_dataset=dataset(feeds), levers=("int16",), target=target)
    assert result.int16_nodes == [bad], result.summary()
    out = _quantize_static_from(result, feeds, tmp_path)
    fresh = [models.input_feed(model, rng) for _ in range(4)]
    for got, want in zip(_outputs(out, fresh), _outputs(result.model, fresh)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_a_damaged_or_foreign_settings_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"nodes_to_exclude": []}))
    with pytest.raises(qd.ConfigError, match="not quantdebug onnxruntime settings"):
        qd.onnxruntime_settings(path)
    path.write_text(json.dumps({"format": "quantdebug.onnxruntime-settings", "activation_type": "QInt9"}))
    with pytest.raises(qd.ConfigError, match="damaged"):
        qd.onnxruntime_settings(path)


@pytest.mark.slow
def test_settings_of_the_demo_recogniser_round_trip(rng: np.random.Generator, tmp_path: Path) -> None:
    """A real model (PP-OCRv4 recogniser, opset 12: quantdebug prepares it at 13) and its per-channel fix."""
    from quantdebug import demo

    calibration_data = demo.ocr_dataset(8, seed=demo.CALIB_SEED)
    result = qd.fix(
        str(demo.rec_model_path()), calibration_data, levers=("per_channel", "calibration"), max_evals=4, target=1e9
    )
    assert result.candidate.per_channel, result.summary()
    feeds = [{"x": x} for (x,) in calibration_data()]
    out = _quantize_static_from(result, feeds, tmp_path)
    fresh = [{"x": x} for (x,) in demo.ocr_dataset(2, seed=int(rng.integers(1000, 2**31)))()]
    for got, want in zip(_outputs(out, fresh), _outputs(result.model, fresh)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    ours, theirs = _scales(result.model), _scales(onnx.load(out))
    assert ours.keys() == theirs.keys()
    for tensor, scale in ours.items():
        np.testing.assert_array_equal(theirs[tensor], scale, err_msg=tensor)
