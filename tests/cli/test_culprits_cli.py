"""``quantdebug debug`` prints the culprits first and draws its suggested denylist from them (a real subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from tests.fix.culprit_shapes import SHAPES

import quantdebug as qd

ROOT = Path(__file__).resolve().parents[2]


def _debug(tmp_path: Path, rng: np.random.Generator, *extra: str) -> tuple[str, str, list[str]]:
    model, data, culprit, _ = SHAPES["softmax_mask"](rng)
    onnx.save(model, tmp_path / "model.onnx")
    np.savez(tmp_path / "data.npz", **{k: np.concatenate([d[k] for d in data]) for k in data[0]})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    args = ["debug", tmp_path / "model.onnx", "--data", tmp_path / "data.npz", "-o", tmp_path / "stats", "-q", *extra]
    result = subprocess.run(
        [sys.executable, "-m", "quantdebug.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=180
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, culprit, [n.name for n in model.graph.node]


@pytest.mark.parametrize("mode", ["per-layer", "whole-model"])
def test_debug_prints_the_culprits_first_and_suggests_denylisting_them(
    mode: str, tmp_path: Path, rng: np.random.Generator
) -> None:
    text, culprit, nodes = _debug(tmp_path, rng, "--mode", mode)
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("Likely culprits (by effect on the outputs)"))
    assert first < next(i for i, line in enumerate(lines) if line.startswith("Worst layers by rmse/scale"))
    ranked = lines[first + 4].split()  # after the title, the SQNR line and the two header lines
    assert ranked[:2] == ["1", culprit]
    # the reason and the change to try follow the row, the code wrapped where it would not fit
    assert lines[first + 5].strip().startswith("range set by a sentinel value; try: QuantConfig(tensor_clamps=[(")
    assert lines[first + 6].strip().startswith('"mask_add_out",')
    denylist = next(i for i, line in enumerate(lines) if line.startswith("Suggested denylist"))
    # the Softmax reads the culprit: onnxruntime keeps the culprit's output in int8 unless it is denylisted too
    assert first < denylist and lines[denylist + 1].split() == ["--denylist-nodes", f"{culprit},softmax"]
    # what the CLI printed is what the statistics hold, impact column included
    stats = qd.Statistics.load(tmp_path / "stats")
    assert stats.extras["culprits"]["denylist"] == [culprit, "softmax"]
    impact = {r.node_name: r.impact for r in stats.layers}
    assert impact[culprit] == max(impact.values()) and len(impact) < len(nodes) + 1


def test_debug_without_culprits_falls_back_to_the_tutorial_rule(tmp_path: Path, rng: np.random.Generator) -> None:
    text, _, _ = _debug(tmp_path, rng, "--culprit-samples", "0")
    assert "Likely culprits" not in text and "Worst layers by rmse/scale" in text
    assert "Suggested denylist" in text and "rmse/scale > 0.7" in text
    assert "culprits" not in qd.Statistics.load(tmp_path / "stats").extras
