#!/usr/bin/env python3
"""Measure proposed debug-run changes side by side, without editing the library.

Each variant is a QuantizationDebugger on the same model, calibration and samples, whose debug graph
is built with a patched builder class (benchmarks/_variants.py) or whose DebugOptions differ. All
variants and the float+quantized floor are timed round-robin (repeat r runs every variant once), so
load changes hit them alike; medians are reported, with the largest difference of any layer's
statistics from the unpatched debugger's (the changes must not change the numbers).

    python benchmarks/experiments.py --model mnv3 --samples 100 --repeats 3
    python benchmarks/experiments.py --model ocr --samples 48 --variants baseline batch_rows
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _variants
from _common import CACHE, CAL_SEED, DEBUG_SEED, HERE, dataset_for, loadavg, median, model_path

warnings.filterwarnings("ignore")

# R1-R7 of RESULTS.md are in the library now ("baseline"); what remains are options and batch_rows.
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "threads1": {"options": {"intra_op_num_threads": 1}},
    "threads2": {"options": {"intra_op_num_threads": 2}},
    "no_fidelity": {"options": {"check_fidelity": False}},
    "no_batch_check": {"trust_batching": True},
    "batch1": {"options": {"batch_size": 1}},
    "batch16": {"options": {"batch_size": 16}},
    "batch32": {"options": {"batch_size": 32}},
    "opt_extended": {"options": {"graph_optimization_level": "extended"}},
    "opt_basic": {"options": {"graph_optimization_level": "basic"}},
    "batch_rows": {"flags": {"batch_rows": True}},
}
DEFAULT = ["baseline", "no_fidelity", "threads2", "batch1", "batch16", "opt_extended"]


@contextlib.contextmanager
def trusted_batching(on: bool) -> Iterator[None]:
    """Skip the check that stacking samples gives the same statistics (measures what the check costs)."""
    import importlib

    saved = []
    if on:
        for name in ("quantdebug.pipeline.run._run", "quantdebug._debugger"):
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            if hasattr(module, "batching_is_safe"):
                saved.append((module, module.batching_is_safe))
                module.batching_is_safe = lambda run, head: len(head) > 1  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module, original in saved:
            module.batching_is_safe = original  # type: ignore[attr-defined]


def floor(float_path: Path, qdq: Any, dataset: Any, batch: int, threads: int | None) -> None:
    """The float model and the quantized model, each once over the samples, stacked ``batch`` at a time."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    if threads is not None:
        so.intra_op_num_threads = threads
    sessions = [
        ort.InferenceSession(str(float_path), so, providers=["CPUExecutionProvider"]),
        ort.InferenceSession(qdq.SerializeToString(), so, providers=["CPUExecutionProvider"]),
    ]
    names = [i.name for i in sessions[0].get_inputs()]
    pending: list[list[np.ndarray]] = []
    for sample in [*dataset(), None]:
        if sample is not None:
            pending.append(sample)
        if pending and (sample is None or len(pending) == batch):
            feed = dict(zip(names, (np.concatenate(parts, axis=0) for parts in zip(*pending))))
            for s in sessions:
                s.run(None, feed)
            pending = []


THREADS: int | None = None


def make(model: str, n: int, spec: dict[str, Any], calibration: Any) -> Any:
    import quantdebug as qd

    options = {"intra_op_num_threads": THREADS, **spec.get("options", {})}
    opts = qd.DebugOptions(progress=False, **options)
    dbg = qd.QuantizationDebugger(
        str(model_path(model)),
        debug_dataset=dataset_for(model, n, DEBUG_SEED),
        calibration=calibration,
        debug_options=opts,
    )
    flags = dict(spec.get("flags", {}))
    if flags.get("batch_rows"):
        names = [i.name for i in dbg.float_model.graph.input]
        first = next(iter(dataset_for(model, 1, DEBUG_SEED)()))
        flags["batch_sample"] = dict(zip(names, first))
    _variants.install(**flags)
    try:
        dbg._graph()  # built now, with the patched builder, and kept by the debugger
    finally:
        _variants.uninstall()
    return dbg


