"""The report's stylesheet and script live in ``report/assets/``: the page inlines them byte for byte, its
Content-Security-Policy pins exactly the inlined text, and the wheel ships the files."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from tests import models

import quantdebug as qd
from quantdebug.report import render_html
from quantdebug.thresholds import SEVERITY

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "src" / "quantdebug" / "report" / "assets"
FILES = ("report.css", "report.js")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def test_the_page_inlines_the_asset_files_and_its_policy_pins_the_inlined_text(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    feeds = [models.input_feed(model, rng) for _ in range(2)]
    debugger = qd.QuantizationDebugger(model, lambda: iter(feeds), debug_options=qd.DebugOptions(progress=False))
    debugger.run()
    page = render_html(debugger.statistics())
    (style,) = re.findall(r"<style>(.*?)</style>", page, flags=re.S)
    (script,) = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    (policy,) = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', page)
    policy = html.unescape(policy)
    assert f"style-src {_csp_hash(style)};" in policy
    assert f"script-src {_csp_hash(script)};" in policy
    # the inlined text is the files' text (a leading newline before each), then the severity colours
    assert script == "\n" + (ASSETS / "report.js").read_text(encoding="utf-8")
    css = (ASSETS / "report.css").read_text(encoding="utf-8")
    assert style.startswith("\n" + css)
    for level, (_, colour) in SEVERITY.items():
        assert f".sev-{level}{{background:{colour};}}" in style[len(css) + 1 :]


def test_the_wheel_ships_the_report_assets(tmp_path: Path) -> None:
    """Built from a copy of the project (pyproject.toml, README.md, src/) so that the worktree stays clean."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path / "dist"
    build = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    result = subprocess.run(
        [sys.executable, "-c", build, str(out)], cwd=project, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    wheel = out / result.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as archive:
        for name in FILES:
            assert archive.read(f"quantdebug/report/assets/{name}") == (ASSETS / name).read_bytes(), name
        assert "quantdebug/py.typed" in archive.namelist()
