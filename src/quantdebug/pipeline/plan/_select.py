"""Resolve layer selectors (node name, output-tensor name, op type, ``re:`` regex) to node names.

Precedence, for one selector string: an exact node name (the pre-processed model's, or the
user's original name), then an output-tensor name (including the tensor a statistics row
shows), then a ``re:`` regular expression over node names. Op types are matched only where
an op type is asked for (``denylisted_ops``) or written as ``op:Type``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping, Sequence

import onnx

from quantdebug.errors import ConfigError, suggest
from quantdebug.support import FORMULA_CHARS


def unguard(name: str) -> str:
    """Strip the spreadsheet guard the CSV writes before names that start like a formula."""
    if name.startswith("'") and name[1:2] in FORMULA_CHARS:
        return name[1:]
    return name


class _UnknownName(ConfigError):
    """A selector that names no node or tensor; resolve_precisions names every such selector in one error."""

    def __init__(self, what: str, selector: str, hint: str, total: int) -> None:
        self.what, self.selector, self.hint, self.total = what, selector, hint, total
        super().__init__(
            f"{what}: no node or tensor named {selector!r}{';' + hint if hint else ''} "
            f"({total} nodes; see debugger.coverage() for every name)"
        )


def _all_unknown(found: list[_UnknownName]) -> ConfigError:
    """One error naming every unknown selector, each with its suggestions."""
    if len(found) == 1:
        return found[0]
    names = "; ".join(f"{u.selector!r}{(' (' + u.hint.strip() + ')') if u.hint else ''}" for u in found)
    return ConfigError(
        f"{found[0].what}: {len(found)} names match no node or tensor: {names} "
        f"({found[0].total} nodes; see debugger.coverage() for every name)"
    )


class Selector:
    def __init__(
        self,
        model: onnx.ModelProto,
        covers: Mapping[str, Sequence[str]],
        renamed: Mapping[str, str],
        row_tensors: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.nodes = [n.name for n in model.graph.node]
        self.op_of = {n.name: n.op_type for n in model.graph.node}
        self.producer = {o: n.name for n in model.graph.node for o in n.output if o}
        self.user_names: dict[str, list[str]] = {}
        for pre, users in covers.items():
            for user in users:
                self.user_names.setdefault(renamed.get(user, user), []).append(pre)
        self.row_tensors = dict(row_tensors or {})

    def nodes_for(self, selector: str, what: str) -> list[str]:
        name = unguard(selector)
        if name in self.op_of:
            return [name]
        if name in self.user_names:
            owners = sorted(set(self.user_names[name]))
            if len(owners) > 1:
                raise ConfigError(
                    f"{what} {selector!r} matches {len(owners)} nodes ({', '.join(owners[:6])}); "
                    "use the unique names shown in the statistics (node_name column)"
                )
            return owners
        if name in self.row_tensors:
            return list(self.row_tensors[name])
        if name in self.producer:
            return [self.producer[name]]
        if name.startswith("op:"):
            return self.nodes_of_type(name[3:], what)
        if name.startswith("re:"):
            try:
                pattern = re.compile(name[3:])
            except re.error as exc:
                raise ConfigError(f"{what} {selector!r} is not a valid regular expression: {exc}") from exc
            matched = [n for n in self.nodes if pattern.search(n)]
            if not matched:
                raise ConfigError(f"{what} {selector!r} matches no node name")
            return matched
        hint = suggest(name, [*self.op_of, *self.row_tensors, *self.producer])
        raise _UnknownName(what, selector, hint, len(self.nodes))

    def nodes_of_type(self, op_type: str, what: str) -> list[str]:
        matched = [n for n in self.nodes if self.op_of[n] == op_type]
        if not matched:
            present = sorted(set(self.op_of.values()))
            raise ConfigError(
                f"{what}: the model has no {op_type!r} node;{suggest(op_type, present) or ''} "
                f"op types present: {', '.join(present)}"
            )
        return matched


def resolve_precisions(
    selector: Selector,
    rules: Iterable[tuple[str, str]],
    denylisted_nodes: Iterable[str],
    denylisted_ops: Iterable[str],
    quantizable_ops: Iterable[str],
) -> dict[str, str]:
    """Apply the ordered rules; return {node: precision} for the nodes any rule touched.

    Order: ``QuantConfig.node_precision`` rules first, in order, then ``denylisted_ops`` and
    ``denylisted_nodes`` as ``"float"`` rules; a later rule overrides an earlier one.
    """
    out: dict[str, str] = {}
    unknown: list[_UnknownName] = []
    for selector_text, precision in rules:
        try:
            for node in selector.nodes_for(selector_text, "node_precision"):
                out[node] = precision
        except _UnknownName as exc:  # gathered: one error names every typo
            unknown.append(exc)
    if unknown:
        raise _all_unknown(unknown)
    quantizable = set(quantizable_ops)
    for op_type in denylisted_ops:
        nodes = selector.nodes_of_type(op_type, "denylisted_ops")
        if op_type not in quantizable:
            warnings.warn(
                f"denylisted_ops: {op_type!r} is never quantized by onnxruntime's quantizer, "
                "so denylisting it changes nothing",
                stacklevel=3,
            )
        for node in nodes:
            out[node] = "float"
    for name in denylisted_nodes:
        try:
            for node in selector.nodes_for(name, "denylisted_nodes"):
                out[node] = "float"
        except _UnknownName as exc:
            unknown.append(exc)
    if unknown:
        raise _all_unknown(unknown)
    return out
