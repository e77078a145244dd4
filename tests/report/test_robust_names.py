"""Names that carry markup or spreadsheet formulas: escaped in HTML, guarded in CSV, kept exactly in JSON."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

import numpy as np
import pytest
from tests import hostile, models
from tests.helpers import dataset
from tests.qdq_structure import float_violations

import quantdebug as qd
from quantdebug.pipeline.plan._select import FORMULA_CHARS, unguard

FORMULAS = [name for name in hostile.HOSTILE_NAMES if name[0] in FORMULA_CHARS]


@pytest.fixture(scope="module")
def run() -> tuple[qd.QuantizationDebugger, dict[str, str]]:
    rng = np.random.default_rng(8)
    model, chosen = hostile.hostile_names(rng)
    feeds = [models.input_feed(model, rng) for _ in range(3)]
    dbg = qd.QuantizationDebugger(model, dataset(feeds))
    dbg.run()
    return dbg, chosen


def _rows_by_node(dbg: qd.QuantizationDebugger) -> set[str]:
    return {r.node_name for r in dbg.layer_rows}


def test_hostile_names_survive_quantization_unchanged(run: tuple[qd.QuantizationDebugger, dict[str, str]]) -> None:
    dbg, chosen = run
    nodes = {n.name for n in dbg.float_model.graph.node}
    assert set(chosen) <= nodes, "markup and formula names are kept as they are, not renamed"
    shown = _rows_by_node(dbg) | {c["node"] for c in dbg.coverage()} | {u for r in dbg.layer_rows for u in r.covers}
    assert set(chosen) <= shown


def test_csv_guards_formula_names_and_unguard_restores_them(
    run: tuple[qd.QuantizationDebugger, dict[str, str]], tmp_path: Path
) -> None:
    dbg, _ = run
    folder = dbg.statistics().save(tmp_path / "stats")
    with open(folder / "layer_statistics.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    cells = [row[col] for row in rows for col in ("op_name", "tensor_name", "node_name")]
    for cell in cells:
        assert cell[:1] not in FORMULA_CHARS, f"a spreadsheet would run {cell!r}"
    restored = {unguard(row["node_name"]) for row in rows} | {unguard(row["tensor_name"]) for row in rows}
    expected = {r.node_name for r in dbg.layer_rows} | {r.tensor_name for r in dbg.layer_rows}
    assert restored == expected
    guarded = [c for c in cells if c.startswith("'")]
    assert guarded, "the fixture has formula-like names in the rows"
    for cell in guarded:
        assert unguard(cell) == cell[1:] and cell[1] in FORMULA_CHARS


def test_json_keeps_hostile_names_exactly(run: tuple[qd.QuantizationDebugger, dict[str, str]], tmp_path: Path) -> None:
    dbg, _ = run
    folder = dbg.statistics().save(tmp_path / "stats")
    json.loads((folder / "statistics.json").read_text(encoding="utf-8"))
    loaded = qd.Statistics.load(folder)
    assert [r.node_name for r in loaded.layers] == [r.node_name for r in dbg.layer_rows]
    assert [r.tensor_name for r in loaded.layers] == [r.tensor_name for r in dbg.layer_rows]


def test_html_report_escapes_hostile_names(run: tuple[qd.QuantizationDebugger, dict[str, str]]) -> None:
    from quantdebug.report import render_html

    dbg, chosen = run
    page = render_html(dbg.statistics(), title=hostile.HOSTILE_NAMES[0])
    assert "<script>alert(1)</script>" not in page
    assert page.lower().count("<script") == 1, "only the report's own script"
    assert html.escape("<script>alert(1)</script>", quote=True) in page
    for name in _rows_by_node(dbg) & set(chosen):
        assert html.escape(name, quote=True) in page
    for name in FORMULAS:
        if '"' in name:
            assert name not in page, "quotes inside names are escaped"


_NAME_GUARD_CASES = [(name, False) for name in hostile.HOSTILE_NAMES] + [
    (name, True)
    for name in hostile.HOSTILE_NAMES
    if name[0] in FORMULA_CHARS  # only these are guarded in CSV
]


@pytest.mark.parametrize(("name", "guard"), _NAME_GUARD_CASES)
def test_denylist_accepts_hostile_name_with_or_without_csv_guard(
    name: str, guard: bool, run: tuple[qd.QuantizationDebugger, dict[str, str]]
) -> None:
    dbg, _ = run
    selector = "'" + name if guard else name
    precisions = qd.QuantizationDebugger.precisions
    dbg.options = qd.DebugOptions(denylisted_nodes=[selector])
    try:
        chosen = precisions(dbg)
        assert chosen[name] == "float"
        quantized = dbg.get_nondebug_quantized_model()
        assert float_violations(quantized, dbg.float_model, name, chosen) == []
    finally:
        dbg.options = qd.DebugOptions()
