"""The command line formats warnings as one ``warning: ...`` line only while a command runs: a program that
calls ``main()`` gets its own ``warnings.showwarning`` back afterwards, on success and on error alike."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from tests import models

from quantdebug.cli import main

DATA = """
import warnings
import numpy as np

def samples():
    warnings.warn("the data\\n   warns across lines", UserWarning)
    if {fail!r}:
        raise RuntimeError("the data source broke")
    arrays = np.load({path!r})
    for i in range(len(arrays["input"])):
        yield {{"input": arrays["input"][i : i + 1]}}
"""


def _write_case(tmp_path: Path, rng: np.random.Generator, *, fail: bool) -> tuple[Path, str]:
    model = models.conv_relu(rng)
    onnx.save(model, tmp_path / "model.onnx")
    np.savez(tmp_path / "data.npz", input=np.concatenate([models.input_feed(model, rng)["input"] for _ in range(3)]))
    module = tmp_path / ("broken_data.py" if fail else "warning_data.py")
    module.write_text(DATA.format(fail=fail, path=str(tmp_path / "data.npz")), encoding="utf-8")
    return tmp_path / "model.onnx", f"{module}:samples"


@pytest.mark.parametrize("fail", [False, True], ids=["success", "error"])
def test_main_formats_warnings_while_it_runs_and_gives_the_process_hook_back(
    fail: bool, tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    seen: list[str] = []

    def program_hook(message: Warning | str, *args: Any, **kwargs: Any) -> None:
        seen.append(str(message))

    monkeypatch.setattr(warnings, "showwarning", program_hook)  # the embedding program's own hook
    model, data = _write_case(tmp_path, rng, fail=fail)
    out = tmp_path / "cal.json"
    with pytest.raises(SystemExit) as done:
        main(["calibrate", str(model), "--data", data, "-o", str(out), "-q"])
    assert done.value.code == (1 if fail else 0)
    err = capsys.readouterr().err.splitlines()
    assert "warning: the data warns across lines" in err  # formatted by the CLI while the command ran
    assert seen == []  # ... and not handed to the program's hook meanwhile
    assert out.is_file() is not fail
    if fail:
        assert any(line.startswith("error: ") and "the data source broke" in line for line in err), err
    assert warnings.showwarning is program_hook  # the process-wide hook is the one it was before main()


def test_the_group_alone_leaves_no_hook_behind(tmp_path: Path, rng: np.random.Generator) -> None:
    """``cli.main(..., standalone_mode=False)`` (how a test or a program embeds the group) restores it too."""
    from quantdebug.cli import cli

    before = warnings.showwarning
    model, data = _write_case(tmp_path, rng, fail=False)
    cli.main(["calibrate", str(model), "--data", data, "-o", str(tmp_path / "cal.json"), "-q"], standalone_mode=False)
    assert (tmp_path / "cal.json").is_file()
    assert warnings.showwarning is before
