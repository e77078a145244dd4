"""Graph plumbing the weight transforms share: constants, consumers, unique names, weight edits.

Every transform works on a private copy of the user's model (``Graph.of``) and edits constants
through ``Graph.set_const``, which never changes a constant another node still reads.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from quantdebug.errors import ConfigError, suggest

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
NEW_PREFIX = "__qd/"  # names of nodes and initializers a transform adds
SHAPE_READERS = ("Shape", "Size")  # read only a tensor's shape, which rescaling its values leaves alone


def default_opset(model: onnx.ModelProto) -> int:
    return next((int(i.version) for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)


def record(kind: str, nodes: Sequence[str], status: str, reason: str) -> dict[str, object]:
    """One line of a transform's account: every candidate appears, applied or skipped with why."""
    return {"kind": kind, "nodes": list(nodes), "status": status, "reason": reason}


def attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def set_attr(node: onnx.NodeProto, name: str, value: object) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    if value is not None:
        node.attribute.append(onnx.helper.make_attribute(name, value))


class Graph:
    """A working copy of a model's main graph with the indexes the transforms ask about."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = default_opset(model)
        self.inits = {t.name: t for t in self.graph.initializer}
        # an initializer that is also a graph input can be overridden at run time: not a constant
        inputs = {i.name for i in self.graph.input}
        self.constants: dict[str, np.ndarray] = {
            name: numpy_helper.to_array(t) for name, t in self.inits.items() if name not in inputs
        }
        for node in self.graph.node:
            if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.outputs = {o.name for o in self.graph.output}
        # tensors If/Loop/Scan bodies read from the outer scope: readers the consumer index cannot see
        self.subgraph_refs = _subgraph_reads(self.graph)
        self.names = {n.name for n in self.graph.node} | set(self.inits) | inputs
        self.names |= {t for n in self.graph.node for t in n.output}
        self.reindex()

    @classmethod
    def of(cls, model: onnx.ModelProto) -> Graph:
        if not isinstance(model, onnx.ModelProto):
            raise ConfigError(f"expected an onnx.ModelProto, got {type(model).__name__}")
        return cls(copy.deepcopy(model))

    def reindex(self) -> None:
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        self.by_name = {n.name: n for n in self.graph.node}
        for node in self.graph.node:
            for out in node.output:
                if out:
                    self.producer[out] = node
            for inp in node.input:
                if inp and node not in self.consumers[inp]:
                    self.consumers[inp].append(node)

    def const(self, name: str) -> np.ndarray | None:
        return self.constants.get(name) if name else None

    def input_const(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        return self.const(node.input[index]) if len(node.input) > index else None

    def only_consumer(self, tensor: str) -> onnx.NodeProto | str:
        """The one node that reads ``tensor``, or why there is not exactly one (a reason string)."""
        if tensor in self.outputs:
            return f"{tensor!r} is a graph output"
        if tensor in self.subgraph_refs:
            return f"{tensor!r} is read inside a subgraph (If/Loop/Scan)"
        users = self.value_readers(tensor)
        if len(users) != 1:
            names = ", ".join(f"{u.name} ({u.op_type})" for u in users) or "nothing"
            return f"{tensor!r} feeds {names}"
        if sum(1 for i in users[0].input if i == tensor) != 1:
            return f"{tensor!r} is read twice by {users[0].name}"
        return users[0]

    def value_readers(self, tensor: str) -> list[onnx.NodeProto]:
        """The nodes that read ``tensor``'s values (Shape and Size do not)."""
        return [n for n in self.consumers.get(tensor, []) if n.op_type not in SHAPE_READERS]

    def fresh(self, stem: str) -> str:
        """A new ``__qd/...`` name no node, tensor or initializer of the model has."""
        name = NEW_PREFIX + stem
        k = 1
        while name in self.names:
            k += 1
            name = f"{NEW_PREFIX}{stem}_{k}"
        self.names.add(name)
        return name

    def set_const(self, node: onnx.NodeProto, index: int, value: np.ndarray, stem: str) -> None:
        """Give ``node``'s input ``index`` the constant ``value`` (in the old constant's dtype, if any).

        The initializer is rewritten in place only when no other node reads it; otherwise (or when
        the constant came from a Constant node, or the input was absent) a new initializer is added.
        """
        old = node.input[index] if len(node.input) > index else ""
        old_value = self.constants.get(old) if old else None
        dtype = old_value.dtype if old_value is not None else np.dtype(np.float32)
        value = np.asarray(value).astype(dtype)
        private = len(self.consumers.get(old, [])) == 1 and old not in self.outputs | self.subgraph_refs
        if old and old in self.inits and private:
            self.inits[old].CopyFrom(numpy_helper.from_array(value, old))
            self.constants[old] = value
            return
        name = self.fresh(stem)
        tensor = numpy_helper.from_array(value, name)
        self.graph.initializer.append(tensor)
        self.inits[name] = self.graph.initializer[-1]
        self.constants[name] = value
        while len(node.input) <= index:
            node.input.append("")
        if old:
            self.consumers[old] = [c for c in self.consumers[old] if c is not node or list(c.input).count(old) > 1]
        node.input[index] = name
        self.consumers[name] = [node]

    def drop_unused_initializers(self) -> None:
        """Remove the initializers nothing reads any more (a folded BatchNormalization's, replaced weights)."""
        used = {i for n in self.graph.node for i in n.input} | self.outputs | self.subgraph_refs
        used |= {i.name for i in self.graph.input}
        kept = [t for t in self.graph.initializer if t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)

    def drop_value_info(self, tensors: Iterable[str]) -> None:
        gone = set(tensors)
        kept = [v for v in self.graph.value_info if v.name not in gone]
        del self.graph.value_info[:]
        self.graph.value_info.extend(kept)


def _subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    reads: set[str] = set()
    for node in graph.node:
        for a in node.attribute:
            for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                reads |= {i for n in sub.node for i in n.input} | _subgraph_reads(sub)
    return reads


def check_node_names(model: onnx.ModelProto, nodes: Sequence[str] | None, what: str) -> set[str] | None:
    """The set of node names to transform (None: all); an unknown name is a ConfigError."""
    if nodes is None:
        return None
    if isinstance(nodes, str):
        raise ConfigError(f"{what}: nodes must be a list of node names, not the string {nodes!r}")
    known = {n.name for n in model.graph.node}
    for name in nodes:
        if name not in known:
            raise ConfigError(f"{what}: the model has no node named {name!r};{suggest(name, known)}")
    return set(nodes)
