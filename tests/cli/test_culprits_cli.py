"""``quantdebug debug`` prints the culprits first and draws its suggested denylist from them (a real subprocess)."""

from __future__ import annotations

import json
import os
import shlex
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


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "quantdebug.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=180
    )


def test_debug_prints_the_suggested_config_and_the_quantize_command_that_applies_it(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    model, data, culprit, _ = SHAPES["depthwise_spread"](rng)
    onnx.save(model, tmp_path / "model.onnx")
    np.savez(tmp_path / "data.npz", **{k: np.concatenate([d[k] for d in data]) for k in data[0]})
    debug = _cli("debug", tmp_path / "model.onnx", "--data", tmp_path / "data.npz", "-o", tmp_path / "stats", "-q")
    assert debug.returncode == 0, debug.stderr
    lines = debug.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("Suggested config"))
    assert next(i for i, line in enumerate(lines) if line.startswith("Suggested denylist")) < head
    saved = json.loads((tmp_path / "stats" / "suggested_config.json").read_text())
    stats = qd.Statistics.load(tmp_path / "stats")
    suggestion = stats.extras["culprits"]["suggestion"]
    assert qd.QuantConfig.from_dict(saved) == eval(suggestion["code"], {"QuantConfig": qd.QuantConfig})
    assert culprit in saved["per_channel_nodes"]
    start = next(i for i in range(head, len(lines)) if lines[i].strip().startswith("quantdebug quantize"))
    end = next(i for i in range(start, len(lines)) if not lines[i].endswith("\\"))
    args = shlex.split(" ".join(line.removesuffix("\\") for line in lines[start : end + 1]))[2:]
    assert args[args.index("--config") + 1] == str(tmp_path / "stats" / "suggested_config.json")
    args[args.index("-o") + 1] = str(tmp_path / "suggested.onnx")
    quantize = _cli("quantize", *args, "-q")
    assert quantize.returncode == 0, quantize.stderr
    # the written model has what the config asks for: the culprit's weight has one scale per channel
    written = onnx.load(tmp_path / "suggested.onnx")
    scales = {i.name: i for i in written.graph.initializer}
    assert int(np.prod(scales[f"{culprit}.weight_scale"].dims)) == 8  # the depthwise conv's 8 channels


def test_quantize_refuses_a_config_that_is_not_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    onnx.save(SHAPES["depthwise_spread"](np.random.default_rng(0))[0], tmp_path / "model.onnx")
    result = _cli("quantize", tmp_path / "model.onnx", "--config", tmp_path / "config.json", "-o", tmp_path / "q.onnx")
    assert result.returncode != 0 and "is not JSON" in result.stderr
