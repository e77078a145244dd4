"""The report layer: HTML (escaping, charts, offline, real headless chromium), notebook plots, Model Explorer."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.util
import io
import json
import math
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import quantdebug as qd
from quantdebug.config import DEFAULT_METRICS
from quantdebug.errors import QuantDebugError
from quantdebug.pipeline.results._results import LayerRow, Statistics
from quantdebug.report import explorer_node_data, plot_statistics, render_html, save_explorer_node_data, save_html

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "<script>alert(1)</script>"
FORMULA = '=HYPERLINK("x")'
ATTR_BREAK = '"><img src=x onerror=alert(2)>'
TITLE_BREAK = "</title><script>alert(3)</script>"
NETWORK = "https://evil.example/x.js"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("screenshot_report", ROOT / "scripts" / "screenshot_report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("screenshot_report", module)
    spec.loader.exec_module(module)
    return module


shot = _load_script()
needs_chromium = pytest.mark.skipif(shot.find_chromium() is None, reason="chromium is not installed")


def _run(verify_mode: str) -> Statistics:
    from tests import models

    rng = np.random.default_rng(0)
    model = models.all_ops(rng)
    samples = [models.input_feed(model, rng) for _ in range(8)]
    debugger = qd.QuantizationDebugger(
        model, lambda: iter(samples), debug_options=qd.DebugOptions(verify_mode=verify_mode, progress=False)
    )
    debugger.run()
    return debugger.statistics()


@pytest.fixture(scope="module")
def real() -> Statistics:
    return _run("per_layer")


@pytest.fixture(scope="module")
def real_whole() -> Statistics:
    return _run("whole_model")


def _worst(st: Statistics) -> LayerRow:
    return max(st.layers, key=lambda r: r.rmse_over_scale if math.isfinite(r.rmse_over_scale) else -1.0)


def _histogram(rng: np.random.Generator) -> dict[str, list[float]]:
    edges = np.linspace(-1, 1, 33)
    x = rng.normal(0, 0.3, 2000)
    return {
        "edges": edges.tolist(),
        "float": np.histogram(x, edges)[0].tolist(),
        "quantized": np.histogram(np.round(x * 20) / 20, edges)[0].tolist(),
    }


def hostile(st: Statistics) -> Statistics:
    """The run's statistics with names an attacker chose, plus histograms, a fix trace and model metrics."""
    worst = _worst(st)
    layers = []
    others = iter([FORMULA, ATTR_BREAK, NETWORK])
    for r in st.layers:
        if r is worst:
            r = dataclasses.replace(
                r, node_name=SCRIPT, tensor_name=SCRIPT + "_out", op_name=TITLE_BREAK, covers=(SCRIPT,)
            )
        elif r.rmse_over_scale < 0.5 and (name := next(others, None)) is not None:
            r = dataclasses.replace(r, node_name=name, tensor_name=name + "/t", covers=(name,))
        layers.append(r)
    rng = np.random.default_rng(1)
    hists = {r.tensor_name: _histogram(rng) for r in layers[:4]} | {SCRIPT + "_out": _histogram(rng)}
    trace = [
        {"quality": 0.80 + 0.02 * i, "non_int8_nodes": i, "size": 100 + i, "accepted": i % 3 != 2, "changes": [SCRIPT]}
        for i in range(8)
    ]
    coverage = [
        *st.coverage,
        {"node": SCRIPT, "op_type": TITLE_BREAK, "user_nodes": FORMULA, "status": "float", "reason": ATTR_BREAK},
    ]
    return dataclasses.replace(
        st,
        layers=layers,
        coverage=coverage,
        model_statistics={SCRIPT: 0.5, "top1": 0.93},
        provenance={**st.provenance, "note": SCRIPT, "cpu_flags": [*st.provenance.get("cpu_flags", []), ATTR_BREAK]},
        extras={
            "histograms": hists,
            "culprits": {
                "rows": [
                    {
                        "node_name": SCRIPT,
                        "op_name": TITLE_BREAK,
                        "tensor_name": SCRIPT + "_out",
                        "impact": 0.9,
                        "quantized_alone_sqnr_db": "-inf",
                        "float_alone_sqnr_db": 30.0,
                        "reason": "sentinel",
                        "detail": ATTR_BREAK,
                        "suggested_change": f"QuantConfig(tensor_clamps=[({SCRIPT!r}, -1, 1)])",
                    },
                    {"node_name": FORMULA, "impact": "bad", "reason": ATTR_BREAK, "suggested_change": NETWORK},
                ],
                "denylist": [SCRIPT, ATTR_BREAK],
                "denylist_removes": 0.95,
                "samples": 4,
            },
            "fix": {
                "trace": trace,
                "float_quality": 0.95,
                "int8_quality": 0.8,
                "fixed_quality": 0.94,
                "ranking": [
                    {
                        "rank": 1,
                        "node_name": SCRIPT,
                        "noise_share": 0.75,
                        "group_noise_share": 0.8,
                        "per_layer_rmse/scale": 1.25,
                        "whole_model_rmse/scale": 3.5,
                        "statistics_score": 4.3,
                    },
                    {
                        "rank": 2,
                        "node_name": "quiet",
                        "noise_share": None,
                        "group_noise_share": 0.1,
                        "per_layer_rmse/scale": None,
                        "whole_model_rmse/scale": "bad",
                    },
                    "not a row",
                ],
            },
        },
    )


