"""qd.FixOptions: a frozen, validated, versioned object that gives the same search as the keywords it replaces."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from tests import models
from tests.helpers import dataset, session

import quantdebug as qd
from quantdebug.fix import DEFAULT_LEVERS, read_trace


def _feeds(model: onnx.ModelProto, rng: np.random.Generator, n: int = 6) -> list[dict[str, np.ndarray]]:
    return [models.input_feed(model, rng) for _ in range(n)]


def _worst_sqnr(float_model: onnx.ModelProto, model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> float:
    """Worst output SQNR (dB) over the outputs, in numpy on the raw outputs: the default quality, computed apart."""
    ref, got = session(float_model), session(model)
    worst = math.inf
    for i in range(len(ref.get_outputs())):
        r = np.concatenate([np.asarray(ref.run(None, f)[i], np.float64).reshape(-1) for f in feeds])
        g = np.concatenate([np.asarray(got.run(None, f)[i], np.float64).reshape(-1) for f in feeds])
        noise = float(np.sum((g - r) ** 2))
        worst = min(worst, math.inf if noise == 0 else 10 * math.log10(float(np.sum(r**2)) / noise))
    return worst


def _fingerprint(result: qd.FixResult) -> dict[str, Any]:
    return {
        "model": hashlib.sha256(result.model.SerializeToString()).hexdigest(),
        "trace": json.dumps(result.trace_dict(), sort_keys=True),
        "settings": json.dumps(result.ort_settings, sort_keys=True),
        "config": json.dumps(result.config.to_dict(), sort_keys=True),
        "summary": result.summary(),
    }


def test_options_round_trip_through_json(tmp_path: Path) -> None:
    options = qd.FixOptions(
        quant_config=qd.QuantConfig(per_channel=True, node_precision=(("conv1", "int16"),)),
        higher_is_better=False,
        max_drop=0.25,
        levers=("float", "clamp"),
        max_evals=7,
        trace_path=tmp_path / "trace.json",
        resume=str(tmp_path / "old.json"),
        max_samples=5,
        sensitivity_samples=2,
        verbose=True,
    )
    data = json.loads(json.dumps(options.to_dict()))
    assert data["version"] == 1
    assert data["trace_path"] == str(tmp_path / "trace.json"), "paths are stored as strings"
    again = qd.FixOptions.from_dict(data)
    assert again == options
    assert again.to_dict() == options.to_dict()
    assert qd.FixOptions.from_dict(qd.FixOptions().to_dict()) == qd.FixOptions()
    assert qd.FixOptions().levers == DEFAULT_LEVERS


def test_options_are_frozen_and_keyword_only() -> None:
    options = qd.FixOptions(target=3.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.target = 4.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        qd.FixOptions(None, True, 3.0)  # type: ignore[misc]
    assert options.replace(target=4.0).target == 4.0 and options.target == 3.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": 1.0, "max_drop": 0.1}, "either target or max_drop"),
        ({"max_drop": -0.5}, "max_drop must be >= 0"),
        ({"max_evals": 1}, "max_evals must be at least 2"),
        ({"max_evals": 2.5}, "max_evals must be a whole number"),
        ({"max_evals": True}, "max_evals must be a whole number"),
        ({"max_samples": 0}, "max_samples must be at least 1"),
        ({"sensitivity_samples": 0}, "sensitivity_samples must be at least 1"),
        ({"target": "high"}, "target must be a number"),
        ({"target": math.nan}, "target must be a number"),
        ({"levers": ("float", "quantum")}, "unknown levers \\['quantum'\\]"),
        ({"levers": "float"}, "sequence of lever names"),
        ({"quant_config": {"per_channel": True}}, "quant_config must be a qd.QuantConfig"),
        ({"trace_path": 3}, "trace_path must be a file path"),
    ],
)
def test_options_validation_names_the_problem(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(qd.ConfigError, match=message):
        qd.FixOptions(**kwargs)


def test_from_dict_refuses_other_versions_and_unknown_fields() -> None:
    data = qd.FixOptions(target=2.0).to_dict()
    with pytest.raises(qd.ConfigError, match="version 2 is not supported"):
        qd.FixOptions.from_dict({**data, "version": 2})
    with pytest.raises(qd.ConfigError, match=r"unknown FixOptions fields \['budget'\]; valid fields: \[.*'max_evals'"):
        qd.FixOptions.from_dict({**data, "budget": 3})
    with pytest.raises(qd.ConfigError, match="takes a dict"):
        qd.FixOptions.from_dict([1, 2])  # type: ignore[arg-type]


def test_keywords_and_options_give_the_same_fix_bytes(rng: np.random.Generator, tmp_path: Path) -> None:
    model, bad = models.wide_range_node(rng, factor=1e3)
    feeds = _feeds(model, rng)
    calibration = qd.calibrate(model, dataset(feeds))
    knobs: dict[str, Any] = {
        "levers": ("float", "clamp", "per_channel"),
        "target": 35.0,
        "max_evals": 9,
        "sensitivity_samples": 3,
        "max_samples": 5,
        "trace_path": str(tmp_path / "trace.json"),
    }
    by_keywords = qd.fix(model, calibration=calibration, debug_dataset=dataset(feeds), **knobs)
    trace_keywords = Path(knobs["trace_path"]).read_bytes()
    options = qd.FixOptions(**knobs)
    by_options = qd.fix(model, calibration=calibration, debug_dataset=dataset(feeds), options=options)
    assert _fingerprint(by_options) == _fingerprint(by_keywords)
    assert Path(knobs["trace_path"]).read_bytes() == trace_keywords
    # the search is a real one: its quality is the default one, recomputed apart on the samples it read
    assert by_options.met_target and bad in by_options.node_precision, by_options.summary()
    assert by_options.fixed_quality == pytest.approx(_worst_sqnr(model, by_options.model, feeds[:5]), abs=1e-6)
    # the trace records the options that made it, and they read back
    saved = json.loads(trace_keywords)
    assert qd.FixOptions.from_dict(saved["options"]) == options
    # a keyword that agrees with options= (or is left at its default) is no conflict
    same = qd.fix(model, calibration=calibration, debug_dataset=dataset(feeds), options=options, target=35.0)
    assert _fingerprint(same) == _fingerprint(by_options)


def test_a_keyword_that_contradicts_options_names_both(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    feeds = _feeds(model, rng, 2)
    with pytest.raises(qd.ConfigError, match=r"options=FixOptions\(target=20\.0\) and target=25\.0"):
        qd.fix(model, dataset(feeds), options=qd.FixOptions(target=20.0), target=25.0)
    with pytest.raises(qd.ConfigError, match=r"options=FixOptions\(levers=\('float',\)\) and levers=\('int16',\)"):
        qd.fix(model, dataset(feeds), options=qd.FixOptions(levers=("float",)), levers=("int16",))
    with pytest.raises(qd.ConfigError, match="options must be a qd\\.FixOptions; got dict"):
        qd.fix(model, dataset(feeds), options={"target": 20.0})  # type: ignore[arg-type]


def test_a_trace_written_before_options_were_recorded_still_resumes(rng: np.random.Generator, tmp_path: Path) -> None:
    model, bad = models.wide_range_node(rng, factor=1e3)
    feeds = _feeds(model, rng)
    trace = tmp_path / "trace.json"
    first = qd.fix(model, dataset(feeds), options=qd.FixOptions(levers=("float",), trace_path=trace))
    data = json.loads(trace.read_text())
    del data["options"]  # the form of trace files before FixOptions
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    resumed = qd.fix(model, dataset(feeds), options=qd.FixOptions(levers=("float",), resume=old))
    assert all(t.cached for t in resumed.trace), "every evaluation replayed from the old trace"
    assert resumed.node_precision == first.node_precision and resumed.fixed_quality == first.fixed_quality
    assert bad in resumed.node_precision
    assert read_trace(old)["evaluations"] == len(data["trace"]) == resumed.evaluations
