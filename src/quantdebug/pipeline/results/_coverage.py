"""Every node of the pre-processed model with its status (verified, float, unverified, removed) and why."""

from __future__ import annotations

from collections.abc import Mapping, Set

import onnx

from quantdebug.pipeline.plan import Plan
from quantdebug.pipeline.prepare import Preprocessed


def node_coverage(
    float_model: onnx.ModelProto, plan: Plan, pre: Preprocessed, precisions: Mapping[str, str], op_types: Set[str]
) -> list[dict[str, str]]:
    """Every node of ``float_model`` with its status and the reason for it, then the nodes folded away."""
    verified = {u.node: u for u in plan.units}
    absorbed = {n: u for u in plan.units for n in u.twin if n != u.node}
    skipped = {s.runtime_node: s.reason for s in plan.skipped}
    out: list[dict[str, str]] = []
    user_of = dict(pre.covers)
    runtime_ops = {n.name: n.op_type for n in plan.optimized.graph.node}
    for node in float_model.graph.node:
        name = node.name
        if name in verified:
            status, reason = (
                "verified",
                f"quantized ({precisions[name]}) and verified as tensor {verified[name].float_tensor!r}",
            )
        elif name in absorbed:
            status, reason = "verified", f"absorbed into {absorbed[name].node!r}, whose row covers it"
        elif any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            status, reason = "float", "has subgraphs; onnxruntime's quantizer leaves their bodies in float"
        elif node.op_type not in op_types:
            status, reason = "float", f"op type {node.op_type} is not quantized by onnxruntime's quantizer"
        elif precisions.get(name) == "float":
            status, reason = "float", "left in float by a denylist or node_precision rule"
            runtime = runtime_ops.get(name)
            if runtime is None or runtime != node.op_type:
                # e.g. DequantizeLinear -> AveragePool -> QuantizeLinear becomes QLinearAveragePool
                became = f"into {runtime}" if runtime else "away"
                reason += f", but onnxruntime fuses it {became} when it loads the quantized model"
        elif name in skipped:
            status, reason = "unverified", skipped[name]
        else:
            status, reason = (
                "unverified",
                "quantized, but onnxruntime runs it fused into a neighbour or it has no quantized output",
            )
        users = user_of.get(name, ())
        out.append(
            {
                "node": name,
                "op_type": node.op_type,
                "user_nodes": ", ".join(users),
                "status": status,
                "reason": reason,
            }
        )
    for removed in pre.removed:
        out.append(
            {
                "node": "",
                "op_type": "",
                "user_nodes": removed,
                "status": "removed",
                "reason": "folded away by graph optimization (constant folding or fusion)",
            }
        )
    return out
