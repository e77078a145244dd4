"""RayExecutor on a real local Ray cluster: merged results equal one process's, and lost workers are survived."""

from __future__ import annotations

import inspect
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

ray = pytest.importorskip("ray")

from tests import models  # noqa: E402
from tests.helpers import dataset  # noqa: E402

import quantdebug as qd  # noqa: E402
import quantdebug.data  # noqa: E402
from quantdebug.executors import LocalExecutor, ShardedDataset  # noqa: E402
from quantdebug.executors._ray import RayExecutor, ray_dataset_of  # noqa: E402
from quantdebug.pipeline.run._run import RunState  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")
DRIVER = os.getpid()
SAMPLES = 24


@pytest.fixture(scope="module")
def executor() -> Iterator[RayExecutor]:
    """One local cluster for the module, started by the executor itself; its two workers are kept between calls."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the test files
    ex = RayExecutor(num_workers=2, chunk_size=4, runtime_env={"env_vars": {"QD_TEST_WORKER": "1"}})
    try:
        with ex:
            yield ex
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return models.all_ops(np.random.default_rng(7))


def _sample(k: int) -> dict[str, np.ndarray]:
    """Sample ``k`` of all_ops' input, made from numpy alone: workers read it too, and cannot import tests."""
    return {"input": np.random.default_rng(1000 + k).standard_normal((1, 3, 16, 16)).astype(np.float32)}


@pytest.fixture(scope="module")
def feeds(model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    (spec,) = model.graph.input
    assert spec.name == "input" and [d.dim_value for d in spec.type.tensor_type.shape.dim][1:] == [3, 16, 16]
    return [_sample(k) for k in range(SAMPLES)]


@pytest.fixture(scope="module")
def calibration(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> qd.Calibration:
    return qd.calibrate(model, dataset(feeds))


def _max_abs(diff: np.ndarray) -> float:
    return float(np.max(np.abs(diff)))


def _output_l1(f: list[np.ndarray], q: list[np.ndarray]) -> float:
    return float(sum(np.abs(a - b).sum() for a, b in zip(f, q)))


def _debugger(
    model_: onnx.ModelProto, calib: qd.Calibration, source: object, options: qd.DebugOptions | None = None
) -> qd.QuantizationDebugger:
    return qd.QuantizationDebugger(model_, debug_dataset=source, calibration=calib, debug_options=options)


def _job(model_: onnx.ModelProto, calib: qd.Calibration, source: object, options: qd.DebugOptions | None = None) -> Any:
    """What ``debugger.run(executor=...)`` hands the executor: the DebugJob and the validated Dataset."""
    debugger = _debugger(model_, calib, source, options)
    return debugger._job(), debugger._debug


# A sample's per-layer numbers come from float32 kernels whose last bits depend on the batch the
# sample ran in (onnxruntime's GEMMs block rows differently for 1-3 rows than for 4): shards and
# workers stack other samples together than one process does. Merging itself adds float64 sums.
BATCH_RTOL = 1e-6


def assert_same_state(got: RunState, want: RunState) -> None:
    """Counts and the dataset digest exactly; sums to the float32 noise of different batches."""
    assert got.samples == want.samples
    assert got.digest == want.digest
    np.testing.assert_array_equal(got.layer.counts, want.layer.counts)
    np.testing.assert_allclose(got.layer.sums, want.layer.sums, rtol=BATCH_RTOL, atol=1e-300)
    if want.custom is not None:
        assert got.custom is not None
        np.testing.assert_array_equal(got.custom.counts, want.custom.counts)
        np.testing.assert_allclose(got.custom.sums, want.custom.sums, rtol=BATCH_RTOL, atol=1e-300)
    assert got.model_count == want.model_count
    assert got.model_sums == pytest.approx(want.model_sums, rel=BATCH_RTOL)


def assert_same_statistics(got: qd.QuantizationDebugger, want: qd.QuantizationDebugger) -> None:
    assert got.samples_seen == want.samples_seen
    for tensor, metrics in want.layer_statistics.items():
        for metric, value in metrics.items():
            if metric == "num_elements":
                assert got.layer_statistics[tensor][metric] == value, (tensor, metric)
            else:
                assert got.layer_statistics[tensor][metric] == pytest.approx(value, rel=BATCH_RTOL, abs=1e-300)
    assert got.statistics().provenance["dataset_fingerprint"] == want.statistics().provenance["dataset_fingerprint"]


def test_debug_statistics_from_two_workers_equal_one_process(
    executor: RayExecutor, model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], calibration: qd.Calibration
) -> None:
    # a plain list: the driver streams it to the workers in chunks of 4 samples
    options = qd.DebugOptions(layer_debug_metrics={"max_abs": _max_abs}, model_debug_metrics={"l1": _output_l1})
    single = _debugger(model, calibration, dataset(feeds), options)
    single.run()
    spread = _debugger(model, calibration, dataset(feeds), options)
    spread.run(executor=executor)
    assert_same_statistics(spread, single)
    assert spread.model_statistics == pytest.approx(single.model_statistics, rel=BATCH_RTOL)
    assert (spread.fidelity is None) == (single.fidelity is None)
    job, data = _job(model, calibration, dataset(feeds), options)
    want = LocalExecutor().run_debug(job, data, batch_free=True)
    assert_same_state(executor.run_debug(job, data, batch_free=True), want)


def test_calibration_ranges_are_identical(
    executor: RayExecutor, model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], calibration: qd.Calibration
) -> None:
    spread = qd.calibrate(model, dataset(feeds), executor=executor)
    assert spread.num_samples == calibration.num_samples == SAMPLES
    assert spread.fingerprint == calibration.fingerprint
    assert set(spread.stats) == set(calibration.stats)
    for name, stats in calibration.stats.items():
        assert spread.stats[name] == stats, name
    for method in ("minmax", "percentile"):
        config = qd.QuantConfig(calibration_method=method)
        assert spread.ranges(config) == calibration.ranges(config), method
    for name in list(calibration.stats)[::7]:  # entropy takes a while per tensor
        assert spread.tensor_range(name, "entropy") == calibration.tensor_range(name, "entropy"), name


