"""End-to-end tests of the ``quantdebug`` command line, run as real subprocesses on tiny models."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tests import models

ROOT = Path(__file__).resolve().parents[2]
CSV_HEADER = (
    "op_name,tensor_idx,num_elements,stddev,mean_error,max_abs_error,mean_squared_error,"
    "scale,zero_point,tensor_name,node_name,impact"
)
COMMANDS = ["calibrate", "quantize", "debug", "report", "compare", "fix", "demo"]


def run_cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    env["COLUMNS"] = "80"
    return subprocess.run(
        [sys.executable, "-m", "quantdebug.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=180,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The run failed with ``code`` and exactly one ``error:`` line on stderr, without a traceback."""
    assert result.returncode == code, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


def fits_80(text: str) -> None:
    too_wide = [line for line in text.splitlines() if len(line) > 80]
    assert not too_wide, too_wide


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the conv model (3-channel image input), the two-input model and npz data for both."""
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(1234)
    onnx.save(models.conv_relu(rng), folder / "conv.onnx")
    onnx.save(models.multi_io(rng), folder / "multi.onnx")
    np.savez(folder / "conv.npz", input=rng.standard_normal((4, 3, 16, 16)).astype(np.float32))
    np.savez(
        folder / "multi.npz",
        image=rng.standard_normal((3, 3, 8, 8)).astype(np.float32),
        features=rng.standard_normal((3, 5)).astype(np.float32),
    )
    return folder


@pytest.fixture(scope="module")
def stats(work: Path) -> Path:
    """One debug run of the conv model, shared by the tests that read statistics."""
    ok(run_cli("debug", work / "conv.onnx", "--data", work / "conv.npz", "-o", work / "stats", "--quiet"))
    return work / "stats"


# -- help, version, placeholders ----------------------------------------------------------------------


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(command: str | None) -> None:
    result = ok(run_cli(*([command] if command else []), "--help"))
    assert "Usage: quantdebug" in result.stdout
    fits_80(result.stdout)
    if command is None:
        for name in COMMANDS:
            assert name in result.stdout
    if command in ("quantize", "debug"):
        for option in ("--per-channel", "--activation-type", "--denylist-nodes", "--denylist-ops", "--calibration"):
            assert option in result.stdout
    if command in ("calibrate", "debug"):
        for option in ("--data", "--image-size", "--layout", "--mean", "--std", "--scale", "--bgr"):
            assert option in result.stdout


def test_version() -> None:
    import quantdebug

    assert quantdebug.__version__ in ok(run_cli("--version")).stdout


def test_debug_a_model_quantized_elsewhere(work: Path) -> None:
    quantized = work / "q_elsewhere.onnx"
    ok(run_cli("quantize", work / "conv.onnx", "--data", work / "conv.npz", "-o", quantized, "-q"))
    stats = work / "stats_elsewhere"
    result = ok(
        run_cli("debug", work / "conv.onnx", "--data", work / "conv.npz", "--quantized", quantized, "-o", stats, "-q")
    )
    header = (stats / "layer_statistics.csv").read_text().splitlines()[0]
    assert header.startswith("op_name,tensor_idx,num_elements")
    assert "rmse/scale" in result.stdout


def test_fix_writes_the_model_and_its_record(work: Path) -> None:
    fixed = work / "fixed.onnx"
    result = run_cli("fix", work / "conv.onnx", "--data", work / "conv.npz", "--target", "20", "-o", fixed, "-q")
    assert result.returncode in (0, 3), result.stderr
    record = json.loads(fixed.with_suffix(".fix.json").read_text())
    assert {"changes", "trace", "config", "onnxruntime", "evaluations"} <= set(record)
    assert record["evaluations"] == len(record["trace"])
    session = ort.InferenceSession(str(fixed), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "input"
    assert record["met_target"] == (result.returncode == 0)
    assert ("could not be met" in result.stdout) == (result.returncode == 3)


def test_fix_keeps_the_denylisted_nodes_in_float(work: Path, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed.onnx"
    args = ("fix", work / "conv.onnx", "--data", work / "conv.npz", "--target", "20", "-o", fixed, "-q")
    result = run_cli(*args, "--denylist-nodes", "conv1", "--denylist-ops", "Gemm")
    assert result.returncode in (0, 3), result.stderr
    model = onnx.load(fixed)
    produced_by = {o: n.op_type for n in model.graph.node for o in n.output}
    ops = {n.name: n for n in model.graph.node}
    # a node left in float keeps its float weight: no DequantizeLinear in front of it
    for name in ("conv1", *(n.name for n in model.graph.node if n.op_type == "Gemm")):
        assert produced_by.get(ops[name].input[1]) != "DequantizeLinear", name
    assert produced_by.get(ops["conv2"].input[1]) == "DequantizeLinear"  # the rest is still quantized
    rules = [tuple(r) for r in json.loads(fixed.with_suffix(".fix.json").read_text())["config"]["node_precision"]]
    assert ("conv1", "float") in rules and ("op:Gemm", "float") in rules
    typo = run_cli(*args, "--denylist-nodes", "conv_1")
    assert typo.returncode != 0 and "conv_1" in typo.stderr and "Traceback" not in typo.stderr


def test_quantize_needs_data_or_calibration(work: Path) -> None:
    result = run_cli("quantize", work / "conv.onnx", "-o", work / "never.onnx")
    assert result.returncode == 2
    assert "--calibration" in result.stderr
    assert not (work / "never.onnx").exists()


# -- calibrate, quantize, debug, compare, report ------------------------------------------------------


def _quantize_nodes(path: Path) -> int:
    return sum(n.op_type == "QuantizeLinear" for n in onnx.load(path).graph.node)


def test_calibrate_then_quantize(work: Path, tmp_path: Path) -> None:
    cal = tmp_path / "cal.json"
    ok(run_cli("calibrate", work / "conv.onnx", "--data", work / "conv.npz", "-o", cal, "-q"))
    assert cal.is_file()
    full = tmp_path / "full.onnx"
    ok(run_cli("quantize", work / "conv.onnx", "--calibration", cal, "-o", full, "-q"))
    partial = tmp_path / "partial.onnx"
    ok(
        run_cli(
            "quantize", work / "conv.onnx", "--calibration", cal, "-o", partial, "--per-channel",
            "--denylist-nodes", "conv1,conv2", "--denylist-nodes", "fc", "--activation-type", "uint8", "-q",
        )
    )  # fmt: skip
    feed = models.input_feed(onnx.load(work / "conv.onnx"), np.random.default_rng(0))
    for path in (full, partial):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (out,) = session.run(None, feed)
        assert out.shape == (1, 10) and np.isfinite(out).all()
    assert 0 < _quantize_nodes(partial) < _quantize_nodes(full)


def test_quantize_with_data(work: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    ok(run_cli("--quiet", "quantize", work / "multi.onnx", "--data", work / "multi.npz", "-o", out))
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def _table(text: str, title: str) -> list[tuple[str, float, float]]:
    """(node, rmse/scale, mean sq err) of each row of the summary table under ``title``.

    A row is ``op node ratio mse range``; a name too long for its column stands alone on the line
    above its numbers, so the row is read across the two lines.
    """
    lines = text.splitlines()
    start = lines.index(title) + 2  # the title, then the header
    rows: list[tuple[str, float, float]] = []
    pending: str | None = None
    for line in lines[start:]:
        if not line.strip():
            break
        fields = line.split()
        if len(fields) == 1:
            pending = fields[0]
            continue
        node = pending if pending is not None else fields[1]
        rows.append((node, float(fields[-3]), float(fields[-2])))
        pending = None
    return rows


def test_debug_writes_statistics_and_summary(work: Path, tmp_path: Path) -> None:
    """The tables are the CSV's worst rows in order; which layer is worst depends on the CPU's int8
    kernels (AVX-512 VNNI rounds differently), so the reference is the run's own CSV."""
    out = tmp_path / "stats"
    args = ("debug", work / "conv.onnx", "--data", work / "conv.npz", "-o", "stats", "-q", "--top", "3")
    result = ok(run_cli(*args, cwd=tmp_path))
    with open(out / "layer_statistics.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert ",".join(rows[0]) == CSV_HEADER
    records = [dict(zip(rows[0], row)) for row in rows[1:]]
    assert {r["node_name"] for r in records} == {"conv1", "conv2", "conv3", "gap", "flatten", "fc"}
    assert (out / "statistics.json").is_file()
    text = result.stdout
    assert text.startswith(f"{len(records)} layers verified (per-layer) on 4 samples")
    ratio = {r["node_name"]: math.sqrt(float(r["mean_squared_error"])) / float(r["scale"]) for r in records}
    mse = {r["node_name"]: float(r["mean_squared_error"]) for r in records}
    by_ratio = _table(text, "Worst layers by rmse/scale")
    by_mse = _table(text, "Worst layers by mean squared error")
    assert [n for n, _, _ in by_ratio] == sorted(ratio, key=lambda n: -ratio[n])[:3]
    assert [n for n, _, _ in by_mse] == sorted(mse, key=lambda n: -mse[n])[:3]
    for node, r, m in by_ratio + by_mse:
        assert r == pytest.approx(ratio[node], rel=1e-3) and m == pytest.approx(mse[node], rel=1e-3), node
    # the suggested denylist comes from the culprits (tests/fix/test_culprits.py); the tutorial's rule is counted
    suspects = [n for n in ratio if ratio[n] > 0.7]
    assert f"(the tutorial's rule, rmse/scale > 0.7, picks {len(suspects)} of {len(records)} layers)" in text
    assert "Suggested denylist: " in text
    fits_80(text)
    assert result.stderr == ""  # --quiet: no notes, no progress


def test_debug_whole_model_multi_input(work: Path, tmp_path: Path) -> None:
    out = tmp_path / "stats"
    ok(run_cli("debug", work / "multi.onnx", "--data", work / "multi.npz", "--mode", "whole-model", "-o", out, "-q"))
    import quantdebug as qd

    assert qd.Statistics.load(out).verify_mode == "whole_model"


def test_compare_runs(work: Path, stats: Path, tmp_path: Path) -> None:
    denied = tmp_path / "denied"
    ok(
        run_cli(
            "debug", work / "conv.onnx", "--data", work / "conv.npz", "--denylist-nodes", "conv1", "-o", denied, "-q"
        )
    )
    result = ok(run_cli("compare", stats, denied))
    assert "rmse/scale A" in result.stdout and "conv1" in result.stdout
    fits_80(result.stdout)

    import quantdebug as qd

    trimmed = qd.Statistics.load(stats)
    dropped = trimmed.layers.pop(0)
    trimmed.save(tmp_path / "trimmed")
    result = ok(run_cli("compare", tmp_path / "trimmed", stats))
    line = next(line for line in result.stdout.splitlines() if "only in B" in line)
    assert line.split()[0] == dropped.node_name[:28]
    assert result.stdout.index("only in B") < result.stdout.index("layers in both")


def test_report(stats: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = run_cli("report", stats, "-o", out)
    try:
        from quantdebug.report import render_html  # noqa: F401
    except ImportError:
        assert "report" in one_line_error(result)
        return
    ok(result)
    assert "<html" in out.read_text(encoding="utf-8").lower()


# -- data formats -------------------------------------------------------------------------------------


def _npy_folder(folder: Path, rng: np.random.Generator) -> Path:
    data = folder / "npy"
    data.mkdir()
    for i in range(3):
        shape = (3, 16, 16) if i == 0 else (1, 3, 16, 16)  # the batch axis may be left out
        np.save(data / f"sample_{i:02d}.npy", rng.standard_normal(shape).astype(np.float32))
    return data


def _npy_subfolders(folder: Path, rng: np.random.Generator) -> Path:
    data = folder / "per_input"
    for name, shape in (("image", (1, 3, 8, 8)), ("features", (1, 5))):
        (data / name).mkdir(parents=True)
        for i in range(2):
            np.save(data / name / f"{i}.npy", rng.standard_normal(shape).astype(np.float32))
    return data


def _image_folder(folder: Path, rng: np.random.Generator) -> Path:
    from PIL import Image

    data = folder / "images"
    data.mkdir()
    for i, suffix in enumerate(("png", "png", "jpg", "bmp")):
        pixels = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)  # resized to the model's 16x16
        Image.fromarray(pixels).save(data / f"img_{i}.{suffix}")
    return data


def _single_key_npz(folder: Path, rng: np.random.Generator) -> Path:
    path = folder / "any_key.npz"
    np.savez(path, x=rng.standard_normal((2, 3, 16, 16)).astype(np.float32))
    return path


PYTHON_DATA = """
import numpy as np

def representative_dataset():
    rng = np.random.default_rng(0)
    for _ in range(3):
        yield [rng.standard_normal((1, 3, 16, 16)).astype(np.float32)]

def make_list():
    return [{"input": np.zeros((1, 3, 16, 16), np.float32)} for _ in range(2)]
"""


def _python_file(folder: Path, rng: np.random.Generator) -> str:
    (folder / "my_data.py").write_text(PYTHON_DATA)
    return f"{folder / 'my_data.py'}:representative_dataset"


def _python_module(folder: Path, rng: np.random.Generator) -> str:
    (folder / "my_data_module.py").write_text(PYTHON_DATA)
    return "my_data_module:make_list"


@pytest.mark.parametrize(
    ("model", "make", "extra"),
    [
        ("conv", _npy_folder, ()),
        ("multi", _npy_subfolders, ()),
        ("conv", _image_folder, ()),
        ("conv", _image_folder, ("--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", "--bgr")),
        ("conv", _single_key_npz, ()),
        ("conv", _python_file, ()),
        ("conv", _python_module, ()),
    ],
    ids=["npy-folder", "npy-subfolders", "images", "images-normalized", "npz-any-key", "file-py", "module"],
)
def test_data_formats(
    work: Path,
    tmp_path: Path,
    rng: np.random.Generator,
    model: str,
    make: Callable[[Path, np.random.Generator], Path | str],
    extra: tuple[str, ...],
) -> None:
    data = make(tmp_path, rng)
    cal = tmp_path / "cal.json"
    ok(run_cli("calibrate", work / f"{model}.onnx", "--data", data, "-o", cal, "-q", *extra, cwd=tmp_path))
    assert cal.is_file()


def test_image_debug_end_to_end(work: Path, tmp_path: Path, rng: np.random.Generator) -> None:
    data = _image_folder(tmp_path, rng)
    result = ok(
        run_cli("debug", work / "conv.onnx", "--data", data, "--image-size", "16x16", "-o", tmp_path / "s", "-q")
    )
    assert "Worst layers" in result.stdout


# -- bad inputs ---------------------------------------------------------------------------------------


def _missing_model(work: Path, tmp: Path) -> list[object]:
    return ["calibrate", tmp / "missing.onnx", "--data", work / "conv.npz", "-o", tmp / "c.json"]


def _random_bytes_model(work: Path, tmp: Path) -> list[object]:
    (tmp / "random.onnx").write_bytes(np.random.default_rng(7).bytes(512))
    return ["debug", tmp / "random.onnx", "--data", work / "conv.npz", "-o", tmp / "s"]


def _missing_data(work: Path, tmp: Path) -> list[object]:
    return ["calibrate", work / "conv.onnx", "--data", tmp / "nothing_here.npz", "-o", tmp / "c.json"]


def _wrong_input_names(work: Path, tmp: Path) -> list[object]:
    np.savez(tmp / "wrong.npz", image=np.zeros((2, 3, 8, 8), np.float32), feature=np.zeros((2, 5), np.float32))
    return ["calibrate", work / "multi.onnx", "--data", tmp / "wrong.npz", "-o", tmp / "c.json"]


def _mismatched_shapes(work: Path, tmp: Path) -> list[object]:
    np.savez(tmp / "small.npz", input=np.zeros((2, 3, 8, 8), np.float32))
    return ["debug", work / "conv.onnx", "--data", tmp / "small.npz", "-o", tmp / "s"]


def _non_image_in_image_folder(work: Path, tmp: Path) -> list[object]:
    data = _image_folder(tmp, np.random.default_rng(3))
    (data / "notes.txt").write_text("not an image")
    return ["calibrate", work / "conv.onnx", "--data", data, "-o", tmp / "c.json"]


def _empty_folder(work: Path, tmp: Path) -> list[object]:
    (tmp / "empty").mkdir()
    return ["calibrate", work / "conv.onnx", "--data", tmp / "empty", "-o", tmp / "c.json"]


def _unknown_denylisted_node(work: Path, tmp: Path) -> list[object]:
    return ["quantize", work / "conv.onnx", "--data", work / "conv.npz", "--denylist-nodes", "conv9", "-o", tmp / "q"]


def _missing_stats(work: Path, tmp: Path) -> list[object]:
    return ["compare", tmp / "a", tmp / "b"]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_missing_model, "missing.onnx"),
        (_random_bytes_model, "not an ONNX model"),
        (_missing_data, "nothing_here.npz"),
        (_wrong_input_names, "features"),
        (_mismatched_shapes, "shape"),
        (_non_image_in_image_folder, "notes.txt"),
        (_empty_folder, "empty"),
        (_unknown_denylisted_node, "conv9"),
        (_missing_stats, "statistics"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_bad_input_is_one_line(
    work: Path, tmp_path: Path, make: Callable[[Path, Path], list[object]], expected: str
) -> None:
    line = one_line_error(run_cli(*make(work, tmp_path), "-q"))
    assert expected in line


def test_debug_flag_shows_traceback(work: Path, tmp_path: Path) -> None:
    result = run_cli("--debug", *_missing_model(work, tmp_path))
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ModelError" in result.stderr
