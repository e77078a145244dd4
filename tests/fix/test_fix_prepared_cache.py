"""fix pre-processes a model once per process: a calibrate (or quantize) before it has already done so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from tests import models
from tests.fix_models import NODE_SEARCH_LEVERS
from tests.helpers import dataset, spy

import quantdebug as qd
from quantdebug.pipeline.prepare import _prepared


def test_fix_after_calibrate_reuses_the_prepared_model(
    rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = models.conv_relu(rng)
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    feeds = [models.input_feed(model, rng) for _ in range(6)]
    calls = spy(monkeypatch, _prepared, "preprocess")

    def runs() -> int:  # pre-processings at the base opset (an int16 candidate needs an opset 21 copy too)
        return sum(kwargs.get("min_opset", 13) != 21 for _, kwargs in calls)

    calibration = qd.calibrate(str(path), dataset(feeds), progress=False)
    assert runs() == 1
    result = qd.fix(str(path), calibration=calibration, debug_dataset=dataset(feeds), levers=NODE_SEARCH_LEVERS)
    assert runs() == 1, "fix pre-processed the model a second time"
    # and its answer is the one a fresh process (a fresh cache) gives
    _prepared._CACHE.clear()
    _prepared._DIGESTS.clear()
    fresh = qd.fix(str(path), calibration=calibration, debug_dataset=dataset(feeds), levers=NODE_SEARCH_LEVERS)
    assert runs() == 2
    assert result.candidate == fresh.candidate
    assert result.fixed_quality == fresh.fixed_quality
    assert result.model.SerializeToString() == fresh.model.SerializeToString()
