"""Helpers the framework frontends share: optional imports, renaming graph values, provenance."""

from __future__ import annotations

import re
from collections.abc import Mapping

import onnx

from quantdebug.errors import MissingExtraError, missing_extra

__all__ = ["MissingExtraError", "missing_extra", "rename_values", "safe_name", "set_metadata"]


def safe_name(name: str, taken: set[str], fallback: str) -> str:
    """A graph-friendly, unique name: letters, digits, '_', '.', '-'."""
    base = re.sub(r"[^A-Za-z0-9_.\-]", "_", name).strip("_") or fallback
    candidate, k = base, 1
    while candidate in taken:
        candidate = f"{base}_{k}"
        k += 1
    taken.add(candidate)
    return candidate


def rename_values(model: onnx.ModelProto, mapping: Mapping[str, str]) -> None:
    """Rename graph values (inputs, outputs, node edges, value_info) in place."""
    mapping = {k: v for k, v in mapping.items() if k != v}
    if not mapping:
        return
    graph = model.graph
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
    for coll in (graph.input, graph.output, graph.value_info):
        for vi in coll:
            if vi.name in mapping:
                vi.name = mapping[vi.name]
    for init in graph.initializer:
        if init.name in mapping:
            init.name = mapping[init.name]


def set_metadata(model: onnx.ModelProto, entries: Mapping[str, str]) -> None:
    """Record how the model was made in its metadata_props (keys prefixed 'quantdebug.')."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in entries.items():
        full = f"quantdebug.{key}"
        if full in existing:
            existing[full].value = value
        else:
            prop = model.metadata_props.add()
            prop.key, prop.value = full, value
