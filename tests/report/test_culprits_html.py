"""Rich HTML in notebooks (``_repr_html_``) and the Model Explorer overlay coloured by impact."""

from __future__ import annotations

import dataclasses
import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.fix.culprit_shapes import SHAPES

import quantdebug as qd
from quantdebug.report import explorer_node_data, save_explorer_node_data

SCRIPT = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def measured() -> tuple[qd.QuantizationDebugger, pd.DataFrame]:
    model, data, _, _ = SHAPES["softmax_mask"](np.random.default_rng(0))
    debugger = qd.QuantizationDebugger(model, lambda: iter(data), debug_options=qd.DebugOptions(progress=False))
    debugger.run()
    return debugger, debugger.culprits(samples=2)


def test_the_culprits_frame_is_a_dataframe_that_renders_impact_bars(
    measured: tuple[qd.QuantizationDebugger, pd.DataFrame],
) -> None:
    _, frame = measured
    page = frame._repr_html_()
    assert page.index("Likely culprits") < page.index("mask_add") < page.index("softmax")
    assert page.count('<svg class="impact"') == len(frame)
    top = frame.iloc[0]
    assert f'width="{top["impact"] * 120:.1f}"' in page  # the bar is the impact, 120 px for 1.0
    assert html.escape(top["suggested_change"]) in page
    assert isinstance(frame.head(3), pd.DataFrame) and type(frame.head(3)).__name__ == "CulpritFrame"


def test_statistics_and_fix_result_render_in_notebooks(
    measured: tuple[qd.QuantizationDebugger, pd.DataFrame],
) -> None:
    debugger, _ = measured
    stats = debugger.statistics()
    page = stats._repr_html_()
    assert page.index("Likely culprits") < page.index("Worst layers by rmse/scale")
    worst = max(stats.layers, key=lambda r: r.rmse_over_scale)
    assert html.escape(worst.node_name) in page.split("Worst layers by rmse/scale")[1]
    hostile = qd.Statistics([dataclasses.replace(stats.layers[0], node_name=SCRIPT)], stats.metric_names)
    assert SCRIPT not in hostile._repr_html_() and html.escape(SCRIPT) in hostile._repr_html_()
    result = debugger.fix(max_evals=4)
    fix_page = result._repr_html_()
    assert html.escape(result.summary()) in fix_page
    assert all(html.escape(str(r["node_name"])) in fix_page for r in result.ranking[:3])


def test_model_explorer_reads_the_impact_overlay_with_its_own_node_data_classes(
    measured: tuple[qd.QuantizationDebugger, pd.DataFrame], tmp_path: Path
) -> None:
    dacite = pytest.importorskip("dacite")  # model-explorer's own dependency, which it loads graphs with
    from model_explorer.node_data_builder import GraphNodeData

    debugger, frame = measured
    stats = debugger.statistics()
    path = save_explorer_node_data(stats, tmp_path / "impact.json", "impact")
    data = json.loads(path.read_text(encoding="utf-8"))
    ((graph_id, graph),) = data.items()
    assert graph_id == stats.provenance["graph_name"]
    parsed = dacite.from_dict(GraphNodeData, graph, config=dacite.Config(strict=True))
    written = json.loads(parsed.to_json_string())  # the tool's defaults added, nothing of ours lost or renamed
    assert {k: written[k] for k in graph} == graph
    expected = {n: v for n, v in zip(frame["node_name"], frame["impact"])}
    assert {k: r.value for k, r in parsed.results.items()} == pytest.approx(expected)
    top = max(parsed.results, key=lambda k: parsed.results[k].value)
    colour = next(t.bgColor for t in parsed.thresholds if parsed.results[top].value <= t.value)
    assert top == frame.iloc[0]["node_name"] and colour == parsed.thresholds[-1].bgColor
    # without a measured impact, nothing is coloured
    unmeasured = [dataclasses.replace(r, impact=math.nan) for r in stats.layers]
    overlay = explorer_node_data(qd.Statistics(unmeasured, stats.metric_names), "impact", graph_id=graph_id)
    assert overlay[graph_id]["results"] == {}


def test_the_report_opens_with_the_suggested_config_as_copyable_escaped_code(
    measured: tuple[qd.QuantizationDebugger, pd.DataFrame], tmp_path: Path
) -> None:
    debugger, frame = measured
    stats = debugger.statistics()
    page = qd.report.render_html(stats)
    suggestion = frame.attrs["suggestion"]
    assert suggestion["nodes"] and "tensor_clamps" in suggestion["code"]
    code = f"<code class='change'>{html.escape(suggestion['code'])}</code>"
    head = page.index("Suggested config")
    assert page.index("Suggested denylist") < head < page.index(code, head)  # (the table's row has it too)
    culprits = dict(stats.extras["culprits"])
    culprits["suggestion"] = {**suggestion, "code": f"QuantConfig(per_channel_nodes=[{SCRIPT!r}])"}
    hostile = dataclasses.replace(stats, extras={**stats.extras, "culprits": culprits})
    page = qd.report.render_html(hostile)
    assert SCRIPT not in page and html.escape(f"[{SCRIPT!r}]") in page
