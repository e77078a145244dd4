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


def _development_map() -> str:
    section = README.read_text(encoding="utf-8").split("## Development", 1)[1]
    return re.search(r"```\n(.*?)```", section, flags=re.S).group(1)  # type: ignore[union-attr]


def test_development_map_names_every_package_and_nothing_else() -> None:
    src = README.parent / "src" / "quantdebug"
    packages = {p.parent.name for p in src.rglob("__init__.py") if p.parent != src}
    named = set(re.findall(r"([a-z_]+)/", _development_map())) - {"src", "quantdebug", "tests", "benchmarks", "assets"}
    assert packages <= named, f"packages the README map leaves out: {sorted(packages - named)}"
    assert named <= packages, f"the README map names folders that do not exist: {sorted(named - packages)}"


def test_development_section_names_modules_that_exist() -> None:
    section = README.read_text(encoding="utf-8").split("## Development", 1)[1]
    src = README.parent / "src" / "quantdebug"
    paths = set(re.findall(r"`([a-z_/]+\.py)`", section))
    assert len(paths) >= 8, f"the Development section names too few modules: {sorted(paths)}"
    missing = sorted(p for p in paths if not (src / p).exists() and not (README.parent / p).exists())
    assert not missing, f"the README's Development section names modules that do not exist: {missing}"
