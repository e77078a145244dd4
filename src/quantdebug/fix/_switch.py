"""One switchable graph for cheap sensitivity: each quantized tensor and weight is fake-quantized or not at run time.

The float model gets, after each verified tensor y and on each quantized weight w,
``y' = s_k ? dequant(quant(y)) : y`` with a switch ``s_k`` fed at run time (a select, not a
blend, so that a NaN the quantized model would saturate away does not leak through). One onnxruntime
session then measures any mix of quantized and float nodes on a few samples, instead of one
re-quantization and one new session per candidate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantdebug.pipeline.calibrate import batching_is_safe, has_control_flow
from quantdebug.pipeline.plan import Plan
from quantdebug.runtime import make_session
from quantdebug.support.external import tensor_like, to_array

ACT_SWITCHES = "__qd/switch/activations"
WEIGHT_SWITCHES = "__qd/switch/weights"


@dataclasses.dataclass(frozen=True)
class Switches:
    nodes: tuple[str, ...]  # row node per activation switch
    tensors: tuple[str, ...]  # tensor per activation switch
    weights: tuple[str, ...]  # float initializer per weight switch (shared weights share a switch)
    weight_users: tuple[tuple[str, ...], ...]  # the nodes that read each switched weight

    def weight_switches_of(self, nodes: set[str]) -> list[int]:
        return [j for j, users in enumerate(self.weight_users) if nodes & set(users)]


def _qdq_weights(plan: Plan) -> dict[tuple[str, int], np.ndarray]:
    """(node, input index) -> the dequantized weight the quantized model really uses."""
    q_init = {i.name: i for i in plan.qdq.graph.initializer}
    dq_of = {n.output[0]: n for n in plan.qdq.graph.node if n.op_type == "DequantizeLinear"}
    out: dict[tuple[str, int], np.ndarray] = {}
    for node in plan.qdq.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for index, tensor in enumerate(node.input):
            dq = dq_of.get(tensor)
            if dq is None or dq.input[0] not in q_init:
                continue
            q = to_array(q_init[dq.input[0]])
            if q.dtype == np.int32:
                continue  # biases: their error is negligible next to the weights'
            scale = numpy_helper.to_array(q_init[dq.input[1]]).astype(np.float32).reshape(-1)
            zp = (
                numpy_helper.to_array(q_init[dq.input[2]]).astype(np.int64).reshape(-1)
                if len(dq.input) > 2 and dq.input[2]
                else np.zeros(1, np.int64)
            )
            axis = next((int(a.i) for a in dq.attribute if a.name == "axis"), 1)
            if scale.size > 1:
                shape = [1] * q.ndim
                shape[axis % q.ndim] = scale.size
                scale, zp = scale.reshape(shape), zp.reshape(shape)
            out[(node.name, index)] = ((q.astype(np.int64) - zp).astype(np.float32) * scale).astype(np.float32)
    return out


def build_switch_model(float_model: onnx.ModelProto, plan: Plan) -> tuple[onnx.ModelProto, Switches]:
    model = onnx.ModelProto()
    model.CopyFrom(float_model)
    g = model.graph
    q_init = {i.name: i for i in plan.qdq.graph.initializer}
    q_nodes = {n.input[0]: n for n in plan.qdq.graph.node if n.op_type == "QuantizeLinear"}
    f_init = {i.name: i for i in g.initializer}
    units = [u for u in plan.units if u.qdq_tensor in q_nodes]
    new_nodes: list[onnx.NodeProto] = []
    after: dict[str, list[onnx.NodeProto]] = {}
    rename: dict[str, str] = {}
    for k, unit in enumerate(units):
        qn = q_nodes[unit.qdq_tensor]
        y = unit.float_tensor
        raw = f"__qd/sw/{k}/raw"
        rename[y] = raw
        params = []
        for j, name in enumerate(qn.input[1:3]):
            init = onnx.TensorProto()
            init.CopyFrom(q_init[name])
            init.name = f"__qd/sw/{k}/p{j}"
            g.initializer.append(init)
            params.append(init.name)
        idx = f"__qd/sw/{k}/idx"
        g.initializer.append(numpy_helper.from_array(np.array(k, dtype=np.int64), idx))
        after[y] = [
            helper.make_node("QuantizeLinear", [raw, *params], [f"__qd/sw/{k}/q"], name=f"__qd/sw/{k}/q"),
            helper.make_node(
                "DequantizeLinear", [f"__qd/sw/{k}/q", *params], [f"__qd/sw/{k}/dq"], name=f"__qd/sw/{k}/dq"
            ),
            helper.make_node("Gather", [ACT_SWITCHES, idx], [f"__qd/sw/{k}/s"], name=f"__qd/sw/{k}/s"),
            helper.make_node("Where", [f"__qd/sw/{k}/s", f"__qd/sw/{k}/dq", raw], [y], name=f"__qd/sw/{k}/y"),
        ]
    weights = _qdq_weights(plan)
    by_node = {n.name: n for n in g.node}
    per_init: dict[str, np.ndarray] = {}
    users: dict[str, list[str]] = {}
    for (node_name, index), deq in sorted(weights.items()):
        w_node = by_node.get(node_name)
        if w_node is None or index >= len(w_node.input) or w_node.input[index] not in f_init:
            continue
        name = w_node.input[index]
        if tuple(f_init[name].dims) != deq.shape:
            continue
        per_init.setdefault(name, deq)  # onnxruntime shares one dequantized copy among all readers
        users.setdefault(name, []).append(node_name)
    weight_inputs: dict[str, str] = {}
    weight_names = sorted(per_init)
    for j, name in enumerate(weight_names):
        quantized = f"__qd/sww/{j}/wq"
        g.initializer.append(tensor_like(per_init[name], quantized, float_model))
        g.initializer.append(numpy_helper.from_array(np.array(j, dtype=np.int64), f"__qd/sww/{j}/idx"))
        new_nodes += [
            helper.make_node(
                "Gather", [WEIGHT_SWITCHES, f"__qd/sww/{j}/idx"], [f"__qd/sww/{j}/s"], name=f"__qd/sww/{j}/s"
            ),
            helper.make_node(
                "Where", [f"__qd/sww/{j}/s", quantized, name], [f"__qd/sww/{j}/w"], name=f"__qd/sww/{j}/w"
            ),
        ]
        weight_inputs[name] = f"__qd/sww/{j}/w"
    # every reader of a switched weight sees the switched value, as every reader of a quantized
    # initializer sees its dequantized copy in the QDQ model
    reader_nodes = {n.name for n in g.node if any(i in weight_inputs for i in n.input)}
    for name in weight_names:
        users[name] = sorted(set(users[name]) | {n for n in reader_nodes if name in by_node[n].input})
    nodes = list(new_nodes)
    for node in g.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        for index in range(len(copy.input)):
            if copy.input[index] in weight_inputs:
                copy.input[index] = weight_inputs[copy.input[index]]
        for index, out in enumerate(copy.output):
            if out in rename:
                copy.output[index] = rename[out]
        nodes.append(copy)
        for out in node.output:
            nodes.extend(after.get(out, []))
    del g.node[:]
    g.node.extend(nodes)
    g.input.append(helper.make_tensor_value_info(ACT_SWITCHES, TensorProto.BOOL, [max(len(units), 1)]))
    g.input.append(helper.make_tensor_value_info(WEIGHT_SWITCHES, TensorProto.BOOL, [max(len(weight_names), 1)]))
    del g.value_info[:]
    switches = Switches(
        tuple(u.node for u in units),
        tuple(u.float_tensor for u in units),
        tuple(weight_names),
        tuple(tuple(users[n]) for n in weight_names),
    )
    return model, switches


def output_sqnr(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> float:
    """Signal-to-quantization-noise ratio in dB of ``candidate`` against ``reference``, pooled, worst output.

    An output with NaN or infinity where the reference has finite values scores -inf, the worst:
    NaN compares false with everything, and a plain ``min`` would have kept +inf, a perfect score.
    """
    worst = np.inf
    for ref, got in zip(reference, candidate):
        r = np.asarray(ref, np.float64)
        noise = float(np.sum((np.asarray(got, np.float64) - r) ** 2))
        signal = float(np.sum(r**2))
        if not math.isfinite(noise):
            value = -np.inf
        else:
            value = np.inf if noise == 0 else (10 * np.log10(signal / noise) if signal > 0 else -np.inf)
        worst = min(worst, value)
    return float(worst)


class SwitchRunner:
    """Runs the switchable model on fixed feeds and scores switch settings by output SQNR."""

    def __init__(
        self,
        float_model: onnx.ModelProto,
        plan: Plan | None,
        feeds: Sequence[Mapping[str, np.ndarray]],
        *,
        built: tuple[onnx.ModelProto, Switches] | None = None,
        level: str = "all",
    ) -> None:
        """``built``: the switchable model and its switches when the caller has them (no second surgery).

        ``level``: onnxruntime's graph optimization level; "disabled" makes each switch setting compute
        exactly what the QDQ model with the same tensors quantized computes when run unoptimized.
        """
        if built is None:
            if plan is None:
                raise ValueError("SwitchRunner needs the plan or the built switchable model")
            built = build_switch_model(float_model, plan)
        self.model, self.switches = built
        self.session = make_session(self.model, level=level, what="sensitivity model")
        self.outputs = [o.name for o in float_model.graph.output]
        self.feeds = [dict(f) for f in feeds]
        self._stack_if_safe()
        self.n_act = max(len(self.switches.nodes), 1)
        self.n_w = max(len(self.switches.weights), 1)
        self.reference = self.outputs_for(np.zeros(self.n_act, np.float32), np.zeros(self.n_w, np.float32))

    def _stack_if_safe(self) -> None:
        """Run all samples as one batch when that gives, row by row, what single runs give."""
        if len(self.feeds) < 2 or has_control_flow(self.model):
            return
        act = np.zeros(max(len(self.switches.nodes), 1), bool)
        weights = np.zeros(max(len(self.switches.weights), 1), bool)

        def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            full = {**feed, ACT_SWITCHES: act, WEIGHT_SWITCHES: weights}
            return dict(zip(self.outputs, self.session.run(self.outputs, full)))

        if batching_is_safe(run, self.feeds):
            self.feeds = [{k: np.concatenate([f[k] for f in self.feeds], axis=0) for k in self.feeds[0]}]

    def outputs_for(self, act: np.ndarray, weights: np.ndarray) -> list[np.ndarray]:
        per_output: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for feed in self.feeds:
            full = dict(feed)
            full[ACT_SWITCHES] = np.asarray(act) > 0.5
            full[WEIGHT_SWITCHES] = np.asarray(weights) > 0.5
            for i, value in enumerate(self.session.run(self.outputs, full)):
                per_output[i].append(value)
        return [np.concatenate([v.reshape(-1) for v in vs]) for vs in per_output]

    def score(self, act: np.ndarray, weights: np.ndarray) -> float:
        return output_sqnr(self.reference, self.outputs_for(act, weights))