def test_sharded_dataset_is_read_by_the_workers(
    executor: RayExecutor, model: onnx.ModelProto, calibration: qd.Calibration, monkeypatch: pytest.MonkeyPatch
) -> None:
    def factory(shard: int, count: int) -> Iterator[dict[str, np.ndarray]]:
        assert os.environ.get("QD_TEST_WORKER") == "1" or count == 1  # shards are read on the workers only
        return (_sample(k) for k in range(shard, SAMPLES, count))

    monkeypatch.setattr(executor, "shards", 3)  # more shards than workers: the workers share them out
    source = ShardedDataset(factory)
    assert qd.calibrate(model, source, executor=executor).stats == calibration.stats
    single = qd.QuantizationDebugger(model, debug_dataset=source, calibration=calibration)
    single.run()
    spread = qd.QuantizationDebugger(model, debug_dataset=source, calibration=calibration)
    spread.run(executor=executor)
    assert_same_statistics(spread, single)


def test_ray_dataset_is_split_over_the_workers(
    executor: RayExecutor, model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], calibration: qd.Calibration
) -> None:
    pytest.importorskip("pyarrow")
    import ray.data

    ds = ray.data.from_items([dict(f) for f in feeds])
    assert ray_dataset_of(ds) is ds and ray_dataset_of(ds.iter_rows) is ds and ray_dataset_of(dataset(feeds)) is None
    single = qd.QuantizationDebugger(model, debug_dataset=dataset(feeds), calibration=calibration)
    single.run()
    spread = qd.QuantizationDebugger(model, debug_dataset=ds.iter_rows, calibration=calibration)
    spread.run(executor=executor)
    assert_same_statistics(spread, single)
    assert qd.calibrate(model, ds.iter_rows, executor=executor).stats == calibration.stats


@pytest.mark.skipif(
    not hasattr(quantdebug.data, "is_ray_dataset"), reason="Dataset does not take a ray.data.Dataset yet"
)
def test_a_ray_dataset_passed_as_it_is(
    executor: RayExecutor, model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], calibration: qd.Calibration
) -> None:
    pytest.importorskip("pyarrow")
    import ray.data

    ds = ray.data.from_items([dict(f) for f in feeds])
    single = _debugger(model, calibration, dataset(feeds))
    single.run()
    for executor_ in (executor, None):
        direct = _debugger(model, calibration, ds)
        direct.run(executor=executor_)
        assert_same_statistics(direct, single)


def _dies_once(marker: Path) -> None:
    """Kill this worker process, once per marker, and never the test process."""
    if os.getpid() != DRIVER and not marker.exists():
        marker.touch()
        os._exit(1)


