"""What actually runs in the optimized quantized graph, mapped back to the float model.

onnxruntime fuses a QDQ model into QLinear ops and leaves some DQ -> op -> Q units; a *unit* is
one node (or one such chain) that produces a quantized tensor. Each unit is mapped, through an
explicit graph walk, to the float tensor it stands for and to the float-model nodes that compute
that tensor from the unit's inputs (its float twin).
"""

from __future__ import annotations

import dataclasses

import onnx

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Position of (output scale, output zero point) among the inputs of fused quantized ops.
OUTPUT_QPARAMS = {
    "QLinearConv": (6, 7),
    "QLinearMatMul": (6, 7),
    "QGemm": (7, 8),
    "QLinearAdd": (6, 7),
    "QLinearMul": (6, 7),
    "QLinearSigmoid": (3, 4),
    "QLinearLeakyRelu": (3, 4),
    "QLinearSoftmax": (3, 4),
    "QLinearAveragePool": (3, 4),
    "QLinearGlobalAveragePool": (3, 4),
    "QLinearReduceMean": (3, 4),
    "QLinearConcat": (0, 1),
    "QLinearWhere": (7, 8),
}
# Ops that move quantized values without changing them; they run directly on integers.
MOVE_OPS = {
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "MaxPool",
    "Slice",
    "Gather",
    "GatherElements",
    "Split",
    "Pad",
    "Resize",
    "Identity",
    "DepthToSpace",
    "SpaceToDepth",
    "Expand",
    "Tile",
    "TopK",
}
MAX_TWIN_NODES = 64
FUSABLE_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu"}


@dataclasses.dataclass(frozen=True)
class QParams:
    scale: str  # initializer names in the optimized model
    zero_point: str
    axis: int | None = None


@dataclasses.dataclass(frozen=True)
class Boundary:
    """A float-model tensor that a twin reads, and where the debug graph finds its value."""

    float_tensor: str
    source: str  # tensor in the optimized model
    qparams: QParams | None  # set when ``source`` is integer and must be dequantized


@dataclasses.dataclass(frozen=True)
class Unit:
    node: str  # float-model node that names the row (the producer, e.g. Conv for Conv+Relu)
    op_type: str
    runtime_node: str  # node of the optimized model that produces the quantized output
    runtime_op: str
    output: str  # integer tensor in the optimized model
    qparams: QParams
    float_tensor: str  # the float-model tensor it stands for
    qdq_tensor: str  # the same tensor's name in the QDQ model (where its Q node lives)
    boundaries: tuple[Boundary, ...]
    twin: tuple[str, ...]  # float-model nodes computing float_tensor from the boundaries, topological


@dataclasses.dataclass(frozen=True)
class Skipped:
    runtime_node: str
    reason: str


class _Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.nodes = list(g.node)
        self.by_name = {n.name: n for n in self.nodes}
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.nodes:
            for t in n.input:
                if t:
                    self.consumers.setdefault(t, []).append(n)
        self.initializers = {i.name for i in g.initializer}
        self.inputs = {i.name for i in g.input} - self.initializers
        self.constants = self.initializers | {o for n in self.nodes if n.op_type == "Constant" for o in n.output}
        self.tensors = self.inputs | set(self.producer)


def _attr_int(node: onnx.NodeProto, name: str) -> int | None:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return None


