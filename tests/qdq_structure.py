"""What "left in float" means for a node of a deployed QDQ model, checked on the model's structure.

A denylisted node N is *in float* in the QDQ model that ``get_nondebug_quantized_model`` returns when

1. N is there once, under its name, with the float model's op type and domain (it was not replaced by
   a QLinear* or other quantized op);
2. every input of N is a float value: a graph input, a float initializer (N's own weights and biases
   are the float model's initializers, not the output of a DequantizeLinear of integer weights), the
   output of a DequantizeLinear, or the output of another float node; never the integer output of a
   QuantizeLinear, never an integer initializer the float model did not have;
3. N's outputs are not quantized on N's behalf: a QuantizeLinear reads an output of N only when some
   consumer of that output in the float model is itself quantized (the QuantizeLinear is that
   consumer's input quantization).

Whether onnxruntime then *runs* N in float is a further question (``runtime_fused``): at load time
it fuses DequantizeLinear -> N -> QuantizeLinear into a QLinear op for some op types.
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx


def float_violations(
    qdq: onnx.ModelProto, float_model: onnx.ModelProto, name: str, precisions: Mapping[str, str]
) -> list[str]:
    """Why node ``name`` is not in float in ``qdq`` (empty when it is); ``precisions`` as debugger.precisions()."""
    found = [n for n in qdq.graph.node if n.name == name]
    original = next(n for n in float_model.graph.node if n.name == name)
    if len(found) != 1:
        return [f"{name!r} appears {len(found)} times in the quantized model"]
    node = found[0]
    problems: list[str] = []
    if (node.op_type, node.domain) != (original.op_type, original.domain):
        problems.append(f"{name!r} became {node.domain}:{node.op_type} (was {original.op_type})")
    producer = {o: n for n in qdq.graph.node for o in n.output if o}
    q_inits = {i.name: i for i in qdq.graph.initializer}
    f_inits = {i.name: i for i in float_model.graph.initializer}
    for index, (tensor, was) in enumerate(zip(node.input, original.input)):
        if not tensor:
            continue
        if was in f_inits and tensor != was:
            problems.append(f"{name!r} input {index} reads {tensor!r} instead of its float initializer {was!r}")
        if tensor in q_inits:
            if tensor not in f_inits or q_inits[tensor].data_type != f_inits[tensor].data_type:
                problems.append(f"{name!r} input {index} is the integer initializer {tensor!r}")
        elif tensor in producer:
            p = producer[tensor]
            if p.op_type == "QuantizeLinear" or p.op_type.startswith("QLinear"):
                problems.append(f"{name!r} input {index} is the integer output of {p.op_type} {p.name!r}")
    consumers: dict[str, list[str]] = {}
    for n in float_model.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n.name)
    for out, was_out in zip(node.output, original.output):  # a graph output's producer writes a renamed tensor
        readers = [n for n in qdq.graph.node if out in n.input and n.op_type == "QuantizeLinear"]
        served = any(precisions.get(c, "float") != "float" for c in consumers.get(was_out, []))
        if readers and not served:
            problems.append(f"{name!r} output {out!r} is quantized although no consumer of it is quantized")
    return problems


def runtime_fused(optimized: onnx.ModelProto, float_model: onnx.ModelProto, name: str) -> str | None:
    """How onnxruntime's load-time optimizations changed node ``name`` (None: it runs as the float op)."""
    original = next(n for n in float_model.graph.node if n.name == name)
    found = [n for n in optimized.graph.node if n.name == name]
    if not found:
        return f"{name!r} was removed or fused away by onnxruntime"
    if found[0].op_type != original.op_type:
        return f"onnxruntime runs {name!r} as {found[0].domain}:{found[0].op_type}"
    return None
