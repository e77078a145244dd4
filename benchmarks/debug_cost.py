#!/usr/bin/env python3
"""What a debug run costs against its floor, measured in CPU time (process_time) in one process.

    python benchmarks/debug_cost.py --model mnv3 --samples 100 --threads 1
    python benchmarks/debug_cost.py --model ocr --samples 48 --threads 1 --repeats 2

Reports, for the quantdebug on PYTHONPATH (run it twice, with two trees, to compare versions):
the floor (float + deployed int8 model, sessions made outside the timing) at batch 1, 4 and 16;
a fresh debugger's first run() (debug session creation, batching and fidelity checks included)
and its later runs; the fixed costs alone (debug session creation, deployed session creation);
the debug graph's session runs alone at the debugger's batch; and the per-batch Python work of
absorbing one batch. Threads: onnxruntime intra-op threads for every session (1: CPU time is the
work alone, without a spinning pool).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, CAL_SEED, DEBUG_SEED, dataset_for, loadavg, median, model_path

warnings.filterwarnings("ignore")


def cpu(fn: Any) -> float:
    c0 = time.process_time()
    fn()
    return time.process_time() - c0


def calibration(model: str, n: int) -> Any:
    import quantdebug as qd

    path = CACHE / f"{model}.calibration.json"
    if path.is_file():
        return qd.Calibration.load(path)
    cal = qd.calibrate(str(model_path(model)), dataset_for(model, n, CAL_SEED), progress=False)
    cal.save(path)
    return cal


def stacked(samples: list[dict[str, np.ndarray]], batch: int) -> list[dict[str, np.ndarray]]:
    return [
        {k: np.concatenate([s[k] for s in samples[i : i + batch]], axis=0) for k in samples[0]}
        for i in range(0, len(samples), batch)
    ]


def main() -> int:
    import onnxruntime as ort

    import quantdebug as qd
    from quantdebug.pipeline.run import ROWS_INPUT

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mnv3", choices=["mnv3", "ocr", "tiny"])
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--cal", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=None, help="the debugger's batch_size (default: its own)")
    p.add_argument("--json", default=None, help="also write the numbers here")
    a = p.parse_args()
    threads = a.threads or None
    cal = calibration(a.model, a.cal)
    data = dataset_for(a.model, a.samples, DEBUG_SEED)
    extra = {"batch_size": a.batch} if a.batch else {}
    opts = qd.DebugOptions(progress=False, intra_op_num_threads=threads, **extra)

    def debugger() -> Any:
        return qd.QuantizationDebugger(
            str(model_path(a.model)), debug_dataset=data, calibration=cal, debug_options=opts
        )

    dbg = debugger()
    qdq = dbg.get_nondebug_quantized_model()
    names = [
        i.name for i in dbg.float_model.graph.input if i.name not in {t.name for t in dbg.float_model.graph.initializer}
    ]
    samples = [dict(zip(names, s)) for s in data()]
    so = ort.SessionOptions()
    so.log_severity_level = 4
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    fl_sess = ort.InferenceSession(str(model_path(a.model)), so, providers=["CPUExecutionProvider"])
    q_sess = ort.InferenceSession(qdq.SerializeToString(), so, providers=["CPUExecutionProvider"])
    out: dict[str, Any] = {"model": a.model, "samples": a.samples, "threads": a.threads, "load_start": loadavg()}
    free = all(not isinstance(i.shape[0], int) for i in fl_sess.get_inputs())
    batch_sizes = [1, 4, 16] if free else [1]
    floors: dict[int, list[float]] = {b: [] for b in batch_sizes}
    int8: dict[int, list[float]] = {b: [] for b in batch_sizes}
    first: list[float] = []
    later: list[float] = []
    graph_runs: list[float] = []
    for _ in range(a.repeats):
        for b in batch_sizes:
            feeds = stacked(samples, b)
            floors[b].append(cpu(lambda feeds=feeds: [s.run(None, f) for f in feeds for s in (fl_sess, q_sess)]))
            int8[b].append(cpu(lambda feeds=feeds: [q_sess.run(None, f) for f in feeds]))
        fresh = debugger()
        fresh._graph()  # the debug graph's construction is not part of run()
        first.append(cpu(fresh.run))
        later.append(cpu(fresh.run))
        loop = fresh._run.loop
        batch = fresh.options.batch_size if loop._batching and all(loop._batching.values()) else 1
        rows = np.array([0 if batch > 1 else 1, -1], dtype=np.int64)
        feeds = stacked(samples, batch)
        graph_runs.append(
            cpu(
                lambda feeds=feeds, loop=loop, rows=rows: [
                    loop.session.run(loop.fetch, {**f, ROWS_INPUT: rows}) for f in feeds
                ]
            )
        )
        print(
            f"  floor b1 {floors[1][-1]:.2f} s, first run {first[-1]:.2f} s, later run {later[-1]:.2f} s, "
            f"debug graph alone {graph_runs[-1]:.2f} s, load {loadavg()}",
            flush=True,
        )
    out["debug_batch"] = batch
    out["floor_cpu_s"] = {b: median(v) for b, v in floors.items()}
    out["int8_alone_cpu_s"] = {b: median(v) for b, v in int8.items()}
    out["first_run_cpu_s"] = median(first)
    out["later_run_cpu_s"] = median(later)
    out["debug_graph_runs_cpu_s"] = median(graph_runs)
    # fixed costs alone
    from quantdebug import runtime
    from quantdebug.pipeline.run import debug_session

    graph = dbg._graph()
    level = opts.graph_optimization_level
    out["debug_session_cpu_s"] = median(
        [cpu(lambda: debug_session(graph.model, level=level, threads=threads)) for _ in range(a.repeats)]
    )
    out["deployed_session_cpu_s"] = median(
        [cpu(lambda: runtime.make_session(qdq, level=level, threads=threads)) for _ in range(a.repeats)]
    )
    out["debug_nodes"] = len(graph.model.graph.node)
    out["layers"] = len(graph.units)
    # Python work per batch after the session run: absorbing the statistics into the state
    loop = dbg._run.loop if dbg._run.loop is not None else None
    if loop is None:
        dbg.run()
        loop = dbg._run.loop
    feeds = stacked(samples, batch)
    results = [loop.run_batch(f, batch > 1) for f in feeds]
    state = dbg._run.job().empty_state()
    out["absorb_cpu_s"] = median(
        [
            cpu(
                lambda: [
                    loop._absorb(state, f, r, next(iter(f.values())).shape[0], False, lambda n: None)
                    for f, r in zip(feeds, results)
                ]
            )
            for _ in range(a.repeats)
        ]
    )
    out["load_end"] = loadavg()
    fl = out["floor_cpu_s"][batch_sizes[-1]]
    out["ratio_first_vs_floor"] = out["first_run_cpu_s"] / fl
    out["ratio_later_vs_floor"] = out["later_run_cpu_s"] / fl
    out["ratio_first_vs_floor_same_batch"] = out["first_run_cpu_s"] / out["floor_cpu_s"][batch]
    print(json.dumps(out, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
