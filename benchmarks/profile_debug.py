#!/usr/bin/env python3
"""Where a debug run's time goes: onnxruntime's own profiler on the debug model, attributed by op type
and by part of the debug graph, plus a pyinstrument profile of ``QuantizationDebugger.run()``.

    python benchmarks/profile_debug.py --model mnv3 --samples 64
    python benchmarks/profile_debug.py --model ocr --samples 16 --batch 1

Needs the artifacts of a run.py run of the same model (the calibration in benchmarks/.cache), or
calibrates on --cal samples itself. Writes benchmarks/profiles/<model>_*.txt.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, CAL_SEED, DEBUG_SEED, HERE, dataset_for, loadavg, model_path

warnings.filterwarnings("ignore")
OUT = HERE / "profiles"


def part_of(node_name: str, op: str) -> str:
    """Which part of the debug graph a node belongs to (names from quantdebug.pipeline.run._debug_model)."""
    if not node_name.startswith("__qd/"):
        return "quantized model"
    parts = node_name.split("/")
    if len(parts) > 1 and parts[1].startswith("t") and parts[1][1:].isdigit():
        return "float twins"
    if parts[1] == "f":
        return "float model (whole-model)"
    if op == "DequantizeLinear":
        return "taps: DequantizeLinear"
    return "statistics (Sub, Reshape, Reduce*, Shape, Concat)"


def debugger(model: str, n: int, cal_n: int, **options: Any) -> Any:
    import quantdebug as qd

    cal_path = CACHE / f"{model}.calibration.json"
    opts = qd.DebugOptions(progress=False, **options)
    debug = dataset_for(model, n, DEBUG_SEED)
    if cal_path.is_file():
        return qd.QuantizationDebugger(
            str(model_path(model)), debug_dataset=debug, calibration=qd.Calibration.load(cal_path), debug_options=opts
        )
    return qd.QuantizationDebugger(
        str(model_path(model)), dataset_for(model, cal_n, CAL_SEED), debug_dataset=debug, debug_options=opts
    )


def feeds(dbg: Any, model: str, n: int, batch: int) -> list[dict[str, np.ndarray]]:
    names = [
        i.name for i in dbg.float_model.graph.input if i.name not in {t.name for t in dbg.float_model.graph.initializer}
    ]
    samples = [dict(zip(names, s)) for s in dataset_for(model, n, DEBUG_SEED)()]
    if batch <= 1:
        return samples
    return [
        {k: np.concatenate([s[k] for s in samples[i : i + batch]], axis=0) for k in names}
        for i in range(0, len(samples), batch)
    ]


def ort_profile(graph: Any, batches: list[dict[str, np.ndarray]], batch: int, threads: int | None) -> dict[str, Any]:
    """Run the debug model under onnxruntime's profiler; sum kernel time by op type and by graph part."""
    import onnxruntime as ort

    from quantdebug.pipeline.run._debug_model import ROWS_INPUT

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 4
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "debug")
        if threads is not None:
            so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(graph.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        rows = np.array([0 if batch > 1 else 1, -1], dtype=np.int64)
        t0 = time.perf_counter()
        for feed in batches:
            sess.run(None, {**feed, ROWS_INPUT: rows})
        wall = time.perf_counter() - t0
        events = json.loads(Path(sess.end_profiling()).read_text())
    by_op: collections.Counter[str] = collections.Counter()
    by_part: collections.Counter[str] = collections.Counter()
    by_part_op: collections.Counter[tuple[str, str]] = collections.Counter()
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        op = e["args"].get("op_name", "?")
        part = part_of(node, op)
        by_op[op] += e["dur"]
        by_part[part] += e["dur"]
        by_part_op[(part, op)] += e["dur"]
    return {"wall_s": wall, "by_op": by_op, "by_part": by_part, "by_part_op": by_part_op}


def table(counter: collections.Counter[Any], total: float, runs: int, top: int = 15) -> list[str]:
    lines = []
    for key, us in counter.most_common(top):
        label = " / ".join(key) if isinstance(key, tuple) else key
        lines.append(f"  {label:60s} {us / 1e3 / runs:9.1f} ms/run {100 * us / total:5.1f}%")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mnv3", choices=["mnv3", "ocr", "tiny"])
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--cal", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-pyinstrument", action="store_true")
    a = p.parse_args()
    OUT.mkdir(exist_ok=True)
    report: list[str] = [f"# {a.model}, {a.samples} samples, batch {a.batch}, threads {a.threads}, load {loadavg()}"]
    dbg = debugger(a.model, a.samples, a.cal, batch_size=a.batch)
    graph = dbg._graph()
    ops = collections.Counter(n.op_type for n in graph.model.graph.node)
    parts = collections.Counter(part_of(n.name, n.op_type) for n in graph.model.graph.node)
    report.append(f"debug model: {len(graph.model.graph.node)} nodes, {len(graph.units)} verified layers")
    report.append("nodes by part: " + ", ".join(f"{k} {v}" for k, v in parts.most_common()))
    report.append("nodes by op: " + ", ".join(f"{k} {v}" for k, v in ops.most_common(12)))
    batches = feeds(dbg, a.model, a.samples, a.batch)
    prof = ort_profile(graph, batches, a.batch, a.threads)
    total = sum(prof["by_part"].values())
    runs = len(batches)
    report.append(
        f"\nonnxruntime profiler: {runs} runs, {prof['wall_s']:.2f} s wall (profiling on), "
        f"kernel time {total / 1e6:.2f} s"
    )
    report.append("\nkernel time by part of the debug graph:")
    report += table(prof["by_part"], total, runs)
    report.append("\nkernel time by op type:")
    report += table(prof["by_op"], total, runs)
    report.append("\nkernel time by part and op type:")
    report += table(prof["by_part_op"], total, runs, top=20)
    if not a.no_pyinstrument:
        try:
            from pyinstrument import Profiler
        except ImportError:
            report.append("\n(pyinstrument not installed: pip install pyinstrument, or run benchmarks/setup_env.sh)")
        else:
            profiler = Profiler(interval=0.005)
            profiler.start()
            dbg.run()
            profiler.stop()
            text = profiler.output_text(unicode=False, color=False, show_all=False)
            report.append("\npyinstrument, QuantizationDebugger.run():\n" + text)
    out = OUT / f"{a.model}_b{a.batch}.txt"
    out.write_text("\n".join(report) + "\n")
    print("\n".join(report))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
