"""The CLI on hostile models and broken data, run as a subprocess: one 'error:' line naming what is at fault,
exit 1, no traceback unless --debug. (tests/cli/test_cli.py covers missing files, random bytes, wrong input
names, mismatched shapes, image folders and unknown denylist names; these are the other cases.)"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from tests import hostile, models

from quantdebug.pipeline.plan._select import FORMULA_CHARS, unguard

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "quantdebug.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=180,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli_bad")
    rng = np.random.default_rng(21)
    onnx.save(models.conv_relu(rng), folder / "conv.onnx")
    np.savez(folder / "conv.npz", input=rng.standard_normal((3, 3, 16, 16)).astype(np.float32))
    return folder


# -- models -------------------------------------------------------------------------------------------


def _truncated(work: Path, tmp: Path) -> Path:
    data = (work / "conv.onnx").read_bytes()
    (tmp / "cut.onnx").write_bytes(data[: len(data) // 3])
    return tmp / "cut.onnx"


def _tensor_not_model(work: Path, tmp: Path) -> Path:
    tensor = onnx.numpy_helper.from_array(np.zeros(4, np.float32), "t")
    (tmp / "tensor.onnx").write_bytes(tensor.SerializeToString())
    return tmp / "tensor.onnx"


def _dangling_input(work: Path, tmp: Path) -> Path:
    model = onnx.load(work / "conv.onnx")
    next(n for n in model.graph.node if n.name == "relu1").input[0] = "ghost"
    onnx.save(model, tmp / "dangling.onnx")
    return tmp / "dangling.onnx"


def _custom_domain(work: Path, tmp: Path) -> Path:
    model = hostile.odd_op(np.random.default_rng(0), "FooBar", "com.acme")
    onnx.save(model, tmp / "custom.onnx")
    return tmp / "custom.onnx"


def _future_opset(work: Path, tmp: Path) -> Path:
    model = hostile.odd_op(np.random.default_rng(0), "Relu", opset=onnx.defs.onnx_opset_version() + 2)
    model.ir_version = onnx.IR_VERSION
    onnx.save(model, tmp / "future.onnx")
    return tmp / "future.onnx"


def _external(work: Path, tmp: Path, location: str) -> Path:
    path = hostile.save_external(onnx.load(work / "conv.onnx"), tmp / "ext")
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "weights.bin").write_bytes((tmp / "ext" / "weights.bin").read_bytes())
    if location == "link.bin":
        (tmp / "ext" / "link.bin").symlink_to(outside / "weights.bin")
    hostile.relocate_external(path, str(outside / "weights.bin") if location == "absolute" else location)
    return path


def _traversal(work: Path, tmp: Path) -> Path:
    return _external(work, tmp, "../outside/weights.bin")


def _absolute(work: Path, tmp: Path) -> Path:
    return _external(work, tmp, "absolute")


def _symlink(work: Path, tmp: Path) -> Path:
    return _external(work, tmp, "link.bin")


def _missing_weights(work: Path, tmp: Path) -> Path:
    path = hostile.save_external(onnx.load(work / "conv.onnx"), tmp / "ext")
    (tmp / "ext" / "weights.bin").unlink()
    return path


MODEL_CASES: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "truncated": (_truncated, "cut.onnx' is not an ONNX model"),
    "protobuf_not_a_model": (_tensor_not_model, "not an ONNX model"),
    "dangling_input": (_dangling_input, "'ghost' of node: name: relu1"),
    "custom_domain_op": (_custom_domain, "node 'odd' runs op 'FooBar' from domain 'com.acme'"),
    "future_opset": (_future_opset, f"opset {onnx.defs.onnx_opset_version() + 2}"),
    "external_dotdot": (_traversal, "outside the model's folder ('../outside/weights.bin')"),
    "external_absolute": (_absolute, "outside the model's folder"),
    "external_symlink": (_symlink, "outside the model's folder ('link.bin')"),
    "external_missing": (_missing_weights, "needs external data file 'weights.bin', which is missing"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_cli_bad_model_is_one_line(case: str, work: Path, tmp_path: Path) -> None:
    make, expected = MODEL_CASES[case]
    model = make(work, tmp_path)
    line = one_line_error(run_cli("calibrate", model, "--data", work / "conv.npz", "-o", tmp_path / "c.json", "-q"))
    assert expected in line
    assert not (tmp_path / "c.json").exists()


def test_cli_debug_flag_shows_the_traceback_of_a_bad_model(work: Path, tmp_path: Path) -> None:
    model = _custom_domain(work, tmp_path)
    result = run_cli("--debug", "calibrate", model, "--data", work / "conv.npz", "-o", tmp_path / "c.json")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ModelError" in result.stderr and "com.acme" in result.stderr


def test_cli_external_data_model_debugs(work: Path, tmp_path: Path) -> None:
    path = hostile.save_external(onnx.load(work / "conv.onnx"), tmp_path / "ext")
    result = run_cli("debug", path, "--data", work / "conv.npz", "-o", tmp_path / "stats", "-q")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "stats" / "layer_statistics.csv").is_file()


# -- data ---------------------------------------------------------------------------------------------


def _npz(tmp: Path, **arrays: np.ndarray) -> Path:
    np.savez(tmp / "data.npz", **arrays)  # type: ignore[arg-type]
    return tmp / "data.npz"


def _nan(work: Path, tmp: Path) -> object:
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    x[2, 0, 1, 1] = np.nan
    return _npz(tmp, input=x)


def _int_dtype(work: Path, tmp: Path) -> object:
    return _npz(tmp, input=np.zeros((2, 3, 16, 16), np.int32))


def _wrong_rank(work: Path, tmp: Path) -> object:
    return _npz(tmp, input=np.zeros((2, 16, 16), np.float32))


def _extra_input(work: Path, tmp: Path) -> object:
    return _npz(tmp, input=np.zeros((2, 3, 16, 16), np.float32), mask=np.zeros((2, 4), np.float32))


def _no_samples(work: Path, tmp: Path) -> object:
    return _npz(tmp, input=np.zeros((0, 3, 16, 16), np.float32))


def _object_array(work: Path, tmp: Path) -> object:
    np.save(tmp / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return tmp / "objects.npy"


PYTHON_DATA = """
import numpy as np

