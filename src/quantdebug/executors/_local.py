"""The executor interface and the in-process executor that every other executor must agree with.

An executor runs three kinds of work: a debug run (returns a mergeable RunState), a calibration
pass (returns a mergeable Calibration) and a map of independent tasks (fix's sensitivity runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

import onnx

from quantdebug.data import Dataset
from quantdebug.pipeline.calibrate import Calibration, Calibrator
from quantdebug.pipeline.run import DebugJob, RunState

T = TypeVar("T")
R = TypeVar("R")


class ShardedDataset:
    """A dataset that can produce shard ``i`` of ``n`` itself, so workers read their own share.

    ``factory(shard, num_shards)`` returns an iterable of samples; ``factory(0, 1)`` is the whole.
    """

    def __init__(self, factory: Callable[[int, int], Iterable[Any]]) -> None:
        if not callable(factory):
            raise TypeError("ShardedDataset needs a function factory(shard, num_shards) -> iterable of samples")
        self.factory = factory

    def __call__(self) -> Iterable[Any]:
        return self.factory(0, 1)

    def shard(self, index: int, count: int) -> Callable[[], Iterable[Any]]:
        return lambda: self.factory(index, count)


class Executor(Protocol):
    def run_debug(self, job: DebugJob, dataset: Dataset, *, batch_free: bool) -> RunState: ...

    def run_calibration(
        self, model: onnx.ModelProto, dataset: Dataset, *, batch_size: int, fingerprint: str
    ) -> Calibration: ...

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]: ...


class LocalExecutor:
    """Runs everything in this process; ``shards > 1`` splits the work and merges it (for testing merges)."""

    def __init__(self, shards: int = 1) -> None:
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self.shards = shards

    def _parts(self, dataset: Dataset) -> list[Dataset]:
        source = dataset.factory
        if self.shards == 1:
            return [dataset]
        if isinstance(source, ShardedDataset):
            return [Dataset(source.shard(i, self.shards), dataset.specs, what=dataset.what) for i in range(self.shards)]
        samples = list(source())
        return [
            Dataset((lambda i=i: samples[i :: self.shards]), dataset.specs, what=dataset.what)
            for i in range(self.shards)
        ]

    def run_debug(self, job: DebugJob, dataset: Dataset, *, batch_free: bool) -> RunState:
        loop = job.loop()
        total: RunState | None = None
        for part in self._parts(dataset):
            state = job.empty_state()
            loop.process(iter(part), state, batch_free=batch_free, advance=lambda n: None)
            total = state if total is None else total.merge(state)
        assert total is not None
        return total

    def run_calibration(
        self, model: onnx.ModelProto, dataset: Dataset, *, batch_size: int, fingerprint: str
    ) -> Calibration:
        calibrator = Calibrator(model, fingerprint=fingerprint)  # one session for every shard
        batch_free = all(s.batch_free for s in dataset.specs)
        total: Calibration | None = None
        for part in self._parts(dataset):
            calibration = calibrator.run(iter(part), batch_size=batch_size, batch_free=batch_free)
            total = calibration if total is None else total.merge(calibration)
        assert total is not None
        return total

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return [fn(item) for item in items]
