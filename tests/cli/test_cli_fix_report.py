"""The fix search reaches the HTML report: ``report --fix``, a *.fix.json in the stats folder, ``fix --report``."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from tests import models
from tests.cli.test_cli import ok, one_line_error, run_cli


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a model that needs a fix, its data, the fix's outputs (trace, record, report) and stats."""
    folder = tmp_path_factory.mktemp("fix_report")
    rng = np.random.default_rng(7)
    model, _ = models.wide_range_node(rng)
    onnx.save(model, folder / "model.onnx")
    np.savez(folder / "data.npz", input=rng.standard_normal((6, 3, 16, 16)).astype(np.float32))
    result = run_cli(
        "fix", folder / "model.onnx", "--data", folder / "data.npz", "--levers", "float", "--max-evals", "6",
        "-o", folder / "fixed.onnx", "--trace", folder / "trace.json", "--report", folder / "fix.html", "-q",
    )  # fmt: skip
    assert result.returncode in (0, 3), result.stderr
    ok(run_cli("debug", folder / "model.onnx", "--data", folder / "data.npz", "-o", folder / "stats", "-q"))
    return folder


def _tries(folder: Path) -> list[dict[str, object]]:
    trace = json.loads((folder / "trace.json").read_text())["trace"]
    assert len(trace) >= 3  # the float and int8 baselines and at least one candidate
    return trace


def _assert_shows_trace(html: str, trace: list[dict[str, object]]) -> None:
    assert "Fix search trace" in html
    shown = [t for t in trace if math.isfinite(float(t["quality"]))]  # type: ignore[arg-type]
    assert html.count('<circle class="pt') == len(shown)
    # filled dots are the tries that met the target, as the trace records it
    met = [t for t in shown if t["meets_target"]]
    assert html.count('<circle class="pt accepted"') == len(met) and met, "the float baseline meets any target"
    for i, entry in enumerate(trace):
        if entry in shown:
            assert f"try {i + 1}: quality " in html, entry
            for change in entry["changes"]:  # type: ignore[attr-defined]
                assert change in html


def test_fix_writes_a_report_of_its_search(searched: Path) -> None:
    _assert_shows_trace((searched / "fix.html").read_text(), _tries(searched))


def test_report_takes_the_trace_with_fix(searched: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain.html"
    ok(run_cli("report", searched / "stats", "-o", plain, "-q"))
    assert "Fix search trace" not in plain.read_text()
    with_trace = tmp_path / "with_trace.html"
    ok(run_cli("report", searched / "stats", "--fix", searched / "trace.json", "-o", with_trace, "-q"))
    _assert_shows_trace(with_trace.read_text(), _tries(searched))
    # the record fix writes beside the model works as well, and carries the fixed quality
    with_record = tmp_path / "with_record.html"
    ok(run_cli("report", searched / "stats", "--fix", searched / "fixed.fix.json", "-o", with_record, "-q"))
    _assert_shows_trace(with_record.read_text(), _tries(searched))
    assert "quality after fix" in with_record.read_text()


def test_report_finds_a_fix_record_in_the_stats_folder(searched: Path, tmp_path: Path) -> None:
    stats = tmp_path / "stats"
    shutil.copytree(searched / "stats", stats)
    shutil.copy(searched / "fixed.fix.json", stats / "fixed.fix.json")
    ok(run_cli("report", stats, "-q"))
    _assert_shows_trace((stats / "report.html").read_text(), _tries(searched))
    shutil.copy(searched / "fixed.fix.json", stats / "other.fix.json")
    error = one_line_error(run_cli("report", stats))
    assert "several fix results" in error and "--fix" in error


def test_report_refuses_a_file_that_is_not_a_fix_trace(searched: Path, tmp_path: Path) -> None:
    error = one_line_error(run_cli("report", searched / "stats", "--fix", searched / "stats" / "statistics.json"))
    assert "is not a fix trace" in error and "--trace" in error