def midway():
    for i in range(5):
        if i == 3:
            raise RuntimeError("camera unplugged")
        yield [np.zeros((1, 3, 16, 16), np.float32)]

def changing_shape():
    yield [np.zeros((1, 3, 16, 16), np.float32)]
    yield [np.zeros((1, 3, 16, 15), np.float32)]

def not_iterable():
    return 7
"""


def _python(function: str) -> Callable[[Path, Path], object]:
    def make(work: Path, tmp: Path) -> object:
        (tmp / "bad_data.py").write_text(PYTHON_DATA)
        return f"{tmp / 'bad_data.py'}:{function}"

    return make


DATA_CASES: dict[str, tuple[Callable[[Path, Path], object], list[str]]] = {
    "nan": (_nan, ["sample 2", "input 'input'", "NaN"]),
    "int_dtype": (_int_dtype, ["sample 0", "input 'input'", "int32", "float32"]),
    "wrong_rank": (_wrong_rank, ["input", "rank"]),
    "extra_input": (_extra_input, ["mask"]),
    "no_samples": (_no_samples, ["no samples"]),
    "pickled_objects": (_object_array, ["pickle"]),
    "generator_raises_midway": (_python("midway"), ["sample 3", "camera unplugged"]),
    "shape_changes": (_python("changing_shape"), ["sample 1", "input 'input'", "[1, 3, 16, 15]", "axis 3"]),
    "not_iterable": (_python("not_iterable"), ["int"]),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_cli_bad_data_is_one_line(case: str, work: Path, tmp_path: Path) -> None:
    make, expected = DATA_CASES[case]
    data = make(work, tmp_path)
    line = one_line_error(run_cli("calibrate", work / "conv.onnx", "--data", data, "-o", tmp_path / "c.json", "-q"))
    for part in expected:
        assert part in line, (part, line)
    assert not (tmp_path / "c.json").exists()


# -- hostile names ------------------------------------------------------------------------------------


def test_cli_hostile_names_are_guarded_in_csv_and_escaped_in_report(tmp_path: Path) -> None:
    model, chosen = hostile.hostile_names(np.random.default_rng(3))
    onnx.save(model, tmp_path / "names.onnx")
    np.savez(tmp_path / "data.npz", input=np.random.default_rng(4).standard_normal((3, 3, 16, 16)).astype(np.float32))
    stats = tmp_path / "stats"
    result = run_cli("debug", tmp_path / "names.onnx", "--data", tmp_path / "data.npz", "-o", stats, "-q")
    assert result.returncode == 0, result.stderr
    with open(stats / "layer_statistics.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert all(row["node_name"][:1] not in FORMULA_CHARS for row in rows)
    assert set(chosen) & {unguard(row["node_name"]) for row in rows}
    report = run_cli("report", stats, "-o", tmp_path / "report.html", "-q")
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    guarded = next(row["node_name"] for row in rows if row["node_name"].startswith("'"))
    denied = run_cli(
        "debug", tmp_path / "names.onnx", "--data", tmp_path / "data.npz", "-o", tmp_path / "s2", "-q",
        "--denylist-nodes", guarded,
    )  # fmt: skip
    assert denied.returncode == 0, denied.stderr
    with open(tmp_path / "s2" / "layer_statistics.csv", newline="", encoding="utf-8") as handle:
        assert guarded not in {row["node_name"] for row in csv.DictReader(handle)}
