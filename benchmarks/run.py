#!/usr/bin/env python3
"""quantdebug's benchmarks in one command: ratios against TensorFlow Lite's QuantizationDebugger,
onnxruntime's qdq_loss_debug and plain onnxruntime inference, measured side by side in one run.

    python benchmarks/run.py                       # set up benchmarks/.venv, then everything
    python benchmarks/run.py --samples 100         # only the 100-sample columns
    python benchmarks/run.py --models ocr --samples 100 300
    python benchmarks/run.py --quick --no-setup    # seconds: tiny model, no TensorFlow (the smoke test)

Every measurement that reports memory runs in its own process. The table is printed and, unless
--quick, written to benchmarks/RESULTS.md (rows keyed by row and sample count; a newer row replaces an
older one, and each row keeps the command, machine and versions that produced it).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _common import CACHE, loadavg  # noqa: E402

VENV_PY = HERE / ".venv" / "bin" / "python"
BEGIN, END = "<!-- BEGIN GENERATED TABLE -->", "<!-- END GENERATED TABLE -->"
SIMD_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
)


# -- environment ---------------------------------------------------------------------------------
def ensure_env(argv: list[str]) -> None:
    """Create benchmarks/.venv (setup_env.sh) and re-run this command inside it."""
    if Path(sys.prefix).resolve() == (HERE / ".venv").resolve():
        return
    print("== setting up benchmarks/.venv (benchmarks/setup_env.sh)", flush=True)
    rc = subprocess.call(["bash", str(HERE / "setup_env.sh")])
    if rc != 0 or not VENV_PY.is_file():
        print("setup_env.sh failed; continuing in the current environment (missing tools are skipped)", flush=True)
        return
    os.execv(str(VENV_PY), [str(VENV_PY), str(Path(__file__).resolve()), *argv])


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def machine() -> dict[str, Any]:
    model, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model in ("?", ""):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = float("nan")
    return {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "flags": " ".join(f for f in SIMD_FLAGS if f in flags) or "-",
        "memory_gb": round(mem_gb, 1),
        "os": f"{platform.system()} {platform.release()}",
    }


def versions() -> dict[str, str]:
    names = ("quantdebug", "onnxruntime", "onnx", "numpy", "tensorflow", "tf2onnx")
    out = {"python": platform.python_version(), **{n: version(n) for n in names}}
    try:
        git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
        if git.returncode == 0 and git.stdout.strip():
            out["quantdebug"] += f" (git {git.stdout.strip()})"
    except OSError:
        pass
    return out


# -- running tasks -------------------------------------------------------------------------------
class Runner:
    def __init__(self, logdir: Path, timeout: float, rebuild: bool = False) -> None:
        self.logdir = logdir
        self.timeout = timeout
        self.rebuild = rebuild
        logdir.mkdir(parents=True, exist_ok=True)

    def __call__(self, task: str, **args: Any) -> dict[str, Any]:
        tag = "_".join([task, *(str(v) for k, v in sorted(args.items()) if k in ("model", "n", "mode"))])
        out = self.logdir / f"{tag}.json"
        log = self.logdir / f"{tag}.log"
        if self.rebuild:  # the results of the last run, as it left them
            return json.loads(out.read_text()) if out.is_file() else {"error": f"no {out.name} to rebuild from"}
        out.unlink(missing_ok=True)
        cmd = [sys.executable, str(HERE / "_worker.py"), task, json.dumps(args), str(out)]
        print(f"   {tag} ...", end="", flush=True)
        t0 = time.perf_counter()
        with open(log, "w") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
            try:
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
            except KeyboardInterrupt:
                proc.kill()
                raise
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.is_file():
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            print(f" failed ({wall:.0f} s): {' | '.join(tail)}", flush=True)
            return {"error": f"{task} failed (exit {proc.returncode}); see {log}"}
        result = json.loads(out.read_text())
        result["wall_s"] = wall
        result["wait4_maxrss_mb"] = usage.ru_maxrss / 1024.0
        print(f" {wall:.0f} s, peak {result.get('process_peak_mb', 0):.0f} MB, load {loadavg()}", flush=True)
        return result


# -- rows ----------------------------------------------------------------------------------------
def fmt_s(x: float | None) -> str:
    return "-" if x is None else (f"{x:.3f} s" if x < 10 else f"{x:.1f} s")


def fmt_mb(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f} MB"


def row(
    rid: str,
    what: str,
    n: int | str,
    ours: str,
    other: str,
    ratio: float | None,
    target: str,
    ok: bool | None,
    note: str = "",
) -> dict[str, Any]:
    return {
        "id": rid,
        "what": what,
        "samples": n,
        "quantdebug": ours,
        "other": other,
        "ratio": None if ratio is None else round(ratio, 3),
        "target": target,
        "met": "-" if ok is None else ("yes" if ok else "NO"),
        "note": note,
    }


def per_sample(x: float | None, n: int) -> str:
    return "" if x is None else f" ({1000 * x / n:.1f} ms/sample)"


def rows_for_model(model: str, n: int, res: dict[str, dict[str, Any]], n_small: int | None) -> list[dict[str, Any]]:
    """The table rows of one model and sample count from the raw task results."""
    rows: list[dict[str, Any]] = []
    qs, mem, tfr, loss, fmem, flow = (
        res.get(k, {}) for k in ("qd_suite", "qd_mem", "tf_suite", "qdq_loss", "floor_mem", "qd_flow_mem")
    )
    label = {"mnv3": "MobileNetV3-Small", "ocr": "PP-OCRv4 rec", "tiny": "tiny CNN"}[model]
    pl = qs.get("per_layer_s")
    if "error" in qs:
        return [row(f"{model}/error", f"{label}: quantdebug suite failed", n, "-", "-", None, "-", None, qs["error"])]
    batch_note = (
        f"debug batch {qs.get('debug_batch')}; {qs.get('layers')} layers; "
        f"load {qs.get('load_before')}->{qs.get('load_after')}"
    )
    if tfr and "error" not in tfr and "skipped" not in tfr:
        r = pl / tfr["run_s"]
        rows.append(
            row(
                f"{model}/tf_run",
                f"{label}: debug run() vs TensorFlow run()",
                n,
                fmt_s(pl) + per_sample(pl, n),
                fmt_s(tfr["run_s"]) + per_sample(tfr["run_s"], n),
                r,
                "<= 0.5",
                r <= 0.5,
                f"TF verifies {tfr.get('layers')} tensors; CPU/wall: quantdebug "
                f"{qs.get('run_cpu_s', 0) / pl:.1f}, TF {tfr.get('run_cpu_s', 0) / tfr['run_s']:.1f}; {batch_note}",
            )
        )
        if qs.get("run_cpu_s") and tfr.get("run_cpu_s"):
            r = qs["run_cpu_s"] / tfr["run_cpu_s"]
            rows.append(
                row(
                    f"{model}/tf_run_cpu",
                    f"{label}: debug run() vs TensorFlow run(), CPU time",
                    n,
                    fmt_s(qs["run_cpu_s"]),
                    fmt_s(tfr["run_cpu_s"]),
                    r,
                    "<= 0.5",
                    r <= 0.5,
                    "process CPU time of the same runs: less sensitive than wall time to other jobs on the machine",
                )
            )
        if tfr.get("tflite_floor_s"):
            r = qs["floor_s"] / tfr["tflite_floor_s"]
            rows.append(
                row(
                    f"{model}/tf_floor",
                    f"{label}: float+int8 inference, onnxruntime vs TFLite (the floors)",
                    n,
                    fmt_s(qs["floor_s"]),
                    fmt_s(tfr["tflite_floor_s"]),
                    r,
                    "-",
                    None,
                    f"onnxruntime batch {qs.get('floor_batch', '?')} (the debugger's), TFLite batch 1, default "
                    "threads; a debug run cannot beat its floor",
                )
            )
        ours = qs["construct_s"] + pl
        theirs = tfr["construct_s"] + tfr["run_s"]
        rows.append(
            row(
                f"{model}/tf_total",
                f"{label}: calibrate+quantize+run vs TF convert+calibrate+run",
                n,
                fmt_s(ours),
                fmt_s(theirs),
                ours / theirs,
                "-",
                None,
                "calibration: same samples for both",
            )
        )
        if n_small is None or n == n_small:
            r = qs["requant_s"] / tfr["requant_s"]
            rows.append(
                row(
                    f"{model}/tf_requant",
                    f"{label}: re-quantize with a denylist vs TF selective quantization",
                    n,
                    fmt_s(qs["requant_s"]),
                    fmt_s(tfr["requant_s"]),
                    r,
                    "<= 0.1",
                    r <= 0.1,
                    "quantdebug: options= then get_nondebug_quantized_model(); TF: new debugger with "
                    "denylisted_ops (re-calibrates)",
                )
            )
        if mem and "error" not in mem:
            tpk = max(tfr["peak_rss_mb"].get("run", 0), tfr["peak_rss_mb"].get("construct", 0))
            qpk = mem["peak_rss_mb"]["run"]
            rows.append(
                row(
                    f"{model}/tf_mem",
                    f"{label}: peak RSS, debug run vs TF debugger",
                    n,
                    fmt_mb(qpk),
                    fmt_mb(tpk),
                    qpk / tpk,
                    "-",
                    None,
                    "each in its own process, imports included",
                )
            )
        if flow and "error" not in flow:
            ours_pk = flow["process_peak_mb"]
            tf_pk = max(v for k, v in tfr["peak_rss_mb"].items() if k != "tflite_floor")
            rows.append(
                row(
                    f"{model}/flow_mem",
                    f"{label}: whole-process peak RSS (prepare, calibrate, both modes, re-quantize) vs TF debugger's",
                    n,
                    fmt_mb(ours_pk),
                    fmt_mb(tf_pk),
                    ours_pk / tf_pk,
                    "<= 0.5",
                    ours_pk / tf_pk <= 0.5,
                    "each in its own process, imports included; TF: construct (convert + calibrate), run, "
                    "selective re-quantization (its TFLite-floor phase left out); quantdebug by phase: "
                    + ", ".join(f"{k} {v:.0f}" for k, v in flow["peak_rss_mb"].items()),
                )
            )
    elif tfr:
        rows.append(
            row(
                f"{model}/tf_run",
                f"{label}: TensorFlow comparisons",
                n,
                "-",
                "-",
                None,
                "-",
                None,
                tfr.get("skipped") or tfr.get("error", ""),
            )
        )
    if loss:
        if "run_s" in loss:
            r = loss["run_s"] / pl
            rows.append(
                row(
                    f"{model}/qdq_loss_time",
                    f"{label}: qdq_loss_debug time / debug run time",
                    n,
                    fmt_s(pl),
                    fmt_s(loss["run_s"]),
                    r,
                    ">= 10",
                    r >= 10,
                    f"{loss.get('tensors_compared')} tensors compared",
                )
            )
            if mem and "error" not in mem:
                qpk = mem["peak_rss_mb"]["run"]
                lpk = loss["peak_rss_mb"]["run"]
                rows.append(
                    row(
                        f"{model}/qdq_loss_mem",
                        f"{label}: qdq_loss_debug peak RSS / debug run peak RSS",
                        n,
                        fmt_mb(qpk),
                        fmt_mb(lpk),
                        lpk / qpk,
                        ">= 10",
                        lpk / qpk >= 10,
                        f"{loss['per_sample_mb']:.0f} MB of activations kept a sample",
                    )
                )
                if flow and "error" not in flow:
                    r = loss["process_peak_mb"] / flow["process_peak_mb"]
                    rows.append(
                        row(
                            f"{model}/qdq_loss_flow_mem",
                            f"{label}: qdq_loss_debug process peak / quantdebug's whole-process peak",
                            n,
                            fmt_mb(flow["process_peak_mb"]),
                            fmt_mb(loss["process_peak_mb"]),
                            r,
                            ">= 10",
                            r >= 10,
                            "quantdebug: prepare, calibrate, both modes, re-quantize in one process",
                        )
                    )
        else:
            est = None
            if mem and "error" not in mem and "estimated_activations_mb" in loss:
                est = (loss["estimated_activations_mb"] + loss["peak_rss_mb"].get("imports", 0)) / mem["peak_rss_mb"][
                    "run"
                ]
            rows.append(
                row(
                    f"{model}/qdq_loss_mem",
                    f"{label}: qdq_loss_debug (not run)",
                    n,
                    "-",
                    f"~{loss.get('estimated_activations_mb', 0) / 1024:.1f} GB (estimate)",
                    est,
                    ">= 10",
                    None if est is None else est >= 10,
                    loss.get("skipped") or loss.get("error", ""),
                )
            )
    if pl is not None:
        fl = qs["floor_s"]
        r = pl / fl
        limit = FLOOR_TARGET.get(model, 1.5)
        rows.append(
            row(
                f"{model}/floor",
                f"{label}: debug run / (float + quantized inference)",
                n,
                fmt_s(pl),
                fmt_s(fl),
                r,
                f"<= {limit}",
                r <= limit,
                f"floor batch {qs.get('floor_batch', '?')}; CPU time: debug run {fmt_s(qs.get('run_cpu_s'))}, floor "
                f"{fmt_s(qs.get('floor_cpu_s'))}; dataset alone {fmt_s(qs.get('data_s'))}; {batch_note}",
            )
        )
        if qs.get("debug_batch", 16) <= 1 and qs.get("floor_b1_s"):
            fb = qs["floor_b1_s"]
            rows.append(
                row(
                    f"{model}/floor_b1",
                    f"{label}: debug run / floor at the debugger's batch (1)",
                    n,
                    fmt_s(pl),
                    fmt_s(fb),
                    pl / fb,
                    f"<= {limit}",
                    pl / fb <= limit,
                    "the debugger could not stack samples on this model, so it ran one at a time",
                )
            )
        wm = qs.get("whole_model_s", math.nan)
        if not math.isnan(wm):
            rows.append(
                row(
                    f"{model}/whole",
                    f"{label}: whole-model / per-layer run",
                    n,
                    fmt_s(pl),
                    fmt_s(wm),
                    wm / pl,
                    "<= 1.5",
                    wm / pl <= 1.5,
                    "",
                )
            )
        if (n_small is None or n == n_small) and not math.isnan(qs.get("calibrate_quantize_s", math.nan)):
            r = qs["quantize_from_calibration_s"] / qs["calibrate_quantize_s"]
            rows.append(
                row(
                    f"{model}/requant_cal",
                    f"{label}: quantize from a stored Calibration / calibrate+quantize",
                    qs.get("cal_n", "-"),
                    fmt_s(qs["quantize_from_calibration_s"]),
                    fmt_s(qs["calibrate_quantize_s"]),
                    r,
                    "<= 0.2 (5x)",
                    r <= 0.2,
                    f"{qs.get('float_nodes')} nodes after pre-processing",
                )
            )
    if (n_small is None or n == n_small) and not math.isnan(qs.get("fix_candidate_s", math.nan)):
        rows.append(
            row(
                f"{model}/fix_candidate",
                f"{label}: one fix candidate (qd.quantize from a stored Calibration, 3 nodes in float)",
                "-",
                fmt_s(qs["fix_candidate_s"]),
                "-",
                None,
                "<= 0.3 s" if model == "ocr" else "-",
                qs["fix_candidate_s"] <= 0.3 if model == "ocr" else None,
                f"{qs.get('float_nodes')} nodes after pre-processing; issue 18",
            )
        )
    if mem and "error" not in mem and fmem and "error" not in fmem:
        qpk, fpk = mem["peak_rss_mb"]["run"], fmem["peak_rss_mb"]["run"]
        rows.append(
            row(
                f"{model}/floor_mem",
                f"{label}: peak RSS, debug run / float+quantized inference",
                n,
                fmt_mb(qpk),
                fmt_mb(fpk),
                qpk / fpk,
                "-",
                None,
                "each in its own process",
            )
        )
    return rows


def memory_rows(model: str, mems: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    ok = {n: m for n, m in mems.items() if m and "error" not in m}
    if len(ok) < 2:
        return []
    small, large = min(ok), max(ok)
    a, b = ok[small]["peak_rss_mb"]["run"], ok[large]["peak_rss_mb"]["run"]
    label = {"mnv3": "MobileNetV3-Small", "ocr": "PP-OCRv4 rec", "tiny": "tiny CNN"}[model]
    return [
        row(
            f"{model}/mem_growth",
            f"{label}: debug run peak RSS at {large} / at {small} samples",
            f"{small}->{large}",
            fmt_mb(a),
            fmt_mb(b),
            b / a,
            "<= 1.10",
            b / a <= 1.10,
            "",
        )
    ]


# -- fix wall time against the code issue 18 measured ---------------------------------------------
FIX_BASELINE = "517e324"  # main when issue 18's figures were taken: "today's code" of its fix row
FIX_MODELS = ("minilm", "ocr_det")
# what must come out the same: the changes fix names and the qualities it measures
FIX_SAME = ("float", "int8", "fixed", "target", "int16_nodes", "float_nodes", "per_channel_nodes",
            "calibration_changes", "clamps", "weight_settings", "evaluations")  # fmt: skip


def baseline_tree(ref: str, logdir: Path) -> Path:
    """The files of commit ``ref`` (git archive), unpacked once under the logs folder."""
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=True)
    tree = logdir / f"baseline-{sha.stdout.strip()}"
    if not (tree / "benchmarks" / "fix_real_models.py").is_file():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def run_fix(tree: Path, model: str, out: Path, timeout: float) -> dict[str, Any]:
    """One model's fix by ``tree``'s own fix_real_models.py (which puts its src first on the path)."""
    log = out.with_suffix(".log")
    cmd = [sys.executable, str(tree / "benchmarks" / "fix_real_models.py"), "--models", model, "--results", str(out)]
    print(f"   fix {model} ({tree.name}) ...", end="", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=tree, timeout=timeout)
        except subprocess.TimeoutExpired:
            code = -1
    wall = time.perf_counter() - t0
    data = out.with_suffix(".json")
    if code != 0 or not data.is_file():
        print(f" failed ({wall:.0f} s); see {log}", flush=True)
        return {"error": f"fix_real_models.py --models {model} failed in {tree}; see {log}"}
    print(f" {wall:.0f} s, load {loadavg()}", flush=True)
    return dict(json.loads(data.read_text())["rows"][0])


def fix_rows(models: list[str], baseline: str, logdir: Path, timeout: float, rebuild: bool) -> list[dict[str, Any]]:
    """Each model's fix by the baseline commit and by this tree, one after the other: wall time and results."""
    rows: list[dict[str, Any]] = []
    tree = baseline_tree(baseline, logdir) if not rebuild else ROOT  # a rebuild only reads the logs
    for model in models:
        results: dict[str, dict[str, Any]] = {}
        for side, root in (("baseline", tree), ("current", ROOT)):
            out = logdir / f"fix_{model}_{side}.md"
            if rebuild:
                data = out.with_suffix(".json")
                results[side] = dict(json.loads(data.read_text())["rows"][0]) if data.is_file() else {"error": "none"}
            else:
                results[side] = run_fix(root, model, out, timeout)
        old, new = results["baseline"], results["current"]
        if "error" in old or "error" in new:
            rows.append(
                row(
                    f"fix_{model}/error",
                    f"fix on {model}",
                    "-",
                    "-",
                    "-",
                    None,
                    "-",
                    None,
                    old.get("error") or new.get("error", ""),
                )
            )
            continue
        differ = [k for k in FIX_SAME if old.get(k) != new.get(k)]
        r = new["fix_seconds"] / old["fix_seconds"]
        rows.append(
            row(
                f"fix_{model}/time",
                f"fix wall time on {model} ({new['description']}), this tree vs {baseline}",
                "-",
                fmt_s(new["fix_seconds"]),
                fmt_s(old["fix_seconds"]),
                r,
                "<= 0.5",
                r <= 0.5,
                f"run one after the other; CPU time {fmt_s(new['fix_cpu_seconds'])} vs "
                f"{fmt_s(old['fix_cpu_seconds'])}; {new['evaluations']} evaluations; quality {new['fixed']:.4f} "
                f"vs {old['fixed']:.4f}",
            )
        )
        rows.append(
            row(
                f"fix_{model}/same",
                f"fix on {model}: same changes and qualities as {baseline}",
                "-",
                "same" if not differ else "differs",
                "-",
                None,
                "same",
                not differ,
                "compared: " + ", ".join(FIX_SAME) if not differ else "differs in: " + ", ".join(differ),
            )
        )
    return rows


