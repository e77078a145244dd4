"""The benchmark harness runs end to end and prints its table (tiny model, no TensorFlow, no timing checks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS = (
    "tiny CNN: debug run / (float + quantized inference)",
    "tiny CNN: whole-model / per-layer run",
    "tiny CNN: quantize from a stored Calibration / calibrate+quantize",
    "tiny CNN: qdq_loss_debug time / debug run time",
    "tiny CNN: qdq_loss_debug peak RSS / debug run peak RSS",
    "tiny CNN: peak RSS, debug run / float+quantized inference",
    "tiny CNN: one fix candidate (qd.quantize from a stored Calibration, 3 nodes in float)",
)


def test_quick_benchmark_prints_the_table(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    env = dict(os.environ)
    env["QD_BENCH_CACHE"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--no-setup", "--skip-tf"]
    proc = subprocess.run(
        [*cmd, "--results", str(results)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    header = next(line for line in proc.stdout.splitlines() if line.startswith("what "))
    for column in ("samples", "quantdebug", "other", "ratio", "target", "met"):
        assert column in header
    for row in ROWS:
        assert row in proc.stdout, f"missing row {row!r} in:\n{proc.stdout}"
    written = results.read_text()
    assert all(row in written for row in ROWS)
    assert "--quick" in written  # each row names the command that produced it
    assert results.with_suffix(".json").is_file()
