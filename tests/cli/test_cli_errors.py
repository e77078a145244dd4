"""The command line blames the right thing, early (issue 16): the option at fault before any work, the
user's eval function for its own exceptions, NHWC data with the transpose, every denylist typo at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from tests import models
from tests.cli.test_cli import ok, one_line_error, run_cli

EVAL = """
calls = {"n": 0}

def evaluate(session):
    calls["n"] += 1
    if calls["n"] == 2:  # the float baseline works, the first quantized candidate does not
        return 1 / 0
    return 1.0
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli_errors")
    rng = np.random.default_rng(16)
    onnx.save(models.conv_relu(rng), folder / "conv.onnx")
    np.savez(folder / "conv.npz", input=rng.standard_normal((3, 3, 16, 16)).astype(np.float32))
    (folder / "my_eval.py").write_text(EVAL)
    return folder


def test_a_typo_in_eval_is_named_before_any_work(work: Path, tmp_path: Path) -> None:
    # no --quiet: a note such as "calibrating ..." would show that work began before the check
    result = run_cli("fix", work / "conv.onnx", "--data", work / "conv.npz", "--eval", "nosuchmod:evaluate",
                     "-o", tmp_path / "f.onnx", cwd=tmp_path)  # fmt: skip
    assert one_line_error(result) == "error: --eval 'nosuchmod:evaluate': no Python module named 'nosuchmod'"
    result = run_cli("fix", work / "conv.onnx", "--data", work / "conv.npz", "--eval", f"{work / 'my_eval.py'}:evalute",
                     "-o", tmp_path / "f.onnx", cwd=tmp_path)  # fmt: skip
    line = one_line_error(result)
    assert line.startswith("error: --eval ") and "no attribute 'evalute'" in line and "'evaluate'" in line
    assert not (tmp_path / "f.onnx").exists()


def test_a_typo_in_data_names_the_option(work: Path, tmp_path: Path) -> None:
    result = run_cli("calibrate", work / "conv.onnx", "--data", "nosuchmod:samples", "-o", tmp_path / "c.json")
    line = one_line_error(result)
    assert line == "error: --data 'nosuchmod:samples': no data path and no Python module named 'nosuchmod'"


def test_an_exception_in_the_eval_function_is_blamed_on_it(work: Path, tmp_path: Path) -> None:
    args = ("fix", work / "conv.onnx", "--data", work / "conv.npz", "--eval", f"{work / 'my_eval.py'}:evaluate",
            "--target", "0.5", "-o", tmp_path / "f.onnx")  # fmt: skip
    line = one_line_error(run_cli(*args, "-q"))
    assert line.startswith("error: the eval function raised ZeroDivisionError: division by zero"), line
    assert "evaluation 2" in line and "'int8' (all int8)" in line
    shown = run_cli("--debug", *args, "-q")
    assert shown.returncode == 1
    # the user's own frame, then the error that names the candidate, chained
    assert "my_eval.py" in shown.stderr and "return 1 / 0" in shown.stderr
    assert "direct cause of the following exception" in shown.stderr and "EvalFunctionError" in shown.stderr


def test_nhwc_data_gets_the_transpose_that_fixes_it(work: Path, tmp_path: Path) -> None:
    nhwc = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype(np.float32)
    np.savez(tmp_path / "nhwc.npz", input=nhwc)
    line = one_line_error(run_cli("calibrate", work / "conv.onnx", "--data", tmp_path / "nhwc.npz", "-o", "c", "-q"))
    assert "shape [1, 16, 16, 3] differs" in line and "np.transpose(x, (0, 3, 1, 2))" in line, line
    np.savez(tmp_path / "nchw.npz", input=np.transpose(nhwc, (0, 3, 1, 2)))  # the hint's transpose works
    ok(run_cli("calibrate", work / "conv.onnx", "--data", tmp_path / "nchw.npz", "-o", tmp_path / "c.json", "-q"))


def test_every_unknown_denylisted_name_is_named(work: Path, tmp_path: Path) -> None:
    result = run_cli("quantize", work / "conv.onnx", "--data", work / "conv.npz", "-q",
                     "--denylist-nodes", "conv9,relu1,relu7", "-o", tmp_path / "q.onnx")  # fmt: skip
    line = one_line_error(result)
    assert "2 names match no node or tensor" in line and "'conv9'" in line and "'relu7'" in line, line


def test_float64_data_is_noted_once(work: Path, tmp_path: Path) -> None:
    data = np.random.default_rng(1).standard_normal((3, 3, 16, 16))  # float64
    np.savez(tmp_path / "f64.npz", input=data)
    result = ok(run_cli("debug", work / "conv.onnx", "--data", tmp_path / "f64.npz", "-o", tmp_path / "s", "-q"))
    notes = [line for line in result.stderr.splitlines() if "cast to the model's float32" in line]
    assert len(notes) == 1 and notes[0].startswith("warning: ") and "float64" in notes[0], result.stderr