def test_a_worker_killed_mid_shard_is_replaced_and_nothing_counts_twice(
    executor: RayExecutor, model: onnx.ModelProto, calibration: qd.Calibration, tmp_path: Path
) -> None:
    marker = tmp_path / "died"

    def factory(shard: int, count: int) -> Iterator[dict[str, np.ndarray]]:
        for i, k in enumerate(range(shard, SAMPLES, count)):
            if shard == 1 and i == 3:
                _dies_once(marker)  # three samples of this shard are already in the dead worker's state
            yield _sample(k)

    source = ShardedDataset(factory)
    single = qd.QuantizationDebugger(model, debug_dataset=source, calibration=calibration)
    single.run()
    spread = qd.QuantizationDebugger(model, debug_dataset=source, calibration=calibration)
    spread.run(executor=executor)
    assert marker.exists(), "the worker was not killed"
    assert_same_statistics(spread, single)


def test_a_worker_killed_mid_chunk_is_replaced_and_nothing_counts_twice(
    executor: RayExecutor,
    model: onnx.ModelProto,
    feeds: list[dict[str, np.ndarray]],
    calibration: qd.Calibration,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "died"

    def metric(diff: np.ndarray) -> float:  # a custom metric runs on the workers: one of them dies in it
        _dies_once(marker)
        return float(np.mean(np.abs(diff)))

    options = qd.DebugOptions(layer_debug_metrics={"mean_abs": metric})
    single = _debugger(model, calibration, dataset(feeds), options)
    single.run()
    job, data = _job(model, calibration, dataset(feeds), options)
    state = executor.run_debug(job, data, batch_free=True)
    assert marker.exists(), "the worker was not killed"
    assert state.samples == SAMPLES
    assert_same_state(state, LocalExecutor().run_debug(job, data, batch_free=True))


def test_map_keeps_submission_order_survives_a_lost_worker_and_raises_the_task_error(
    executor: RayExecutor, tmp_path: Path
) -> None:
    marker = tmp_path / "died"

    def square(x: int) -> tuple[int, int]:
        if x == 5:
            _dies_once(marker)
        return x * x, os.getpid()

    out = executor.map(square, list(range(12)))
    assert marker.exists()
    assert [v for v, _ in out] == [x * x for x in range(12)]
    assert DRIVER not in {pid for _, pid in out} and len({pid for _, pid in out}) >= 2
    assert executor.map(square, []) == []

    def broken(x: int) -> int:
        if x == 2:
            raise ValueError("bad item 2")
        return x

    with pytest.raises(ValueError, match="bad item 2"):
        executor.map(broken, [0, 1, 2, 3])


class _Scores:
    """A fix-style task: leave switches in float and score the switchable graph; one SwitchRunner per process."""

    def __init__(self, float_model: onnx.ModelProto, plan: Any, feeds: list[dict[str, np.ndarray]]) -> None:
        self.float_model, self.plan, self.feeds = float_model, plan, feeds
        self._runner: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_runner": None}  # sessions are built where the task runs

    def __call__(self, off: tuple[int, ...]) -> tuple[float, int, int]:
        from quantdebug.fix._switch import SwitchRunner

        if self._runner is None:
            self._runner = SwitchRunner(self.float_model, self.plan, self.feeds)
        runner = self._runner
        act = np.ones(runner.n_act, np.float32)
        act[list(off)] = 0.0
        return runner.score(act, np.ones(runner.n_w, np.float32)), os.getpid(), id(runner)


def test_switch_runner_tasks_build_one_runner_per_worker(
    executor: RayExecutor, model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], calibration: qd.Calibration
) -> None:
    debugger = qd.QuantizationDebugger(model, debug_dataset=dataset(feeds), calibration=calibration)
    scores = _Scores(debugger.float_model, debugger._plan, feeds[:4])
    items = [(), *[(k,) for k in range(len(debugger.layer_names))]]
    local = LocalExecutor().map(_Scores(debugger.float_model, debugger._plan, feeds[:4]), items)
    spread = executor.map(scores, items)
    assert [s for s, _, _ in spread] == pytest.approx([s for s, _, _ in local], rel=1e-5)
    runners: dict[int, set[int]] = {}
    for _, pid, runner in spread:
        runners.setdefault(pid, set()).add(runner)
    assert DRIVER not in runners and all(len(r) == 1 for r in runners.values())


def _failing_at(feeds: list[dict[str, np.ndarray]], index: int, error: BaseException) -> Callable[[], Iterator[Any]]:
    def source() -> Iterator[dict[str, np.ndarray]]:
        for i, feed in enumerate(feeds):
            if i == index:
                raise error
            yield feed

    return source


