"""Public paths for re-exported objects, as onnx/ir-py does it: private modules do the work, packages declare."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def publish(package: str, namespace: Mapping[str, Any], names: Iterable[str]) -> None:
    """Give each object ``package`` declares in ``names`` and defines in one of its private modules the
    package as its ``__module__``, so that reprs, tracebacks, pickles and docs show the path users import.

    Subpackages run this before their parents import from them, so an object keeps the innermost
    public package that declares it (``quantdebug.pipeline.results.Statistics``, not ``quantdebug``).
    """
    for name in names:
        obj = namespace[name]
        module = getattr(obj, "__module__", None)
        if isinstance(module, str) and module.startswith(package + "._"):
            try:
                obj.__module__ = package
            except (AttributeError, TypeError):  # constants and builtins: nothing to rename
                pass
