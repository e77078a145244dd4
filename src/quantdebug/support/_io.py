"""Atomic file writes: a reader sees the old file or the new one, never a truncated mix."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

FORMULA_CHARS = ("=", "+", "-", "@")
"""A CSV cell starting with one of these runs as a formula in a spreadsheet: the CSV guards such names."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[str]]:
    """Open a temp file beside ``path``; on success fsync and rename it over ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    binary = "b" in mode
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644 & ~_umask())  # mkstemp makes 0600 files; results are meant to be shared
        with os.fdopen(fd, mode, encoding=None if binary else encoding, newline=None if binary else "") as handle:
            yield handle  # type: ignore[misc]
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_model_with_data(path: str | os.PathLike[str], data_name: str) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    """Yield (model, data) handles of temp files in a folder beside ``path``; on success move them into place.

    The data file becomes ``data_name`` beside ``path``, renamed before the model, so the model
    file at ``path`` is the old one or the new one, never a truncated mix.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        with open(staging / target.name, "wb") as model, open(staging / data_name, "wb") as data:
            yield model, data
            for handle in (data, model):
                handle.flush()
                os.fsync(handle.fileno())
        for name in (data_name, target.name):
            os.chmod(staging / name, 0o644 & ~_umask())
        os.replace(staging / data_name, target.parent / data_name)
        os.replace(staging / target.name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)  # type: ignore[arg-type]


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def read_json_object(path: Path, error: type[Exception], kind: str) -> dict[str, Any]:
    """The JSON object in ``path``; ``error`` names the file when it is not JSON or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{str(path)!r} is not valid JSON ({exc}); was it truncated?") from exc
    if not isinstance(data, dict):
        raise error(f"{str(path)!r} is not a quantdebug {kind}")
    return data
