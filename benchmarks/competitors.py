"""The competing toolkits on the benchmark's own models, data and metric, side by side with ``fix``.

Each tool runs in its own environment (``benchmarks/setup_competitors.sh``: AMD Quark and NNCF in
``benchmarks/.venv-competitors``, AIMET-ONNX in ``benchmarks/.venv-aimet``), never in quantdebug's,
through ``_competitor_worker.py``. The model each writes is scored here with the case's own
``eval_fn`` on this process's onnxruntime, so every row is measured by the same code:

    python benchmarks/fix_real_models.py --models efficientnet_lite0 --competitors all

A tool whose environment is missing, or that fails, gets a row that says so instead of a number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_competitor_worker.py"
ENVS = {"quark": HERE / ".venv-competitors", "nncf": HERE / ".venv-competitors", "aimet": HERE / ".venv-aimet"}
TOOLS = (
    "quark_minmax",
    "quark_cle",
    "quark_adaround",
    "quark_adaquant",
    "nncf_quantize",
    "nncf_accuracy_control",
    "aimet_cle",
    "aimet_adaround",
)
SELF_VALIDATING = ("nncf_accuracy_control",)  # these call the metric themselves
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
TIMEOUT_S = 1800


def weight_ops_out_of_int8(model: onnx.ModelProto) -> tuple[int, int]:
    """(weight ops whose activation input is not dequantized from an integer tensor, all weight ops)."""
    produced_by = {o: n.op_type for n in model.graph.node for o in n.output}
    ops = [n for n in model.graph.node if n.op_type in WEIGHT_OPS]
    floating = [n for n in ops if produced_by.get(n.input[0]) != "DequantizeLinear"]
    return len(floating), len(ops)


def _stack(feeds: Iterable[Sequence[np.ndarray] | dict[str, np.ndarray]], names: list[str]) -> dict[str, np.ndarray]:
    rows = [dict(zip(names, f)) if not isinstance(f, dict) else f for f in feeds]
    return {n: np.stack([np.asarray(r[n]) for r in rows]) for n in names}


def run_competitors(
    case: Any,
    tools: Sequence[str],
    echo: Callable[[str], None],
    workdir: Path | None = None,
) -> list[dict[str, Any]]:
    """One row per tool: quality by ``case.eval_fn``, weight ops left in float, evaluations, wall time."""
    from quantdebug.runtime import make_session

    work = Path(workdir or tempfile.mkdtemp(prefix="qd-competitors-"))
    work.mkdir(parents=True, exist_ok=True)
    model = case.model if isinstance(case.model, onnx.ModelProto) else onnx.load(case.model)
    float_path = work / f"{case.name}_float.onnx"
    onnx.save(model, str(float_path))
    names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    arrays = {f"calib/{k}": v for k, v in _stack(case.representative(), names).items()}
    metric = "top1_agreement"
    if getattr(case, "validation", None) is not None:
        feeds, metric, reference = case.validation
        arrays.update({f"eval/{k}": v for k, v in _stack(feeds, names).items()})
        arrays["reference"] = reference
    else:  # only the accuracy-control tool reads these
        arrays.update({f"eval/{k}": v for k, v in _stack(case.debug(), names).items()})
        arrays["reference"] = np.zeros(1)
    data_path = work / f"{case.name}_data.npz"
    np.savez(data_path, **arrays)
    rows = []
    for tool in tools:
        env = ENVS[tool.split("_")[0]]
        python = env / "bin" / "python"
        row: dict[str, Any] = {"model": case.name, "tool": tool}
        if tool in SELF_VALIDATING and getattr(case, "validation", None) is None:
            row["error"] = "needs the case's validation data and metric (Case.validation)"
            rows.append(row)
            continue
        if not python.exists():
            row["error"] = f"{env.name} missing: run benchmarks/setup_competitors.sh"
            rows.append(row)
            echo(f"  {tool}: skipped ({row['error']})")
            continue
        out, result = work / f"{case.name}_{tool}.onnx", work / f"{case.name}_{tool}.json"
        command = [str(python), str(WORKER), "--tool", tool, "--model", str(float_path), "--data", str(data_path)]
        command += ["--out", str(out), "--result", str(result), "--metric", metric]
        t0 = time.perf_counter()
        env_vars = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        proc = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env_vars, cwd=work)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            row.update(error=" | ".join(tail)[-400:], wall_s=wall)
            rows.append(row)
            echo(f"  {tool}: failed after {wall:.0f} s: {row['error']}")
            continue
        info = json.loads(result.read_text())
        quantized = onnx.load(str(out))
        floating, total = weight_ops_out_of_int8(quantized)
        try:
            quality = float(case.eval_fn(make_session(quantized, what=f"{tool} model")))
        except Exception as exc:  # a model the tool wrote that onnxruntime cannot run is a result too
            # fair to the tool: a model whose only fault is wrong shape annotations (Quark's AdaRound
            # on the detector writes 0-sized dims) is scored without them, and the row says so
            del quantized.graph.value_info[:]
            try:
                quality = float(case.eval_fn(make_session(quantized, what=f"{tool} model")))
                row["note"] = "its model runs only with its value_info (shape annotations) removed"
            except Exception:
                quality, row["error"] = float("nan"), f"its model does not run: {exc}"[:400]
        row.update(
            quality=quality,
            weight_ops_in_float=floating,
            weight_ops=total,
            evaluations=int(info.get("evaluations", 0)),
            wall_s=float(info.get("wall_s", wall)),
            cpu_s=float(info.get("cpu_s", float("nan"))),
            settings=info.get("settings", ""),
        )
        rows.append(row)
        echo(f"  {tool}: quality {quality:.4f}, {floating}/{total} weight ops in float, {row['wall_s']:.0f} s")
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = "| model | tool | quality | weight ops in float | evaluations | wall time | notes |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "quality" not in r:
            lines.append(f"| {r['model']} | {r['tool']} | n/a | | | | {r.get('error', '')} |")
            continue
        lines.append(
            f"| {r['model']} | {r['tool']} | {r['quality']:.4f} | {r['weight_ops_in_float']} of {r['weight_ops']} "
            f"| {r['evaluations']} | {r['wall_s']:.0f} s | {r.get('error', r.get('note', r.get('settings', '')))} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit("run through benchmarks/fix_real_models.py --competitors")
