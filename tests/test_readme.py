"""The README's Python examples run, in order, as one session (blocks marked ```python)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_examples() -> None:
    assert len(_blocks()) >= 3


def test_readme_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    for index, block in enumerate(_blocks()):
        try:
            exec(compile(block, f"README.md block {index}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the failure message is the point
            raise AssertionError(f"README python block {index} failed: {exc!r}") from exc
    assert (tmp_path / "debugger_results.csv").read_text().startswith("op_name,tensor_idx,")
    assert (tmp_path / "model_fixed.onnx").stat().st_size > 0
    assert os.path.exists(tmp_path / "calibration.json")
