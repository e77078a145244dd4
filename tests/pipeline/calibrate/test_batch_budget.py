"""The calibration pass stacks only as many samples as its output budget allows, with the same statistics."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from tests.models import conv_relu, input_feed

from quantdebug.pipeline.calibrate import _calibrate
from quantdebug.pipeline.calibrate._calibrate import OUTPUT_BUDGET, Calibrator, float_tensors, stacked_batch


def test_stacked_batch_fits_the_budget() -> None:
    assert stacked_batch(16, 1.0) == 16  # tiny samples: the caller's batch
    assert stacked_batch(16, OUTPUT_BUDGET / 3) == 3
    assert stacked_batch(16, OUTPUT_BUDGET / 3 + 1) == 2
    assert stacked_batch(16, OUTPUT_BUDGET * 10) == 1  # one sample over the budget still runs
    assert stacked_batch(4, 0.0) == 4


class _Recording(Calibrator):
    """A real Calibrator that also records how many samples each session run held."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__(model)
        self.rows: list[int] = []

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.rows.append(next(iter(feed.values())).shape[0])
        return super()._run(feed)


def test_batch_is_cut_to_the_budget_and_the_statistics_do_not_change(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    model = conv_relu(rng)
    feeds = [input_feed(model, rng) for _ in range(9)]
    # one sample's calibrated tensors, in bytes, from a plain session run of the model's float tensors
    single = Calibrator(model)._run(feeds[0])
    per_sample = sum(v.nbytes for v in single.values())
    assert set(single) <= set(float_tensors(model)) and per_sample > 0
    monkeypatch.setattr(_calibrate, "OUTPUT_BUDGET", int(per_sample * 3.5))

    budgeted = _Recording(model)
    cal = budgeted.run(iter(feeds), batch_size=16, batch_free=True)
    # the batching check (2 stacked, then 2 single), then the 9 samples in stacks of at most 3
    assert budgeted.rows[:3] == [2, 1, 1]
    assert budgeted.rows[3:] == [3, 3, 3]

    one = _Recording(model)
    reference = one.run(iter(feeds), batch_size=1, batch_free=False)
    assert set(one.rows) == {1}
    assert cal.num_samples == reference.num_samples == 9
    assert set(cal.stats) == set(reference.stats)
    for name, stats in reference.stats.items():
        mine = cal.stats[name]
        assert mine.count == stats.count
        # stacked and single kernels may differ in the last bits, nothing more
        np.testing.assert_allclose([mine.minimum, mine.maximum], [stats.minimum, stats.maximum], rtol=1e-5, atol=1e-6)