class UnitMapper:
    """Builds the units of an optimized quantized model against its QDQ and float models."""

    def __init__(self, float_model: onnx.ModelProto, qdq_model: onnx.ModelProto, optimized: onnx.ModelProto) -> None:
        self.f = _Graph(float_model)
        self.q = _Graph(qdq_model)
        self.o = _Graph(optimized)
        self.q_source = {n.output[0]: n.input[0] for n in self.q.nodes if n.op_type == "QuantizeLinear"}
        self.int_tensors = self._integer_tensors()

    # -- integer tensors and their parameters -------------------------------------------------
    def _integer_tensors(self) -> set[str]:
        ints: set[str] = set()
        for n in self.o.nodes:
            if n.op_type == "QuantizeLinear" or n.op_type in OUTPUT_QPARAMS:
                ints.update(o for o in n.output if o)
            elif n.op_type in MOVE_OPS and n.input and n.input[0] in ints:
                ints.update(o for o in n.output if o)
        return ints

    def qparams(self, tensor: str, _depth: int = 0) -> QParams | None:
        for c in self.o.consumers.get(tensor, []):
            if c.op_type == "DequantizeLinear" and c.input[0] == tensor and len(c.input) >= 2:
                return QParams(c.input[1], c.input[2] if len(c.input) > 2 else "", _attr_int(c, "axis"))
        p = self.o.producer.get(tensor)
        if p is None or _depth > 32:
            return None
        if p.op_type == "QuantizeLinear":
            return QParams(p.input[1], p.input[2] if len(p.input) > 2 else "", _attr_int(p, "axis"))
        if p.op_type in OUTPUT_QPARAMS:
            s, z = OUTPUT_QPARAMS[p.op_type]
            return QParams(p.input[s], p.input[z] if len(p.input) > z else "")
        if p.op_type in MOVE_OPS and p.input[0] in self.int_tensors:
            return self.qparams(p.input[0], _depth + 1)
        return None

    # -- mapping to the float model -----------------------------------------------------------
    def _from_qdq_float(self, tensor: str, _depth: int = 0) -> str | None:
        """A float tensor of the QDQ model -> the float model's tensor with the same value."""
        if tensor in self.f.tensors:
            return tensor
        p = self.q.producer.get(tensor)
        if p is not None and p.op_type == "DequantizeLinear" and p.input[0] in self.q_source and _depth < 8:
            return self._from_qdq_float(self.q_source[p.input[0]], _depth + 1)
        for c in self.q.consumers.get(tensor, []):  # renamed graph output: x -> Q -> DQ -> y
            if c.op_type == "QuantizeLinear":
                for d in self.q.consumers.get(c.output[0], []):
                    if d.op_type == "DequantizeLinear" and d.output[0] in self.f.tensors:
                        return d.output[0]
        return None

    def qdq_float_of_int(self, tensor: str, _depth: int = 0) -> str | None:
        """An integer tensor of the optimized model -> the QDQ model's float tensor it quantizes."""
        if tensor in self.q_source:  # the optimizer kept the name
            return self.q_source[tensor]
        for c in self.o.consumers.get(tensor, []):  # a DequantizeLinear the optimizer kept by name
            qc = self.q.by_name.get(c.name)
            if c.op_type == "DequantizeLinear" and qc is not None and qc.op_type == "DequantizeLinear":
                if qc.input[0] in self.q_source:
                    return self.q_source[qc.input[0]]
        p = self.o.producer.get(tensor)
        if p is None or _depth > 8:
            return None
        if p.op_type == "QuantizeLinear":
            src = self.o.producer.get(p.input[0])
            if src is not None and src.op_type == "DequantizeLinear":
                return self.qdq_float_of_int(src.input[0], _depth + 1)  # a type conversion: DQ -> Q
            qp = self.q.by_name.get(p.name)
            if qp is not None and qp.op_type == "QuantizeLinear":
                return qp.input[0]
            return p.input[0] if (p.input[0] in self.q.tensors) else None
        qn = self.q.by_name.get(p.name)
        if qn is None or qn.op_type in QDQ_OPS:
            return None
        index = list(p.output).index(tensor)
        if index >= len(qn.output):
            return None
        return self._quantized_after(qn.output[index])

    def _quantized_after(self, tensor: str) -> str:
        """Follow activations that onnxruntime fused into their producer (Conv -> Relu -> Q) to the tensor quantized."""
        quantized = set(self.q_source.values())
        current = tensor
        for _ in range(4):
            if current in quantized:
                return current
            users = self.q.consumers.get(current, [])
            if len(users) != 1 or users[0].op_type not in FUSABLE_ACTIVATIONS:
                break
            current = users[0].output[0]
        return tensor

    def float_of_int(self, tensor: str) -> tuple[str | None, str | None]:
        qf = self.qdq_float_of_int(tensor)
        return (self._from_qdq_float(qf) if qf else None), qf

    # -- units --------------------------------------------------------------------------------
    def units(self) -> tuple[list[Unit], list[Skipped]]:
        units: list[Unit] = []
        skipped: list[Skipped] = []
        for n in self.o.nodes:
            if n.op_type == "DequantizeLinear":
                continue
            for out in n.output:
                if not out or out not in self.int_tensors or out in self.o.initializers:
                    continue
                op_node = n
                if n.op_type == "QuantizeLinear":
                    src = self.o.producer.get(n.input[0])
                    if src is None or src.op_type in QDQ_OPS:
                        continue  # quantizes a model input or requantizes: no layer here
                    op_node = src
                result = self._unit(op_node, n, out)
                if isinstance(result, Unit):
                    units.append(result)
                else:
                    skipped.append(result)
        return units, skipped

    def _activation_inputs(self, op_node: onnx.NodeProto) -> list[tuple[str, bool]]:
        """(tensor, is_integer) for every non-constant input of the unit's op in the optimized model."""
        found: list[tuple[str, bool]] = []
        for t in op_node.input:
            if not t or t in self.o.constants:
                continue
            if t in self.int_tensors:
                found.append((t, True))
                continue
            p = self.o.producer.get(t)
            if p is not None and p.op_type == "DequantizeLinear":
                if p.input[0] in self.o.constants:
                    continue  # a dequantized weight: the twin uses the float weight instead
                found.append((p.input[0], True))
            else:
                found.append((t, False))
        return found

    def _unit(self, op_node: onnx.NodeProto, out_node: onnx.NodeProto, out: str) -> Unit | Skipped:
        qp = self.qparams(out)
        f_out, q_out = self.float_of_int(out)
        if qp is None or f_out is None or q_out is None:
            return Skipped(op_node.name, "its quantized output could not be mapped to a float tensor")
        boundaries: list[Boundary] = []
        for tensor, is_int in self._activation_inputs(op_node):
            if is_int:
                f_in, _ = self.float_of_int(tensor)
                bqp = self.qparams(tensor)
                if f_in is None or bqp is None:
                    return Skipped(op_node.name, f"its input {tensor!r} could not be mapped to a float tensor")
                boundaries.append(Boundary(f_in, tensor, bqp))
            else:
                f_in = self._from_qdq_float(tensor)
                if f_in is None:
                    return Skipped(op_node.name, f"its float input {tensor!r} is not in the float model")
                boundaries.append(Boundary(f_in, tensor, None))
        twin = self._twin(f_out, {b.float_tensor for b in boundaries})
        if isinstance(twin, str):
            return Skipped(op_node.name, twin)
        named = next((self.f.by_name[t] for t in twin if self.f.by_name[t].op_type != "Constant"), None)
        if named is None:
            return Skipped(op_node.name, "it computes a constant")
        return Unit(
            node=named.name,
            op_type=named.op_type,
            runtime_node=op_node.name,
            runtime_op=op_node.op_type,
            output=out,
            qparams=qp,
            float_tensor=f_out,
            qdq_tensor=q_out,
            boundaries=tuple(dict.fromkeys(boundaries)),
            twin=tuple(twin),
        )

    def _twin(self, target: str, boundary: set[str]) -> list[str] | str:
        """Float-model nodes computing ``target`` from ``boundary`` and constants, in graph order."""
        needed: set[str] = set()
        stack = [target]
        seen: set[str] = set()
        while stack:
            t = stack.pop()
            if t in seen or (t in boundary and t != target) or t in self.f.initializers:
                continue
            seen.add(t)
            p = self.f.producer.get(t)
            if p is None:
                if t == target and t in boundary:
                    return "its output is one of its inputs"
                return f"its float twin would need {t!r}, which the quantized path does not provide"
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in p.attribute):
                return f"its float twin would contain the control-flow node {p.name!r}"
            needed.add(p.name)
            if len(needed) > MAX_TWIN_NODES:
                return "its float twin would be too large (the mapping is not local)"
            stack.extend(i for i in p.input if i)
        return [n.name for n in self.f.nodes if n.name in needed]


def topo_index(model: onnx.ModelProto) -> dict[str, int]:
    """Index of every tensor in topological order (inputs first), stable across denylists."""
    order: dict[str, int] = {}
    for vi in model.graph.input:
        order.setdefault(vi.name, len(order))
    for node in model.graph.node:
        for o in node.output:
            if o:
                order.setdefault(o, len(order))
    return order
