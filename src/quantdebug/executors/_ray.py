"""RayExecutor: debug runs, calibration and fix's independent tasks spread over the workers of a Ray cluster.

Each worker is a Ray actor that builds its onnxruntime sessions once; the driver merges what workers return.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import inspect
import itertools
import math
import os
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import onnx

from quantdebug.data import Dataset, InputSpec, is_ray_dataset
from quantdebug.errors import ConfigError, DatasetError, QuantDebugError, RunInterrupted
from quantdebug.executors._local import ShardedDataset
from quantdebug.pipeline.calibrate import Calibration, Calibrator
from quantdebug.pipeline.run import DebugJob, DebugLoop, RunState
from quantdebug.support import progress_bar

T = TypeVar("T")
R = TypeVar("R")
Feed = dict[str, np.ndarray]

READY_WARNING_S = 60.0  # warn (and keep waiting) when the cluster has not placed every worker by then
_INSTALL_HINT = "RayExecutor needs Ray: pip install 'quantdebug[ray]' (or pip install 'ray>=2.9')"


def _import_ray() -> Any:
    try:
        import ray  # optional dependency
    except ImportError as exc:
        raise ConfigError(f"{_INSTALL_HINT}; importing it failed: {exc}") from exc
    return ray


def ray_dataset_of(source: object) -> Any | None:
    """The ``ray.data.Dataset`` behind a dataset source: the Dataset itself or its bound ``iter_rows``."""
    if is_ray_dataset(source):
        return source
    owner = getattr(source, "__self__", None)
    if owner is not None and getattr(source, "__name__", "") == "iter_rows" and is_ray_dataset(owner):
        return owner
    return None


# -- what a task reads ------------------------------------------------------------------------------


def _validated(factory: Callable[[], Iterable[Any]], specs: list[InputSpec], what: str) -> Iterator[Feed]:
    """Validated feeds of one shard; unlike a whole dataset, a shard may be empty."""
    try:
        iterator = iter(factory())
    except Exception as exc:
        raise DatasetError(f"{what}: calling the dataset function failed: {exc!r}") from exc
    try:
        first = next(iterator)
    except StopIteration:
        return iter(())
    except Exception as exc:
        raise DatasetError(f"{what}: reading sample 0 raised {exc!r}") from exc
    return iter(Dataset(lambda: itertools.chain([first], iterator), specs, what=what))


class _Feeds:
    """Samples read and validated by the driver, sent to a worker."""

    def __init__(self, feeds: list[Feed]) -> None:
        self.items = feeds

    def feeds(self) -> Iterator[Feed]:
        return iter(self.items)


class _Shard:
    """Shard ``index`` of ``count``, read by the worker itself: a ShardedDataset's, or one split of a Ray Dataset."""

    def __init__(self, source: Any, index: int, count: int, specs: list[InputSpec], what: str) -> None:
        self.source = source  # an ObjectRef of the ShardedDataset, or a ray.data split
        self.index = index
        self.count = count
        self.specs = specs
        self.what = what

    def feeds(self) -> Iterator[Feed]:
        ray = _import_ray()
        source = ray.get(self.source) if isinstance(self.source, ray.ObjectRef) else self.source
        if isinstance(source, ShardedDataset):
            factory = source.shard(self.index, self.count)
        else:
            import ray.data as ray_data  # only a Ray Dataset source needs it; ray itself is an optional extra

            ray_data.DataContext.get_current().enable_progress_bars = False  # this worker's bars would flood the log
            factory = source.iter_rows
        return _validated(factory, self.specs, f"{self.what} (shard {self.index + 1} of {self.count})")


_Work = _Feeds | _Shard


class _Chunks:
    """The driver's dataset read in chunks of samples; with ``guard``, an error of the data ends it and is kept."""

    def __init__(self, feeds: Iterator[Feed], size: int, *, guard: bool) -> None:
        self.source = feeds
        self.size = size
        self.guard = guard
        self.error: Exception | None = None
        self.done = False

    def __iter__(self) -> Iterator[_Feeds]:
        while not self.done:
            chunk: list[Feed] = []
            while len(chunk) < self.size:
                try:
                    chunk.append(next(self.source))
                except StopIteration:
                    self.done = True
                    break
                except Exception as exc:  # the samples read before it are still processed, as in one process
                    if not self.guard:
                        raise
                    self.error, self.done = exc, True
                    break
            if chunk:
                yield _Feeds(chunk)


