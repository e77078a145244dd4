#!/usr/bin/env python3
"""The debug run of one small model over the same samples in one process and on 1 and 2 Ray workers.

python benchmarks/ray_scaling.py                 # 2000 samples of tests/models.py's mobilenetv3_block
python benchmarks/ray_scaling.py --samples 500 --repeat 1
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests import models  # noqa: E402

import quantdebug as qd  # noqa: E402
from quantdebug.executors import ShardedDataset  # noqa: E402
from quantdebug.executors._ray import RayExecutor  # noqa: E402

SEED = 3
SHAPE = (1, 3, 32, 32)

MULTI_NODE = """\
On a multi-node cluster the same code scales with the number of worker CPUs, not with this machine's:
run it with executor=qd.RayExecutor(address="auto", num_workers=N, resources_per_worker={"CPU": c}) and
each of the N actors reserves c CPUs somewhere in the cluster, builds its onnxruntime sessions once with
c intra-op threads, and returns only sums and counts (a few KB per task), so the driver's merge is
negligible and the speed-up stays close to N x (c-thread throughput) as long as the data keep up. The
data path decides that: a ShardedDataset (or a Ray Dataset, split with ds.split) is read by the workers
themselves, next to their shard, and scales; the fallback streams every sample from the driver, so the
driver's read/validate rate and its network link become the ceiling once a few nodes are added. Fixed
costs do not shrink with N: cluster connection, worker start (imports and session build, seconds per
worker, in parallel) and one batching check per task; they are what makes runs of a few hundred samples
gain little, while runs of thousands of samples or large models approach linear scaling. Every node needs
quantdebug installed (or runtime_env={"pip": [...]} / a working_dir); a worker lost with its node is
replaced and its task rerun, and only completed tasks are merged, so results stay exactly those of one
process."""


def samples(n: int) -> Callable[[int, int], Iterator[list[np.ndarray]]]:
    """Shard ``shard`` of ``count`` of ``n`` fixed samples; sample i comes from its own seed, wherever it is made."""

    def factory(shard: int, count: int) -> Iterator[list[np.ndarray]]:
        for i in range(shard, n, count):
            yield [np.random.default_rng([SEED, i]).standard_normal(SHAPE).astype(np.float32)]

    return factory


def _spin(_: int) -> float:
    a = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    start = time.perf_counter()
    for _ in range(1500):
        a = (a @ a) / np.float32(256.0)
    return time.perf_counter() - start


def machine_ceiling() -> float:
    """What two processes can gain here at all: 2 x the work in 2 processes vs 1 x in 1 (2.0 on two free cores)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update(dict.fromkeys(saved, "1"))  # one thread per process, as each Ray worker has
    try:
        pool = context.Pool(2)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    with pool:
        pool.map(_spin, [0, 1])  # warm both
        start = time.perf_counter()
        pool.map(_spin, [0])
        one = time.perf_counter() - start
        start = time.perf_counter()
        pool.map(_spin, [0, 1])
        two = time.perf_counter() - start
    return 2 * one / two


def timed(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the best is reported")
    args = parser.parse_args()
    import ray

    model = models.mobilenetv3_block(np.random.default_rng(SEED))
    factory = samples(args.samples)
    calibration = qd.calibrate(model, lambda: factory(0, 1), progress=False)

    def debugger(source: object, threads: int | None = None) -> qd.QuantizationDebugger:
        options = qd.DebugOptions(progress=False, intra_op_num_threads=threads)
        return qd.QuantizationDebugger(model, debug_dataset=source, calibration=calibration, debug_options=options)

    sharded = debugger(ShardedDataset(factory))
    streamed = debugger(lambda: factory(0, 1))  # a plain callable: the driver reads it and sends chunks
    rows: list[tuple[str, int | str, float]] = []
    rows.append(("in one process, onnxruntime default threads", "-", timed(sharded.run, args.repeat)))
    reference = sharded.layer_statistics
    one_thread = debugger(ShardedDataset(factory), threads=1)
    rows.append(("in one process, 1 onnxruntime thread", "-", timed(one_thread.run, args.repeat)))

    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    cluster_s = time.perf_counter() - start
    starts: dict[int, float] = {}
    try:
        for workers in (1, 2):
            with RayExecutor(num_workers=workers) as executor:
                start = time.perf_counter()
                executor.map(abs, [0] * workers)  # start the kept workers (imports; sessions come per run)
                starts[workers] = time.perf_counter() - start
                for label, run in (("Ray, ShardedDataset", sharded), ("Ray, streamed from the driver", streamed)):

                    def spread(run: qd.QuantizationDebugger = run, executor: RayExecutor = executor) -> None:
                        run.run(executor=executor)

                    rows.append((label, workers, timed(spread, args.repeat)))
                    for tensor, metrics in reference.items():  # the merged statistics are the single run's
                        got = run.layer_statistics[tensor]
                        assert all(abs(got[m] - v) <= 1e-9 * abs(v) + 1e-12 for m, v in metrics.items()), tensor
    finally:
        ray.shutdown()

    ceiling = machine_ceiling()
    one = {label: wall for label, w, wall in rows if w == 1}
    print(
        f"\ndebug run, mobilenetv3_block {SHAPE}, {args.samples} samples, best of {args.repeat}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, ray {ray.__version__}"
    )
    print(f"{'mode':<46} {'workers':>7} {'wall s':>8} {'samples/s':>10} {'vs 1 worker':>12}")
    for label, count, wall in rows:
        ratio = f"{one[label] / wall:.2f}x" if label in one else ""
        print(f"{label:<46} {count!s:>7} {wall:8.2f} {args.samples / wall:10.0f} {ratio:>12}")
    print(
        f"this machine's ceiling: 2 processes doing 2x a numpy matmul loop get {ceiling:.2f}x the throughput of 1 "
        "(2.00x on two free cores)"
    )
    print(
        f"not in the rows: starting the local cluster {cluster_s:.1f} s; starting the workers "
        + ", ".join(f"{n} worker{'s' * (n > 1)} {took:.1f} s" for n, took in starts.items())
        + " (once per `with RayExecutor(...)` block, or per call outside one)"
    )
    print()
    print(MULTI_NODE)


if __name__ == "__main__":
    main()