def test_a_data_error_keeps_every_sample_before_it(
    executor: RayExecutor, model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], calibration: qd.Calibration
) -> None:
    broken = _failing_at(feeds, 13, OSError("disk went away"))
    single = qd.QuantizationDebugger(model, debug_dataset=broken, calibration=calibration)
    with pytest.raises(qd.RunInterrupted):
        single.run()
    job, data = _job(model, calibration, broken)
    with pytest.raises(qd.RunInterrupted, match="disk went away") as info:
        executor.run_debug(job, data, batch_free=True)
    state = info.value.state  # type: ignore[attr-defined]
    assert state.samples == single.samples_seen == 13
    assert_same_state(state, single._state)


def test_an_interrupted_driver_keeps_what_had_merged(
    executor: RayExecutor, model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], calibration: qd.Calibration
) -> None:
    job, data = _job(model, calibration, _failing_at(feeds, 22, KeyboardInterrupt()))
    with pytest.raises(qd.RunInterrupted, match="KeyboardInterrupt") as info:
        executor.run_debug(job, data, batch_free=True)
    state = info.value.state  # type: ignore[attr-defined]
    # at most two chunks of 4 per worker were in flight when the driver had read 20 samples
    assert 4 <= state.samples <= 20 and state.samples % 4 == 0
    assert np.all(state.layer.counts[:, 0] == state.samples)


def test_fresh_workers_per_call_and_giving_up_after_max_retries(
    executor: RayExecutor, model: onnx.ModelProto, calibration: qd.Calibration
) -> None:
    executor._release()  # free the module's kept workers for this executor's own
    always = RayExecutor(num_workers=2, max_retries=1)

    def factory(shard: int, count: int) -> Iterator[dict[str, np.ndarray]]:
        if shard == 0 and os.getpid() != DRIVER:
            os._exit(1)
        return iter([_sample(k) for k in range(shard, SAMPLES, count)])

    job, data = _job(model, calibration, ShardedDataset(factory))
    with pytest.raises(qd.RunInterrupted, match="max_retries=1") as info:
        always.run_debug(job, data, batch_free=True)
    assert info.value.state.samples <= SAMPLES // 2  # type: ignore[attr-defined]
    assert always.map(abs, [-3]) == [3]
    deadline = time.monotonic() + 10
    while ray.available_resources().get("CPU") != 2.0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU") == 2.0  # the call's workers are gone


WIRED_FIX = "executor" in inspect.signature(qd.fix).parameters
WIRED_STATE = "state" in inspect.signature(qd.RunInterrupted.__init__).parameters


@pytest.mark.skipif(not WIRED_FIX, reason="qd.fix(executor=...) is not wired yet")
def test_fix_on_workers_gives_the_same_result_and_trace(executor: RayExecutor) -> None:
    model_, _ = models.wide_range_node(np.random.default_rng(5))
    rng = np.random.default_rng(6)
    feeds_ = [models.input_feed(model_, rng) for _ in range(8)]
    local = qd.fix(model_, dataset(feeds_))
    spread = qd.fix(model_, dataset(feeds_), executor=executor)  # type: ignore[call-arg]
    assert spread.node_precision == local.node_precision
    assert [(t.step, t.quality) for t in spread.trace] == [(t.step, t.quality) for t in local.trace]


@pytest.mark.skipif(not WIRED_STATE, reason="RunInterrupted.state and debugger.run(executor=...) are not wired yet")
def test_an_interrupted_run_on_workers_leaves_its_statistics_on_the_debugger(
    executor: RayExecutor, model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], calibration: qd.Calibration
) -> None:
    debugger = _debugger(model, calibration, _failing_at(feeds, 13, OSError("disk went away")))
    with pytest.raises(qd.RunInterrupted) as info:
        debugger.run(executor=executor)
    assert info.value.state.samples == debugger.samples_seen == 13  # type: ignore[attr-defined]
    assert debugger.layer_statistics
    with pytest.raises(qd.RunInterrupted) as again:
        debugger.run(resume=True)  # starts over in this process (finished shards are not a prefix): 13 again
    assert again.value.state is None and debugger.samples_seen == 13  # type: ignore[attr-defined]


def test_without_ray_installed_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(qd.ConfigError, match=r"quantdebug\[ray\]"):
        RayExecutor()