# -- HTML ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["per_layer", "whole_model"])
def test_every_chart_is_present(mode: str, real: Statistics, real_whole: Statistics) -> None:
    st = hostile(real if mode == "per_layer" else real_whole)
    page = render_html(st, title="all_ops")
    hist_count = min(6, sum(1 for r in st.layers if r.tensor_name in st.extras["histograms"]))
    expected = 2 + hist_count + 1 + (1 if mode == "whole_model" else 0)  # range, rmse/scale, hists, fix, propagation
    expected += 1 + len(st.extras["culprits"]["rows"])  # rmse/scale coloured by impact, an impact bar per culprit
    assert page.count("<svg") == expected
    assert 'id="propagation"' in page if mode == "whole_model" else 'id="propagation"' not in page
    for anchor in ("summary", "charts", "worst-layers", "histograms", "model-metrics", "fix", "all-layers", "coverage"):
        assert f'id="{anchor}"' in page
    # bars: one per layer in each bar chart, each with a tooltip naming its node
    assert page.count('<rect class="bar') == 3 * len(st.layers)  # and the rmse/scale chart coloured by impact
    assert page.index('id="culprits"') < page.index('id="summary"')  # the report opens with the culprits
    assert "Suggested denylist: 2 layer(s), removing 95% of the output noise" in page
    assert "0.289 ideal" in page and "0.7 suspect" in page
    # the fix ranking's suspects, with the evidence behind each rank; unmeasured values show as —
    assert "Suspects, in the order the search tried them" in page
    assert f'<span class="name">{_esc(SCRIPT)}</span>' in page and ">0.75<" in page and ">3.5<" in page
    assert "<td class='n'><span class=\"name\">quiet</span></td><td class='num'>—</td>" in page
    for r in st.layers:
        assert f"{_esc(r.node_name)} ({_esc(r.op_name)})" in page


