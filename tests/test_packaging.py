"""Library users get the core only: without the demo, plots and images extras quantdebug imports and works,
and each extra's entry point says which extra to install (issue 16)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTRA_ONLY = ("PIL", "matplotlib", "rapidocr_onnxruntime", "cv2")  # what the demo/plots/images extras bring

# Runs in a fresh interpreter where importing any of EXTRA_ONLY fails as if it were not installed.
PROBE = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # 'import name' now raises ModuleNotFoundError

import json, pathlib
import numpy as np
import onnx
from tests import models
import quantdebug as qd
from quantdebug.report import plot_statistics, render_html
from quantdebug.data._formats import open_data

out = {{}}
rng = np.random.default_rng(0)
model = models.conv_relu(rng)
feeds = [models.input_feed(model, rng) for _ in range(2)]
debugger = qd.QuantizationDebugger(model, lambda: iter(feeds), debug_options=qd.DebugOptions(progress=False))
debugger.run()  # the core works: calibrate, quantize, debug
out["layers"] = len(debugger.layer_statistics)
out["html"] = "<html" in render_html(debugger.statistics()).lower()  # the HTML report needs no extra

def error_of(call):
    try:
        call()
    except qd.MissingExtraError as exc:
        return str(exc)
    return None

out["plots"] = error_of(debugger.plot)
out["plot_statistics"] = error_of(lambda: plot_statistics(debugger.statistics()))
folder = pathlib.Path({folder!r})
out["images"] = error_of(lambda: list(open_data(str(folder))()))
from quantdebug import demo
out["demo_model"] = error_of(demo.rec_model_path)
out["demo_font"] = error_of(demo.font_path)
print(json.dumps(out))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def test_core_works_without_the_extras_and_each_entry_point_names_its_extra(tmp_path: Path) -> None:
    import json

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # never opened: Pillow is missing
    probe = PROBE.format(blocked=EXTRA_ONLY, folder=str(folder))
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["layers"] > 0 and out["html"] is True
    for key, extra in (
        ("plots", "plots"),
        ("plot_statistics", "plots"),
        ("images", "images"),
        ("demo_model", "demo"),
        ("demo_font", "demo"),
    ):
        assert out[key] is not None, f"{key} did not raise MissingExtraError"
        assert f'pip install "quantdebug[{extra}]"' in out[key], out[key]


def test_the_demo_command_names_its_extra() -> None:
    block = f"import sys\nfor n in {EXTRA_ONLY!r}: sys.modules[n] = None\n"
    code = block + "from quantdebug.cli import main\nmain(['demo'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: the OCR demo needs rapidocr-onnxruntime, OpenCV, Pillow, matplotlib"
    )
    assert 'pip install "quantdebug[demo]"' in lines[0]


def test_the_extras_are_declared_and_the_core_does_not_pull_them() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for package in ("rapidocr", "matplotlib", "pillow"):
        assert package not in core, package
    extras = project["optional-dependencies"]
    assert any(d.startswith("rapidocr-onnxruntime") for d in extras["demo"])
    assert any(d.startswith("matplotlib") for d in extras["plots"])
    assert any(d.startswith("pillow") for d in extras["images"])
    assert set(extras["all"]) == set(extras["demo"]) | set(extras["plots"]) | set(extras["images"])
    # the README's first command and CI install the demo's extra
    assert 'pip install -e ".[all,test]" && quantdebug demo' in (ROOT / "README.md").read_text()
    assert '".[all,test]"' in (ROOT / ".ci" / "run").read_text()