# -- the worker side --------------------------------------------------------------------------------


class _DebugProgram:
    """One worker's debug sessions, built once from the DebugJob and reused for every task."""

    def __init__(self, job: DebugJob, threads: int) -> None:
        self.job = job
        self.loop: DebugLoop = job.loop(threads=threads)
        self.fidelity_measured = False

    def run(self, work: _Work, batch_free: bool) -> RunState:
        state = self.job.empty_state()
        if self.fidelity_measured:
            state.fidelity = 0.0  # states merge fidelities by max: this worker's first task measured it
        self.loop.process(work.feeds(), state, batch_free=batch_free, advance=lambda n: None)
        self.fidelity_measured = self.fidelity_measured or state.fidelity is not None
        return state


class _Calibrator:
    """A worker's ``Calibrator``, built once from the model's bytes and run for every task."""

    def __init__(self, payload: tuple[bytes, str], threads: int) -> None:
        model_bytes, fingerprint = payload
        self.calibrator = Calibrator(onnx.load_model_from_string(model_bytes), fingerprint=fingerprint, threads=threads)

    def run(self, work: _Work, batch_size: int, batch_free: bool) -> Calibration:
        return self.calibrator.run(work.feeds(), batch_size=batch_size, batch_free=batch_free)


class _Worker:
    """A Ray actor: keeps the program of the current call (sessions, or the mapped function) between tasks."""

    def __init__(self, threads: int) -> None:
        self.threads = threads  # onnxruntime's intra-op threads = this worker's CPUs, handed to every session
        self.key: str | None = None
        self.program: Any = None

    def ready(self) -> int:
        return os.getpid()

    def _load(self, key: str, holder: list[Any], build: Callable[[Any], Any]) -> Any:
        if key != self.key:
            self.program = None  # the previous call's sessions go before the new ones are built
            self.key = None
            self.program = build(_import_ray().get(holder[0]))
            self.key = key
        return self.program

    def debug(self, key: str, holder: list[Any], work: _Work, batch_free: bool) -> RunState:
        program: _DebugProgram = self._load(key, holder, lambda job: _DebugProgram(job, self.threads))
        return program.run(work, batch_free)

    def calibrate(self, key: str, holder: list[Any], work: _Work, batch_size: int, batch_free: bool) -> Calibration:
        program: _Calibrator = self._load(key, holder, lambda payload: _Calibrator(payload, self.threads))
        return program.run(work, batch_size, batch_free)

    def call(self, key: str, holder: list[Any], item: Any) -> Any:
        fn = self._load(key, holder, _import_ray().cloudpickle.loads)
        if _takes_threads(fn):
            return fn(item, threads=self.threads)
        return fn(item)


def _takes_threads(fn: Callable[..., Any]) -> bool:
    """Whether a mapped task takes ``threads=`` (the worker's CPU count, for the sessions it builds)."""
    try:
        return "threads" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins and some callables have no signature
        return False


_REMOTE: dict[str, Any] = {}


def _remote_worker(ray: Any) -> Any:
    if "worker" not in _REMOTE:
        _REMOTE["worker"] = ray.remote(_Worker)
    return _REMOTE["worker"]


# -- the driver side --------------------------------------------------------------------------------


class _WorkerLost(QuantDebugError):
    """A task lost its worker more than ``max_retries`` times."""


class _Pool:
    """The actors of one call (or of a ``with`` block); a dead one is replaced by a new one in its slot."""

    def __init__(self, make: Callable[[], Any], size: int, describe: str) -> None:
        ray = _import_ray()
        self.make = make
        self.actors = [make() for _ in range(size)]
        refs = [a.ready.remote() for a in self.actors]
        pending = list(refs)
        warned = False
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=READY_WARNING_S)
            if pending and not warned:
                warned = True
                warnings.warn(
                    f"the Ray cluster has placed only {size - len(pending)} of {size} workers ({describe}) after "
                    f"{READY_WARNING_S:.0f} s; still waiting (available: {ray.available_resources()})",
                    stacklevel=4,
                )
        try:
            ray.get(refs)
        except Exception as exc:
            self.close()
            raise ConfigError(
                f"a Ray worker could not start ({exc}); every node needs quantdebug and its dependencies "
                "installed (or pass runtime_env=...)"
            ) from exc

    def replace(self, slot: int, dead: Any) -> None:
        if self.actors[slot] is dead:
            with contextlib.suppress(Exception):
                _import_ray().kill(dead, no_restart=True)
            self.actors[slot] = self.make()

    def close(self) -> None:
        ray = _import_ray()
        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self.actors = []