def _esc(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_names_are_escaped_everywhere(real: Statistics) -> None:
    page = render_html(hostile(real), title=SCRIPT)
    assert "<script>alert" not in page
    assert "alert(1)</script>" not in page
    assert page.count("<script") == 1  # ours, at the end
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert FORMULA not in page and "=HYPERLINK(&quot;x&quot;)" in page
    assert "<img" not in page and "onerror=alert(2)" not in page.replace(
        "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;", ""
    )
    assert TITLE_BREAK not in page and page.count("</title>") == page.count("<title>")


def test_no_network_resources(real: Statistics) -> None:
    page = render_html(hostile(real))
    assert not re.search(r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", page, re.I)
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?\s*https?:", page, re.I)
    assert "url(" not in page and "@import" not in page and "<link" not in page and "<iframe" not in page
    assert "http://" not in render_html(real) and "https://" not in render_html(real)


def test_content_security_policy_pins_the_inline_script_and_style(real: Statistics) -> None:
    page = render_html(real)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp is not None and "default-src &#x27;none&#x27;" in csp.group(1)
    for tag in ("script", "style"):
        body = re.search(rf"<{tag}>(.*?)</{tag}>", page, re.S)
        assert body is not None
        digest = base64.b64encode(hashlib.sha256(body.group(1).encode()).digest()).decode()
        assert f"sha256-{digest}" in csp.group(1)


def test_worst_layer_is_first_in_the_worst_table(real: Statistics) -> None:
    st = hostile(real)
    page = render_html(st)
    table = page[page.index('<table id="worst"') :]
    table = table[: table.index("</table>")]
    first_row = table[table.index("<tbody>") + len("<tbody>") :].split("</tr>")[0]
    assert _esc(SCRIPT) in first_row
    ranked = sorted((r for r in st.layers if math.isfinite(r.rmse_over_scale)), key=lambda r: -r.rmse_over_scale)
    positions = [table.index(f'<span class="name">{_esc(r.node_name)}</span>') for r in ranked[:5]]
    assert positions == sorted(positions)


def test_few_elements_are_flagged_and_explained(real: Statistics) -> None:
    page = render_html(real)
    tiny = [r for r in real.layers if r.metrics["num_elements"] < 16]
    assert tiny, "all_ops has tiny tensors (the squeeze-excite branch)"
    assert "1/√12 ≈ 0.289" in page and "few elements" in page
    assert page.count("sev-") > len(real.layers)


def test_renders_only_from_saved_statistics(real: Statistics, tmp_path: Path) -> None:
    folder = hostile(real).save(tmp_path / "stats")
    loaded = Statistics.load(folder)
    out = save_html(loaded, tmp_path / "report" / "report.html", title="loaded")
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<title>loaded</title>" in text
    assert text.count("<svg") == render_html(loaded).count("<svg")
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left nothing behind


def test_degenerate_statistics_still_render() -> None:
    empty = Statistics(layers=[], metric_names=list(DEFAULT_METRICS))
    page = render_html(empty)
    assert "No layer was verified" in page and page.count("<svg") == 0
    row = LayerRow("Conv", 0, "t", "n", 0.0, 0, "int8", -128, 127, ("n",), {"mean_squared_error": math.nan})
    odd = Statistics(
        layers=[row],
        metric_names=["mean_squared_error"],
        verify_mode="whole_model",
        extras={"histograms": {"t": {"edges": [0], "float": "bad"}}, "fix": {"trace": [{"quality": "x"}]}},
    )
    page = render_html(odd)
    assert page.count("<svg") == 3  # the two bar charts and the propagation chart; bad extras are skipped
    assert "—" in page


# -- chromium ----------------------------------------------------------------------------------
@needs_chromium
def test_console_detection_catches_page_errors(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><p>x</p><script>console.error('boom'); notDefined();</script>", encoding="utf-8")
    result = shot.run_chromium(page, dump_dom=True)
    messages = shot.console_messages(result.stderr)
    assert any("boom" in m for m in messages) and any("Uncaught" in m for m in messages)


@needs_chromium
@pytest.mark.parametrize("mode", ["per_layer", "whole_model"])
def test_chromium_renders_without_errors_and_shows_names_as_text(
    mode: str, real: Statistics, real_whole: Statistics, tmp_path: Path
) -> None:
    html_path = save_html(hostile(real if mode == "per_layer" else real_whole), tmp_path / "report.html", title=SCRIPT)
    result = shot.run_chromium(html_path, dump_dom=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.console_messages(result.stderr) == []
    dom = result.stdout
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom  # the name is text in the rendered DOM
    assert len(re.findall(r"<script\b", dom)) == 1  # no injected script element
    assert "<img" not in dom
    assert dom.count("<svg") == html_path.read_text(encoding="utf-8").count("<svg")


@needs_chromium
def test_table_sorts_and_filters_in_the_browser(real: Statistics, tmp_path: Path) -> None:
    """Click the rmse/scale header and type in the filter, from a test-only script added after the report's own."""
    page = render_html(real)
    page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
    driver = (
        "<script>var th = document.querySelectorAll('#all thead th')[8]; th.click();"
        "var f = document.getElementById('filter'); f.value = 'conv'; f.dispatchEvent(new Event('input'));</script>"
    )
    html_path = tmp_path / "driven.html"
    html_path.write_text(page.replace("</body>", driver + "</body>"), encoding="utf-8")
    result = shot.run_chromium(html_path, dump_dom=True)
    assert shot.console_messages(result.stderr) == []
    table = result.stdout[result.stdout.index('<table id="all"') :]
    table = table[: table.index("</table>")]
    assert 'aria-sort="descending"' in table
    body = table[table.index("<tbody>") :]
    rows = body.split("</tr>")[:-1]
    cells = [row.split("<td")[1:] for row in rows]
    ratios = [float(re.findall(r'data-v="([^"]*)"', c[8])[0] or "nan") for c in cells]
    finite = [v for v in ratios if not math.isnan(v)]
    assert finite == sorted(finite, reverse=True) and len(ratios) == len(real.layers)
    shown = [row for row in rows if "<tr hidden" not in row and "hidden=" not in row.split(">")[0]]
    assert 0 < len(shown) < len(rows) and all("conv" in row.lower() for row in shown)


@needs_chromium
def test_screenshot_script(real: Statistics, tmp_path: Path) -> None:
    from PIL import Image

    folder = hostile(real).save(tmp_path / "stats")
    png = tmp_path / "shot.png"
    assert shot.main([str(png), "--stats", str(folder), "--html", str(tmp_path / "r.html")]) == 0
    assert png.stat().st_size > 10_000
    with Image.open(png) as image:
        assert image.size == (1280, 2000)
        low, high = image.convert("L").getextrema()
        assert high - low > 100  # not a blank page


# -- notebook plots ----------------------------------------------------------------------------
def test_plot_statistics(real: Statistics) -> None:
    import matplotlib

    backend = matplotlib.get_backend()
    figures = plot_statistics(hostile(real))
    assert len(figures) == 2
    for fig in figures:
        (ax,) = fig.axes
        assert len(ax.patches) == len(real.layers)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        assert buffer.getvalue().startswith(b"\x89PNG")
    lines = [line.get_ydata()[0] for line in figures[1].axes[0].get_lines()]
    assert any(abs(y - 1 / math.sqrt(12)) < 1e-9 for y in lines) and 0.7 in lines
    assert matplotlib.get_backend() == backend


# -- Model Explorer ----------------------------------------------------------------------------
def _check_schema(data: dict[str, Any]) -> dict[str, Any]:
    """Model Explorer's ModelNodeData: {graph id: GraphNodeData} (model_explorer/node_data_builder.py)."""
    assert isinstance(data, dict) and len(data) == 1
    (graph,) = data.values()
    assert set(graph) <= {"results", "thresholds", "gradient"}
    assert all(
        isinstance(k, str) and set(v) == {"value"} and isinstance(v["value"], float)
        for k, v in graph["results"].items()
    )
    if "thresholds" in graph:
        values = [t["value"] for t in graph["thresholds"]]
        assert values == sorted(values)
        assert all(
            set(t) <= {"value", "bgColor", "textColor"} and t["bgColor"].startswith("#") for t in graph["thresholds"]
        )
    else:
        stops = [g["stop"] for g in graph["gradient"]]
        assert stops[0] == 0 and stops[-1] == 1 and stops == sorted(stops)
    return graph


def test_explorer_node_data(real: Statistics, tmp_path: Path) -> None:
    data = explorer_node_data(real, graph_id="all_ops")
    assert list(data) == ["all_ops"]
    graph = _check_schema(data)
    verified = {u for c in real.coverage if c["status"] == "verified" for u in c["user_nodes"].split(", ") if u}
    assert set(graph["results"]) == verified == {n for r in real.layers for n in r.covers}
    for r in real.layers:
        for node in r.covers:
            assert graph["results"][node]["value"] == pytest.approx(r.rmse_over_scale)

    out = save_explorer_node_data(real, tmp_path / "nd" / "rmse.json", "mean_squared_error", graph_id="all_ops")
    loaded = json.loads(out.read_text(encoding="utf-8"))
    graph = _check_schema(loaded)
    assert "gradient" in graph and len(graph["results"]) == len(verified)
    # by default the graph id is the ONNX graph's name, which Model Explorer's ONNX adapter uses
    assert list(explorer_node_data(real)) == [real.provenance["graph_name"]] == ["all_ops"]
    with pytest.raises(QuantDebugError, match="unknown metric"):
        explorer_node_data(real, "no_such_metric")


def test_explorer_keeps_hostile_names_as_plain_keys(real: Statistics) -> None:
    graph = _check_schema(explorer_node_data(hostile(real), "range"))
    assert SCRIPT in graph["results"] and FORMULA in graph["results"]
