"""examples/tutorial.ipynb runs top to bottom on a real Jupyter kernel, and shows what it says it shows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")  # the notebook extra: pip install "quantdebug[notebook]"
nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "tutorial.ipynb"


def _text(cell: dict) -> str:  # type: ignore[type-arg]
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        data = output.get("data", {})
        parts += [data.get("text/html", ""), data.get("text/plain", "")]
    return "".join(p if isinstance(p, str) else "".join(p) for p in parts)


@pytest.mark.slow
def test_the_tutorial_notebook_runs_and_shows_the_culprits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")  # stored without outputs
    # the kernel is a fresh process: it imports this checkout's quantdebug
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    client = nbclient.NotebookClient(
        notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    code = [c for c in notebook.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    texts = [_text(c) for c in code]
    culprits = next(t for c, t in zip(code, texts) if "debugger.culprits(samples=1)\nculprits" in c.source)
    assert "Likely culprits (by effect on the outputs)" in culprits and '<svg class="impact"' in culprits
    assert "op_name,tensor_idx,num_elements" in texts[2]  # the CSV header, TFLite's columns first
    views = next(t for t in texts if "rmse/scale recipe" in t)
    assert views.count("accuracy") == 3
    fixed = next(t for c, t in zip(code, texts) if "debugger.fix(" in c.source)
    assert "evaluations" in fixed and "<pre>" in fixed
    stats = next(t for c, t in zip(code, texts) if c.source == "debugger.statistics()")
    assert stats.index("Likely culprits") < stats.index("Worst layers by rmse/scale")