class _Ordered:
    """Merges debug states in task order, whatever order they finish in, so float64 sums are reproducible."""

    def __init__(self, empty: RunState) -> None:
        self.total = empty
        self.pending: dict[int, RunState] = {}
        self.next = 0

    def add(self, index: int, state: RunState) -> None:
        self.pending[index] = state
        while self.next in self.pending:
            self.total = self.total.merge(self.pending.pop(self.next))
            self.next += 1

    def everything(self) -> RunState:
        total = self.total
        for index in sorted(self.pending):
            total = total.merge(self.pending[index])
        return total


class RayExecutor:
    """Spreads debug runs, calibration and ``map`` over ``num_workers`` Ray actors; results merge exactly.

    ``address=None`` starts a local Ray cluster on first use (``"auto"`` or ``"ray://..."`` joins one; an
    already initialized Ray is used as it is). Each worker reserves ``resources_per_worker`` (default
    ``{"CPU": 1}``) and runs onnxruntime with that many intra-op threads. A task whose worker dies is
    retried on a new worker up to ``max_retries`` times; only completed tasks are merged, once each.

    Datasets are split without being gathered on the driver: a ``ShardedDataset`` into ``shards``
    (default ``num_workers``) shards that the workers read themselves, a Ray Dataset (``ds`` or
    ``ds.iter_rows``) with ``split``; any other dataset is read by the driver and sent in chunks of
    ``chunk_size`` samples, two chunks in flight per worker. Outside a ``with`` block the workers live
    for one call; inside one they are kept, and leaving it also shuts down a cluster this executor started.
    """

    def __init__(
        self,
        address: str | None = None,
        num_workers: int = 2,
        resources_per_worker: Mapping[str, float] | None = None,
        max_retries: int = 3,
        *,
        chunk_size: int = 64,
        shards: int | None = None,
        runtime_env: Mapping[str, Any] | None = None,
    ) -> None:
        self._ray = _import_ray()
        if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1:
            raise ConfigError(f"num_workers must be a positive integer; got {num_workers!r}")
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ConfigError(f"max_retries must be an integer >= 0; got {max_retries!r}")
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise ConfigError(f"chunk_size must be a positive integer; got {chunk_size!r}")
        if shards is not None and (not isinstance(shards, int) or isinstance(shards, bool) or shards < 1):
            raise ConfigError(f"shards must be None or a positive integer; got {shards!r}")
        resources = dict(resources_per_worker) if resources_per_worker is not None else {"CPU": 1.0}
        for name, amount in resources.items():
            if not isinstance(amount, int | float) or isinstance(amount, bool) or amount < 0:
                raise ConfigError(f"resources_per_worker[{name!r}] must be a number >= 0; got {amount!r}")
        self.address = address
        self.num_workers = num_workers
        self.resources_per_worker = resources
        self.max_retries = max_retries
        self.chunk_size = chunk_size
        self.shards = shards
        self.runtime_env = dict(runtime_env) if runtime_env is not None else None
        self.threads = max(1, int(resources.get("CPU", 1.0)))
        self._started = False
        self._keep = 0
        self._pool: _Pool | None = None

    def __repr__(self) -> str:
        return (
            f"RayExecutor(address={self.address!r}, num_workers={self.num_workers}, "
            f"resources_per_worker={self.resources_per_worker!r}, max_retries={self.max_retries})"
        )

    # -- cluster and workers ------------------------------------------------------------------
    def _ensure_cluster(self) -> None:
        ray = self._ray
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"include_dashboard": False}
        if self.address is None:
            cpus = max(os.cpu_count() or 1, math.ceil(self.num_workers * self.resources_per_worker.get("CPU", 1.0)))
            kwargs.update(address="local", num_cpus=cpus)  # "local": a new cluster, never someone else's
        else:
            kwargs["address"] = self.address
        ray.init(**kwargs)
        self._started = True

    def _make_actor(self) -> Any:
        resources = dict(self.resources_per_worker)
        options: dict[str, Any] = {
            "num_cpus": resources.pop("CPU", 1.0),
            "max_restarts": 0,  # a dead worker is replaced by the driver, which knows what it was doing
            "max_task_retries": 0,
        }
        if "GPU" in resources:
            options["num_gpus"] = resources.pop("GPU")
        if "memory" in resources:
            options["memory"] = resources.pop("memory")
        if resources:
            options["resources"] = resources
        if self.runtime_env is not None:
            options["runtime_env"] = self.runtime_env
        return _remote_worker(self._ray).options(**options).remote(self.threads)

    @contextlib.contextmanager
    def _workers(self, tasks: int | None) -> Iterator[_Pool]:
        self._ensure_cluster()
        pool = self._pool
        if pool is None:
            size = self.num_workers if tasks is None or self._keep else max(1, min(tasks, self.num_workers))
            pool = _Pool(self._make_actor, size, f"{self.resources_per_worker} each")
            if self._keep:
                self._pool = pool
        try:
            yield pool
        except BaseException:
            if self._pool is pool:
                self._release()  # kept workers may still be busy with cancelled work: start afresh next time
            raise
        finally:
            if not self._keep:
                pool.close()

    def _release(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def close(self) -> None:
        """Stop the workers, and the Ray cluster if this executor started it."""
        self._release()
        if self._started:
            self._started = False
            self._ray.shutdown()

    def __enter__(self) -> RayExecutor:
        self._keep += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._keep -= 1
        if self._keep == 0:
            self.close()

    # -- scheduling ---------------------------------------------------------------------------
    def _free_cpus(self) -> float:
        return float(self._ray.available_resources().get("CPU", 0.0))

    def _lost(self) -> tuple[type[BaseException], ...]:
        e = self._ray.exceptions
        return (e.RayActorError, e.WorkerCrashedError, e.ObjectLostError, e.NodeDiedError)

    def _dispatch(
        self,
        pool: _Pool,
        method: str,
        key: str,
        holder: list[Any],
        tasks: Iterable[tuple[Any, ...]],
        on_result: Callable[[int, Any], None],
        depth: int = 2,
    ) -> None:
        """Run ``tasks`` (read lazily) on the pool, at most ``depth`` in flight per worker; a task lost with
        its worker goes to a new worker, a task that raises stops everything and its exception is raised."""
        ray = self._ray
        lost = self._lost()
        source = enumerate(tasks)
        exhausted = False
        retry: collections.deque[tuple[int, tuple[Any, ...], int]] = collections.deque()
        inflight: dict[Any, tuple[int, tuple[Any, ...], int, int, Any]] = {}
        load = [0] * len(pool.actors)
        try:
            while True:
                while True:
                    slot = min(range(len(load)), key=load.__getitem__)
                    if load[slot] >= depth:
                        break
                    if retry:
                        index, args, attempts = retry.popleft()
                    elif not exhausted:
                        step = next(source, None)
                        if step is None:
                            exhausted = True
                            continue
                        (index, args), attempts = step, 0
                    else:
                        break
                    actor = pool.actors[slot]
                    ref = getattr(actor, method).remote(key, holder, *args)
                    inflight[ref] = (index, args, attempts, slot, actor)
                    load[slot] += 1
                if not inflight:
                    return
                done, _ = ray.wait(list(inflight), num_returns=1)
                for ref in done:
                    index, args, attempts, slot, actor = inflight.pop(ref)
                    load[slot] -= 1
                    try:
                        value = ray.get(ref)
                    except lost as exc:
                        if attempts >= self.max_retries:
                            raise _WorkerLost(
                                f"task {index} lost its worker {attempts + 1} times (max_retries={self.max_retries}); "
                                f"last: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
                            ) from exc
                        pool.replace(slot, actor)
                        retry.append((index, args, attempts + 1))
                        continue
                    except ray.exceptions.RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        raise (cause if isinstance(cause, BaseException) else exc) from exc
                    on_result(index, value)
        except BaseException:
            for ref in inflight:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            raise

    def _works(self, dataset: Dataset, *, guard: bool) -> tuple[Iterable[_Work], int | None, _Chunks | None]:
        """What the tasks read: shards the workers read themselves, or chunks streamed from the driver."""
        source = dataset.factory
        count = self.shards or self.num_workers
        if isinstance(source, ShardedDataset):
            ref = self._ray.put(source)
            return [_Shard(ref, i, count, dataset.specs, dataset.what) for i in range(count)], count, None
        ray_data = ray_dataset_of(source)
        if ray_data is not None:
            from ray.data.dataset import MaterializedDataset  # optional dependency

            if not isinstance(ray_data, MaterializedDataset) and self._free_cpus() < 1.0:
                self._release()  # the Ray Data pipeline needs a CPU that kept workers would hold
            parts = ray_data.split(count)
            return [_Shard(p, i, count, dataset.specs, dataset.what) for i, p in enumerate(parts)], count, None
        chunks = _Chunks(iter(dataset), self.chunk_size, guard=guard)
        return chunks, None, chunks

    # -- the Executor protocol ------------------------------------------------------------------
    def run_debug(self, job: DebugJob, dataset: Dataset, *, batch_free: bool) -> RunState:
        """The debug run, sharded over the workers; raises RunInterrupted with the merged part as ``.state``."""
        self._ensure_cluster()
        merged = _Ordered(job.empty_state())
        works, count, chunks = self._works(dataset, guard=True)
        holder = [self._ray.put(job)]
        key = f"debug:{uuid.uuid4().hex}"
        with progress_bar("debugging", job.options.progress) as advance:

            def on_result(index: int, state: RunState) -> None:
                merged.add(index, state)
                advance(state.samples)

            try:
                with self._workers(count) as pool:
                    tasks = ((work, batch_free) for work in works)
                    self._dispatch(pool, "debug", key, holder, tasks, on_result)
            except ConfigError:
                raise
            except (KeyboardInterrupt, Exception) as exc:
                raise _interrupted(merged.everything(), exc) from exc
        state = merged.everything()
        if chunks is not None and chunks.error is not None:
            raise _interrupted(state, chunks.error) from chunks.error
        if state.samples == 0:
            error = DatasetError(f"{dataset.what} is empty: it yielded no samples")
            raise _interrupted(state, error) from error
        return state

    def run_calibration(
        self, model: onnx.ModelProto, dataset: Dataset, *, batch_size: int, fingerprint: str
    ) -> Calibration:
        """Calibration statistics of every shard, merged (exactly: counts, min/max and histograms)."""
        self._ensure_cluster()
        batch_free = all(s.batch_free for s in dataset.specs)
        works, count, _ = self._works(dataset, guard=False)
        holder = [self._ray.put((model.SerializeToString(), fingerprint))]
        key = f"calibrate:{uuid.uuid4().hex}"
        parts: list[Calibration] = []
        with progress_bar("calibrating") as advance:

            def on_result(index: int, part: Calibration) -> None:
                parts[:] = [part if not parts else parts[0].merge(part)]
                advance(part.num_samples)

            with self._workers(count) as pool:
                tasks = ((work, batch_size, batch_free) for work in works)
                self._dispatch(pool, "calibrate", key, holder, tasks, on_result)
        if not parts or parts[0].num_samples == 0:
            raise DatasetError(f"{dataset.what} is empty: it yielded no samples")
        return parts[0]

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(item) for item in items]`` on the workers, in submission order. ``fn`` is shipped once per
        call and kept by each worker, so state it builds lazily (sessions) serves all of that worker's items.
        A ``fn`` with a ``threads`` parameter is called ``fn(item, threads=n)``, n the worker's CPUs, for the
        onnxruntime sessions it builds."""
        items = list(items)
        if not items:
            return []
        self._ensure_cluster()
        payload = self._ray.cloudpickle.dumps(fn)
        key = "map:" + hashlib.sha256(payload).hexdigest()
        holder = [self._ray.put(payload)]
        missing = object()
        results: list[Any] = [missing] * len(items)
        with self._workers(len(items)) as pool:
            self._dispatch(pool, "call", key, holder, ((item,) for item in items), results.__setitem__)
        assert all(r is not missing for r in results)
        return results


def _interrupted(state: RunState, cause: BaseException) -> RunInterrupted:
    """The library's RunInterrupted, with the statistics merged so far as ``.state``."""
    reason = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
    error = RunInterrupted(
        f"the debug run stopped after {state.samples} samples ({reason}); the statistics of those samples are "
        "available (a run spread over workers does not resume: run it again to start over)"
    )
    error.state = state  # type: ignore[attr-defined]
    return error
