"""benchmarks/fix_real_models.py runs end to end on its tiny built-in model and writes its table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_fix_benchmark_tiny_model(tmp_path: Path) -> None:
    results = tmp_path / "FIX_RESULTS.md"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, str(ROOT / "benchmarks" / "fix_real_models.py"), "--models", "tiny"]
    proc = subprocess.run(
        [*cmd, "--results", str(results)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    written = results.read_text()
    for column in ("L quantized nodes", "eval budget", "gap recovered", "float nodes", "evals used", "wall time"):
        assert column in written
    assert "--models tiny" in written and "onnxruntime" in written  # command and versions
    row = json.loads(results.with_suffix(".json").read_text())["rows"][0]
    # the tiny model's one broken node is scale_up (a channel scaled by 1e6); fix names it
    assert row["model"] == "tiny" and "scale_up" in row["float_nodes"] + row["int16_nodes"]
    assert row["evaluations"] <= row["budget"]
    assert row["fixed"] >= row["target"] > row["int8"]
