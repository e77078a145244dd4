"""Files quantdebug writes are written atomically, and nothing in the source unpickles user data."""

from __future__ import annotations

import ast
import errno
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests import models
from tests.helpers import dataset

import quantdebug as qd
from quantdebug.support import _io

SRC = Path(qd.__file__).resolve().parent


@pytest.fixture(scope="module")
def results() -> tuple[qd.Calibration, qd.Statistics, bytes]:
    rng = np.random.default_rng(9)
    model = models.conv_relu(rng)
    feeds = [models.input_feed(model, rng) for _ in range(3)]
    dbg = qd.QuantizationDebugger(model, dataset(feeds))
    dbg.run()
    assert dbg.calibration is not None
    return dbg.calibration, dbg.statistics(), dbg.get_nondebug_quantized_model().SerializeToString()


class _Failing(io.RawIOBase):
    """A file whose first write stores half of the data and then fails, like a full disk."""

    def __init__(self, handle: Any, error: BaseException) -> None:
        self._handle = handle
        self._error = error

    def write(self, data: Any) -> int:
        self._handle.write(data[: max(1, len(data) // 2)])
        self._handle.flush()
        raise self._error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _Failing:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


@pytest.fixture
def failing_writes(monkeypatch: pytest.MonkeyPatch) -> Callable[[BaseException, str], None]:
    """Make ``_io``'s writes of files whose name ends with ``suffix`` fail halfway with ``error``."""

    def arm(error: BaseException, suffix: str = "") -> None:
        real_mkstemp, real_fdopen = tempfile.mkstemp, os.fdopen
        temp_names: dict[int, str] = {}

        def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
            fd, name = real_mkstemp(*args, **kwargs)
            temp_names[fd] = name
            return fd, name

        def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
            handle = real_fdopen(fd, *args, **kwargs)
            target = Path(temp_names.get(fd, "")).name
            if target.endswith(".tmp") and target[: -len(".tmp")].rsplit(".", 1)[0].endswith(suffix):
                return _Failing(handle, error)
            return handle

        monkeypatch.setattr(_io.tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(_io.os, "fdopen", fdopen)

    return arm


def _save_calibration(r: tuple[qd.Calibration, qd.Statistics, bytes], target: Path) -> None:
    r[0].save(target)


def _save_statistics(r: tuple[qd.Calibration, qd.Statistics, bytes], target: Path) -> None:
    r[1].save(target.parent)


def _save_report(r: tuple[qd.Calibration, qd.Statistics, bytes], target: Path) -> None:
    from quantdebug.report import save_html

    save_html(r[1], target)


def _save_explorer(r: tuple[qd.Calibration, qd.Statistics, bytes], target: Path) -> None:
    from quantdebug.report import save_explorer_node_data

    save_explorer_node_data(r[1], target)


def _save_model(r: tuple[qd.Calibration, qd.Statistics, bytes], target: Path) -> None:
    _io.write_bytes(target, r[2])  # how the CLI and FixResult.save_model write quantized models


WRITERS = {
    "calibration": (_save_calibration, "cal.json"),
    "statistics_csv": (_save_statistics, "layer_statistics.csv"),
    "statistics_json": (_save_statistics, "statistics.json"),
    "report_html": (_save_report, "report.html"),
    "explorer_json": (_save_explorer, "explorer.json"),
    "quantized_model": (_save_model, "model.int8.onnx"),
}


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()], ids=["disk-full", "ctrl-c"]
)
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_write_failing_halfway_keeps_the_old_file_and_leaves_no_temp_file(
    writer: str,
    error: BaseException,
    results: tuple[qd.Calibration, qd.Statistics, bytes],
    tmp_path: Path,
    failing_writes: Callable[[BaseException, str], None],
) -> None:
    save, name = WRITERS[writer]
    target = tmp_path / "out" / name
    target.parent.mkdir()
    old = {p.name: p.read_bytes() for p in _seed(target.parent)}
    complete = tmp_path / "complete"
    results[1].save(complete)
    failing_writes(error, name)
    with pytest.raises(type(error)):
        save(results, target)
    after = {p.name: p.read_bytes() for p in target.parent.iterdir()}
    assert after.keys() == old.keys(), "no temp file (or anything else) was left behind"
    assert after[name] == old[name], f"the old {name} is intact"
    for other, content in after.items():  # a file written before the failure is whole (the other statistics file)
        if content != old[other]:
            assert writer.startswith("statistics") and other in ("layer_statistics.csv", "statistics.json"), other
            assert content == (complete / other).read_bytes()


def _seed(folder: Path) -> Iterator[Path]:
    for name in (
        "cal.json",
        "layer_statistics.csv",
        "statistics.json",
        "report.html",
        "explorer.json",
        "model.int8.onnx",
    ):
        (folder / name).write_bytes(f"old {name}\n".encode())
        yield folder / name


def test_successful_write_replaces_the_file_and_leaves_no_temp_file(
    results: tuple[qd.Calibration, qd.Statistics, bytes], tmp_path: Path
) -> None:
    for save, name in WRITERS.values():
        target = tmp_path / name
        target.write_text("old")
        save(results, target)
        assert target.read_bytes() != b"old"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert qd.Calibration.load(tmp_path / "cal.json").num_samples == results[0].num_samples


# -- static checks on the source tree ---------------------------------------------------------------------

_UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
_IPC_ONLY = {
    # Ray's own task transport: the user's functions go to Ray workers the user started (Ray pickles every
    # task and result anyway, so a Ray cluster must be trusted like the local machine). Nothing read from
    # a file or a dataset is unpickled.
    ("quantdebug/executors/_ray.py", "cloudpickle"),
}


def _python_files() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_source_never_unpickles_user_data() -> None:
    """No pickle-family import and no ``allow_pickle=True`` anywhere in src (strings and comments may mention it)."""
    found = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(SRC.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
                )
                bad = [n for n in names if n.split(".")[0] in _UNSAFE_MODULES]
                if bad:
                    found.append(f"{where}:{node.lineno} imports {bad}")
            if isinstance(node, ast.Name | ast.Attribute):
                ident = node.id if isinstance(node, ast.Name) else node.attr
                if ident in _UNSAFE_MODULES and (where.as_posix(), ident) not in _IPC_ONLY:
                    found.append(f"{where}:{node.lineno} uses {ident}")
            if isinstance(node, ast.Call):
                value = _keyword(node, "allow_pickle")
                if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
                    found.append(f"{where}:{node.lineno} passes allow_pickle={ast.unparse(value)}")
                func = ast.unparse(node.func)
                if func.endswith("torch.load") and not (
                    isinstance(_keyword(node, "weights_only"), ast.Constant)
                    and _keyword(node, "weights_only").value is True  # type: ignore[union-attr]
                ):
                    found.append(f"{where}:{node.lineno} calls torch.load without weights_only=True")
    raw = [
        f"{p.relative_to(SRC.parent)}:{i}"
        for p in _python_files()
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if "allow_pickle=True" in line.replace(" ", "")
    ]
    assert not found and not raw, found + raw


_WRITE_CALLS = {
    "onnx.save",
    "onnx.save_model",
    "np.save",
    "np.savez",
    "np.savez_compressed",
    "numpy.save",
    "json.dump",
    "shutil.copy",
    "shutil.copyfile",
    "shutil.copy2",
    "shutil.move",
    "os.rename",
    "os.replace",
}
_WRITE_METHODS = {"write_text", "write_bytes", "savefig", "to_csv", "to_json", "to_parquet"}


def test_every_file_write_in_the_source_goes_through_io() -> None:
    """Files quantdebug writes for the user go through ``_io`` (atomic); ``tempfile`` folders are private."""
    found = []
    for path in _python_files():
        if path.name == "_io.py" and path.parent == SRC / "support":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(SRC.parent)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = ast.unparse(node.func)
            method = node.func.attr if isinstance(node.func, ast.Attribute) else ""
            owner = ast.unparse(node.func.value) if isinstance(node.func, ast.Attribute) else ""
            if func in _WRITE_CALLS or (method in _WRITE_METHODS and owner != "_io"):
                found.append(f"{where}:{node.lineno} {func}(...)")
            if func == "open" or method == "open":
                mode = node.args[1] if len(node.args) > 1 else _keyword(node, "mode")
                if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) & set("wax+"):
                    found.append(f"{where}:{node.lineno} {func}(..., {mode.value!r})")
    assert not found, "write these through quantdebug.support._io (atomic): " + "; ".join(found)