# -- output --------------------------------------------------------------------------------------
COLUMNS = ("what", "samples", "quantdebug", "other", "ratio", "target", "met")


def print_table(rows: list[dict[str, Any]]) -> None:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS} if rows else {}
    print()
    print("  ".join(c.ljust(widths[c]) for c in COLUMNS))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in COLUMNS))
    print()


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = ["what", "samples", "quantdebug", "other", "ratio", "target", "met", "note", "run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r.get(c, "")).replace("|", "/") for c in head[:-1]] + [r["run"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


ROW_ORDER = ("tf_run", "tf_run_cpu", "tf_floor", "tf_total", "tf_requant", "qdq_loss_time", "qdq_loss_mem",
             "qdq_loss_flow_mem", "floor", "floor_b1", "whole", "requant_cal", "fix_candidate", "mem_growth",
             "floor_mem", "tf_mem", "flow_mem", "time", "same", "error")  # fmt: skip
MODEL_ORDER = ("mnv3", "ocr", "tiny")  # then fix_<model> (each model's fix is its own row group)
FLOOR_TARGET = {"mnv3": 1.3, "ocr": 1.5}  # issue 18: debug run / (float + int8 inference)


def _row_order(r: dict[str, Any]) -> tuple[int, int, int]:
    model, kind = r["id"].split("/", 1)
    samples = str(r["samples"]).split("->")[-1]
    return (
        MODEL_ORDER.index(model) if model in MODEL_ORDER else 99,
        next((i for i, k in enumerate(ROW_ORDER) if kind == k or kind.startswith(k + "_")), 99),
        int(samples) if samples.isdigit() else 0,
    )


def write_results(path: Path, new_rows: list[dict[str, Any]], run_info: dict[str, Any]) -> None:
    """Merge ``new_rows`` into the JSON store beside ``path`` and regenerate its generated section."""
    store_path = path.with_suffix(".json")
    store: dict[str, Any] = {"runs": {}, "rows": {}}
    if store_path.is_file():
        store = json.loads(store_path.read_text())
    run_id = run_info["id"]
    store["runs"][run_id] = run_info
    replaced = {(r["id"].split("/")[0], str(r["samples"])) for r in new_rows}
    store["rows"] = {
        k: v for k, v in store["rows"].items() if (v["id"].split("/")[0], str(v["samples"])) not in replaced
    }
    for r in new_rows:
        store["rows"][f"{r['id']}@{r['samples']}"] = {**r, "run": run_id}
    used = {r["run"] for r in store["rows"].values()}
    store["runs"] = {k: v for k, v in store["runs"].items() if k in used}
    store_path.write_text(json.dumps(store, indent=1))
    rows = sorted(store["rows"].values(), key=_row_order)
    runs = []
    for rid, info in sorted(store["runs"].items()):
        m, v = info["machine"], info["versions"]
        runs.append(
            f"- **{rid}**: `{info['command']}`  \n"
            f"  {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, flags: {m['flags']}; {m['os']}  \n"
            f"  " + ", ".join(f"{k} {val}" for k, val in v.items()) + "  \n"
            f"  load average at start/end: {info['load_start']} / {info['load_end']}; "
            f"repeats {info['repeats']}; {info['duration_min']:.1f} min"
        )
    generated = "\n".join([BEGIN, "", markdown_table(rows), "", "Runs:", "", *runs, "", END])
    text = path.read_text() if path.is_file() else "# quantdebug benchmark results\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + generated + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + generated + "\n"
    path.write_text(text)


# -- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, nargs="+", default=None, help="debug samples (default 100 1000)")
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        choices=["mnv3", "ocr", "tiny", "fix"],
        help="default: mnv3 ocr (tiny with --quick); fix: qd.fix on real models, this tree vs --fix-baseline",
    )
    p.add_argument("--fix-models", nargs="+", default=list(FIX_MODELS), help="models of fix_real_models.py")
    p.add_argument("--fix-baseline", default=FIX_BASELINE, help="commit whose fix wall time is the baseline")
    p.add_argument(
        "--ocr-samples",
        type=int,
        nargs="+",
        default=None,
        help="debug samples for the PP-OCR recogniser (default 100 300: 1000 takes too long on 2 cores)",
    )
    p.add_argument("--cal", type=int, default=None, help="calibration samples (default 100)")
    p.add_argument("--repeats", type=int, default=None, help="timing repeats, medians reported (default 3)")
    p.add_argument("--repeats-large", type=int, default=None, help="repeats at 1000+ samples (default 2)")
    p.add_argument("--quick", action="store_true", help="tiny model, few samples, no TensorFlow, no RESULTS.md")
    p.add_argument("--skip-tf", action="store_true", help="skip the TensorFlow comparisons")
    p.add_argument("--skip-qdq-loss", action="store_true", help="skip onnxruntime's qdq_loss_debug")
    p.add_argument("--no-setup", action="store_true", help="use this interpreter; do not create benchmarks/.venv")
    p.add_argument("--results", type=Path, default=None, help="RESULTS.md to update (default benchmarks/RESULTS.md)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds for one task")
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="run nothing: recompute the rows of the same --models/--samples from the last run's logs",
    )
    a = p.parse_args(argv)
    if not a.no_setup and not a.quick and not a.rebuild:
        ensure_env(argv)
    models = a.models or (["tiny"] if a.quick else ["mnv3", "ocr"])
    samples = a.samples or ([8] if a.quick else [100, 1000])
    ocr_samples = a.ocr_samples or ([8] if a.quick else [100, 300])
    cal_n = a.cal or (8 if a.quick else 100)
    repeats = a.repeats or (1 if a.quick else 3)
    repeats_large = a.repeats_large or (1 if a.quick else 2)
    results_path = a.results if a.results is not None else (None if a.quick else HERE / "RESULTS.md")
    tf_ok = not a.skip_tf and has("tensorflow") and has("tf2onnx")
    started = time.time()
    info: dict[str, Any] = {
        "id": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": "python benchmarks/run.py " + shlex.join(argv),
        "machine": machine(),
        "versions": versions(),
        "load_start": loadavg(),
        "repeats": f"{repeats} (>=1000 samples: {repeats_large})",
    }
    print(
        f"== {info['machine']['cpu']}, {info['machine']['cores']} cores; load {info['load_start']}; "
        f"{', '.join(f'{k} {v}' for k, v in info['versions'].items())}",
        flush=True,
    )
    logdir = CACHE / ("logs-quick" if a.quick else "logs")
    run = Runner(logdir, a.timeout, a.rebuild)
    info_path = logdir / f"run_info_{'_'.join(models)}.json"
    if a.rebuild:
        if not info_path.is_file():
            print(f"--rebuild: no {info_path} from an earlier run")
            return 1
        info = json.loads(info_path.read_text())
        info["command"] += "  (table rebuilt from its logs by: python benchmarks/run.py " + shlex.join(argv) + ")"
    rows: list[dict[str, Any]] = []
    skip_notes: list[str] = []
    for model in models:
        if model == "fix":
            print(f"== fix on {', '.join(a.fix_models)}: this tree vs {a.fix_baseline}", flush=True)
            rows.extend(fix_rows(a.fix_models, a.fix_baseline, logdir, a.timeout, a.rebuild))
            continue
        if model == "mnv3":
            if not tf_ok:
                note = "TensorFlow/tf2onnx not importable (run benchmarks/setup_env.sh); MobileNetV3-Small skipped"
                print("== " + note)
                skip_notes.append(note)
                continue
            print("== preparing MobileNetV3-Small (Keras, tf2onnx)", flush=True)
            prep = run("prepare")
            if "error" in prep:
                skip_notes.append("MobileNetV3-Small could not be prepared: " + prep["error"])
                continue
        sizes = ocr_samples if model == "ocr" else samples
        mems: dict[int, dict[str, Any]] = {}
        for n in sizes:
            reps = repeats_large if n >= 1000 else repeats
            print(f"== {model}, {n} samples, {reps} repeat(s)", flush=True)
            res: dict[str, dict[str, Any]] = {}
            common = {"model": model, "n": n, "cal": cal_n}
            res["qd_suite"] = run("qd_suite", **common, repeats=reps, deny_op="Add", minimal=model == "ocr")
            res["qd_suite"]["cal_n"] = cal_n
            if "error" not in res["qd_suite"]:
                res["qd_mem"] = mems[n] = run("qd_mem", **common)
                if model == "mnv3" and tf_ok and n == min(sizes):
                    res["qd_flow_mem"] = run("qd_flow_mem", **common, deny_op="Add")
                res["floor_mem"] = run("floor_mem", **common)
                if model == "mnv3" and tf_ok:
                    res["tf_suite"] = run("tf_suite", **common, repeats=reps, deny_op_tf="ADD")
                if not a.skip_qdq_loss and model != "ocr":
                    res["qdq_loss"] = run("qdq_loss", **common)
            rows.extend(rows_for_model(model, n, res, min(sizes)))
        rows.extend(memory_rows(model, mems))
    if not a.rebuild:
        info["load_end"] = loadavg()
        info["duration_min"] = (time.time() - started) / 60
        info_path.write_text(json.dumps(info, indent=1))
    print_table(rows)
    for note in skip_notes:
        print("note: " + note)
    if results_path is not None and rows:
        write_results(results_path, rows, info)
        print(f"wrote {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
