"""Figures a new user can read (issue 16): what 'layers' and 'nodes' count, whole names in the tables,
mean element counts explained, exact-copy layers kept out of the report's median, inf quality in words."""

from __future__ import annotations

import csv
import html
import math
import re
import statistics as pystats
from pathlib import Path

import numpy as np
import onnx
import pytest
from tests import models
from tests.cli.test_cli import fits_80, ok, run_cli

import quantdebug as qd
from quantdebug.report import render_html

WIDTHS = (6, 10, 15)  # the mean element count over these widths is not a whole number

DATA = f"""
import numpy as np

def samples():
    rng = np.random.default_rng(7)
    return [{{"input": rng.standard_normal((1, 3, 8, w)).astype(np.float32)}} for w in {WIDTHS!r}]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One debug run of the variable-width model: (stats folder, stdout)."""
    folder = tmp_path_factory.mktemp("figures")
    onnx.save(models.variable_width(np.random.default_rng(3)), folder / "vw.onnx")
    (folder / "vw_data.py").write_text(DATA)
    args = ("debug", folder / "vw.onnx", "--data", "vw_data:samples", "-o", "stats", "-q", "--top", "0")
    result = ok(run_cli(*args, cwd=folder))
    return folder / "stats", result.stdout


def _csv(stats: Path) -> list[dict[str, str]]:
    with open(stats / "layer_statistics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_summary_says_what_layers_and_nodes_count(run: tuple[Path, str]) -> None:
    stats, text = run
    rows = _csv(stats)
    coverage = qd.Statistics.load(stats).coverage
    verified = sum(1 for c in coverage if c["status"] == "verified")
    assert verified > len(rows), "Relus fused into their Convs: more nodes than layers"
    lines = text.splitlines()
    assert lines[0] == f"{len(rows)} layers verified (per-layer) on {len(WIDTHS)} samples"
    assert lines[1].startswith(f"nodes: {verified} verified")
    assert lines[2] == "  (a layer: one quantized output, one CSV row; its nodes count fused ones too)"


def test_mean_element_counts_are_explained(run: tuple[Path, str]) -> None:
    stats, text = run
    rows = _csv(stats)
    # the CSV keeps TFLite's column: the mean over samples, checked against the shapes themselves
    conv = next(r for r in rows if r["node_name"] == models.LONG_NAME)
    assert float(conv["num_elements"]) == pytest.approx(np.mean([8 * 8 * w for w in WIDTHS]))
    fractional = [r for r in rows if not float(r["num_elements"]).is_integer()]
    assert fractional
    assert f"note: num_elements of {len(fractional)} layers is a mean over samples of different sizes" in text
    page = render_html(qd.Statistics.load(stats))
    assert f"num_elements of {len(fractional)} layers is not a whole number" in html.unescape(page)


def test_long_names_are_shown_whole(run: tuple[Path, str]) -> None:
    _, text = run
    fits_80(text)
    lines = text.splitlines()
    name_lines = [i for i, line in enumerate(lines) if line.strip() == models.LONG_NAME]
    in_denylist = [i for i in name_lines if lines[i - 1].lstrip().startswith("--denylist-nodes")]
    # once above its row in each table (the culprits and TFLite's two), and whole in the denylist if there
    assert len(name_lines) - len(in_denylist) == 3, "once above its row in each table"
    assert all(
        lines[i + 1].split()[0].isdigit() or lines[i + 1].split()[0] == "Conv"
        for i in name_lines
        if i not in in_denylist
    )
    assert ".." not in text  # nothing is cut in the middle


def test_report_median_leaves_exact_copies_out(run: tuple[Path, str]) -> None:
    stats, _ = run
    rows = _csv(stats)
    copies = [r for r in rows if float(r["max_abs_error"]) == 0.0]
    assert {r["op_name"] for r in copies} >= {"Pad", "MaxPool"}, "int8 data movement copies exactly"
    others = [math.sqrt(float(r["mean_squared_error"])) / float(r["scale"]) for r in rows if r not in copies]
    page = html.unescape(render_html(qd.Statistics.load(stats)))
    card = re.search(r"card-v[^>]*>([^<]+)</div><div class=\"card-k\">median rmse/scale \((\d+) exact-copy", page)
    assert card is not None, "the median card says it leaves the copies out"
    assert int(card.group(2)) == len(copies)
    assert float(card.group(1)) == pytest.approx(pystats.median(others), rel=5e-3)  # shown to 3 digits
    assert f"{len(copies)} layers copy their input exactly" in page


def test_fix_summary_says_inf_means_identical_to_float(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    onnx.save(models.conv_relu(rng), tmp_path / "conv.onnx")
    np.savez(tmp_path / "conv.npz", input=rng.standard_normal((2, 3, 16, 16)).astype(np.float32))
    args = ("fix", tmp_path / "conv.onnx", "--data", tmp_path / "conv.npz", "--target", "-1e9", "-o", "f.onnx", "-q")
    result = ok(run_cli(*args, cwd=tmp_path))
    # the default quality is output SQNR against the float model: the float model itself is exact
    assert "quality: float inf (identical to float), int8 " in result.stdout, result.stdout
