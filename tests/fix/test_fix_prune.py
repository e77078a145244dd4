"""A fix holds only changes that change the fixed model: the rest is left out of its result, config and settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from tests.fix_models import mask_and_spike, mask_and_spike_feeds
from tests.helpers import dataset

import quantdebug as qd


def _quantized_tensors(model: onnx.ModelProto) -> set[str]:
    return {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}


def test_changes_that_do_not_change_the_fixed_model_are_left_out(rng: np.random.Generator, tmp_path: Path) -> None:
    model = mask_and_spike(rng)
    feeds = mask_and_spike_feeds(rng)
    base = qd.QuantConfig(percentile=99.99)
    calibration = qd.calibrate(model, dataset(feeds), base)
    # a target no int8 mix reaches: the search keeps the range levers it found first, then puts
    # their tensors' producers and consumers in float, where a range no longer matters
    # (int16 left out and the budget cut, to keep the test short: the float prefixes get there)
    result = qd.fix(
        model,
        calibration=calibration,
        debug_dataset=dataset(feeds),
        quant_config=base,
        target=1e9,
        levers=("float", "calibration", "clamp"),
        max_evals=10,
    )
    chosen = [
        t.candidate
        for t in result.trace
        if t.step != "float"
        and set(result.candidate.describe()) <= set(t.candidate.describe())
        and t.candidate.precision == result.candidate.precision
    ]
    assert chosen, result.summary()
    tried = chosen[-1]
    left_out = set(tried.describe()) - set(result.candidate.describe())
    assert left_out, f"the search's own candidate had no dead changes:\n{result.summary()}"
    assert result.left_out == len(left_out)

    # the changes left out do nothing: the config with them and the config without them give
    # the same bytes through qd.quantize, and those are the fixed model's bytes
    with_them = qd.quantize(model, calibration, tried.config(base)).SerializeToString()
    without = qd.quantize(model, calibration, result.config).SerializeToString()
    assert with_them == without == result.model.SerializeToString()
    quantized = _quantized_tensors(result.model)
    for tensor, _ in tried.calibration:
        assert (tensor in quantized) == (tensor in dict(result.candidate.calibration)), tensor
    for tensor, _, _ in tried.clamps:
        assert (tensor in quantized) == (tensor in {t for t, _, _ in result.candidate.clamps}), tensor

    # and they are gone from what the user reads and reuses
    summary = result.summary()
    settings_path, config_path = tmp_path / "ort.json", tmp_path / "config.json"
    result.save_onnxruntime_settings(settings_path)
    result.save_config(config_path)
    config = json.loads(config_path.read_text())
    overrides = json.loads(settings_path.read_text())["extra_options"].get("TensorQuantOverrides", {})
    for change in left_out:
        assert change not in summary
        tensor = change.split(": ", 1)[0]
        assert tensor not in overrides
        assert tensor not in json.dumps(config["calibration_overrides"]) + json.dumps(config["tensor_clamps"])
    # the count of nodes out of int8 matches the nodes listed, and no node is both float and per-channel
    float_nodes = set(result.float_nodes)
    assert not float_nodes & set(result.candidate.per_channel)
    listed = [line for line in summary.splitlines() if line.endswith((": float", ": int16"))]
    assert len(listed) == result.candidate.non_int8
    assert f"{result.candidate.non_int8} of {result.quantized_nodes} quantized nodes out of int8" in summary


def test_per_channel_weights_and_precision_of_nodes_left_in_float_or_never_quantized_are_dead(
    rng: np.random.Generator,
) -> None:
    from tests import models

    from quantdebug.fix import Candidate
    from quantdebug.fix._prune import live_changes
    from quantdebug.pipeline.prepare._prepared import prepared_model

    model, bad = models.wide_range_node(rng)
    feeds = [models.input_feed(model, rng) for _ in range(4)]
    calibration = qd.calibrate(model, dataset(feeds))
    # conv2 in float with per-channel weights, conv1 per-channel and quantized; unscale is a Div,
    # which onnxruntime does not quantize, so putting it in float changes nothing
    candidate = Candidate(
        precision=(("conv2", "float"), ("unscale", "float"), (bad, "float")), per_channel=("conv1", "conv2")
    )
    base = qd.QuantConfig()
    config = candidate.config(base)
    fixed = qd.quantize(model, calibration, config)
    prepared = prepared_model(model)
    live = live_changes(candidate, fixed, prepared.precisions(base), prepared.precisions(config))
    assert live.per_channel == ("conv1",)
    assert live.precision == (("conv2", "float"), (bad, "float"))
    # what was dropped did nothing: the same bytes without it
    assert qd.quantize(model, calibration, live.config(base)).SerializeToString() == fixed.SerializeToString()
    # and what was kept does something: without it the bytes differ
    for kept in (live.merged(per_channel=()), live.merged(precision=live.precision[1:])):
        assert qd.quantize(model, calibration, kept.config(base)).SerializeToString() != fixed.SerializeToString()