def max_stat_diff(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> str:
    """Largest relative difference per metric over all layers (stddev's comes from float32 cancellation
    in sqrt(mse - mean^2) on layers whose error is almost constant, so it is shown last)."""
    worst: dict[str, float] = {}
    for tensor, metrics in a.items():
        for name, x in metrics.items():
            y = b.get(tensor, {}).get(name, np.nan)
            if name == "num_elements" or (np.isnan(x) and np.isnan(y)):
                continue
            worst[name] = max(worst.get(name, 0.0), abs(x - y) / max(abs(x), 1e-12))
    short = {"max_abs_error": "max", "mean_error": "mean", "mean_squared_error": "mse", "stddev": "std"}
    return ", ".join(f"{short[k]} {worst.get(k, 0.0):.0e}" for k in short)


def _calibration(model: str, cal_n: int) -> Any:
    import quantdebug as qd

    cal_path = CACHE / f"{model}.calibration.json"
    if cal_path.is_file():
        return qd.Calibration.load(cal_path)
    return qd.calibrate(str(model_path(model)), dataset_for(model, cal_n, CAL_SEED), progress=False)


def memory(a: argparse.Namespace) -> int:
    """--memory: each variant's debug run in a fresh process; its peak RSS during run() only."""
    import json
    import subprocess

    from _common import PeakRss

    if a.one is not None:
        dbg = make(a.model, a.samples, VARIANTS[a.one], _calibration(a.model, a.cal))
        peak = PeakRss()
        peak.phase("construct")
        with trusted_batching(VARIANTS[a.one].get("trust_batching", False)):
            t0 = time.perf_counter()
            dbg.run()
        print(json.dumps({"run_s": time.perf_counter() - t0, "peak": peak.phase("run"), **peak.peaks}))
        return 0
    lines = [
        f"# {a.model}: peak RSS of one debug run, {a.samples} samples, each variant in its own process",
        "",
        "| variant | run() | peak RSS during run() | RSS before run() |",
        "|---|---|---|---|",
    ]
    for v in a.variants:
        cmd = [sys.executable, __file__, "--model", a.model, "--samples", str(a.samples), "--one", v]
        cmd += ["--threads", str(a.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        lines.append(f"| {v} | {r['run_s']:.1f} s | {r['run']:.0f} MB | {r['construct']:.0f} MB |")
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    out_path = HERE / "profiles" / f"{a.model}_memory_{a.samples}.md"
    out_path.parent.mkdir(exist_ok=True)
    out_path.write_text(text + "\n")
    print(text)
    return 0


def main() -> int:
    import onnx

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mnv3", choices=["mnv3", "ocr", "tiny"])
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--cal", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=DEFAULT, choices=sorted(VARIANTS))
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra_op threads of every variant and the floor (default 1: CPU time then measures the work alone); "
        "0 for onnxruntime's default",
    )
    p.add_argument("--memory", action="store_true", help="peak RSS of one run per variant, each in its own process")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one variant's memory run
    a = p.parse_args()
    global THREADS
    THREADS = None if a.threads == 0 else a.threads
    if a.one is not None or a.memory:
        return memory(a)
    calibration = _calibration(a.model, a.cal)
    debuggers = {v: make(a.model, a.samples, VARIANTS[v], calibration) for v in a.variants}
    qdq = next(iter(debuggers.values())).get_nondebug_quantized_model()
    qdq_path = CACHE / f"{a.model}.qdq.onnx"
    if not qdq_path.is_file():
        onnx.save(qdq, str(qdq_path))
    times: dict[str, list[float]] = {v: [] for v in [*a.variants, "floor"]}
    cpu: dict[str, list[float]] = {v: [] for v in [*a.variants, "floor"]}
    load = [loadavg()]
    debug = dataset_for(a.model, a.samples, DEBUG_SEED)
    for r in range(a.repeats):
        for v, dbg in debuggers.items():
            with trusted_batching(VARIANTS[v].get("trust_batching", False)):
                t0, c0 = time.perf_counter(), time.process_time()
                dbg.run()
                times[v].append(time.perf_counter() - t0)
                cpu[v].append(time.process_time() - c0)
            print(f"  repeat {r} {v:16s} {times[v][-1]:7.2f} s, CPU {cpu[v][-1]:7.2f} s, load {loadavg()}", flush=True)
        t0, c0 = time.perf_counter(), time.process_time()
        floor(model_path(a.model), qdq, debug, 16, a.threads)
        times["floor"].append(time.perf_counter() - t0)
        cpu["floor"].append(time.process_time() - c0)
        print(f"  repeat {r} {'floor':16s} {times['floor'][-1]:7.2f} s, CPU {cpu['floor'][-1]:7.2f} s", flush=True)
        load.append(loadavg())
    base_stats = debuggers["baseline"].layer_statistics if "baseline" in debuggers else None
    fl, fl_cpu = median(times["floor"]), median(cpu["floor"])
    base = median(times["baseline"]) if "baseline" in times else float("nan")
    base_cpu = median(cpu["baseline"]) if "baseline" in cpu else float("nan")
    lines = [
        f"# {a.model}: {a.samples} samples, {a.repeats} repeats round-robin, load {min(load)}-{max(load)}, "
        f"intra_op threads {a.threads if a.threads is not None else 'default'} (unless the variant sets them)",
        f"floor (float + quantized, batch 16): wall {fl:.2f} s, CPU {fl_cpu:.2f} s",
        "",
        "| variant | CPU time (median) | CPU vs baseline | CPU vs floor | wall (median) | wall vs baseline "
        "| debug nodes | max rel. diff of statistics | fidelity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v, dbg in debuggers.items():
        t, c = median(times[v]), median(cpu[v])
        diff = max_stat_diff(base_stats, dbg.layer_statistics) if base_stats is not None else "-"
        nodes = len(dbg._graph().model.graph.node)
        lines.append(
            f"| {v} | {c:.2f} s ({1000 * c / a.samples:.1f} ms/sample) | {c / base_cpu:.2f} | {c / fl_cpu:.2f} | "
            f"{t:.2f} s | {t / base:.2f} | {nodes} | {diff} | {dbg.fidelity} |"
        )
    text = "\n".join(lines)
    print("\n" + text)
    out = HERE / "profiles" / f"{a.model}_experiments_{a.samples}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n\nraw wall times: " + repr(times) + "\n\nraw CPU times: " + repr(cpu) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
