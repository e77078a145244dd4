"""Hostile and unusual models for the robustness tests, built in code (no files are shipped)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tests import models

F = TensorProto.FLOAT
HOSTILE_NAMES = (
    "<script>alert(1)</script>",
    '=HYPERLINK("http://evil.example","x")',
    "+cmd|' /C calc'!A0",
    "-1+2",
    "@SUM(A1:A2)",
)
"""Node names a viewer could run: markup and spreadsheet formulas."""


def _model(
    nodes: Sequence[onnx.NodeProto], inits: Sequence[onnx.TensorProto], opset: int = 17, **kw: object
) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("input", F, ["N", 4])
    y = helper.make_tensor_value_info("output", F, ["N", 4])
    graph = helper.make_graph(list(nodes), "hostile", [x], [y], list(inits))
    imports = [helper.make_opsetid("", opset), *kw.pop("extra_imports", [])]  # type: ignore[misc]
    return helper.make_model(graph, opset_imports=imports, ir_version=models.IR_VERSION, **kw)  # type: ignore[arg-type]


def _weight(rng: np.random.Generator, name: str = "w") -> onnx.TensorProto:
    return numpy_helper.from_array(rng.normal(0, 0.5, size=(4, 4)).astype(np.float32), name)


def odd_op(rng: np.random.Generator, op_type: str, domain: str = "", opset: int = 17) -> onnx.ModelProto:
    """input[N,4] -> matmul (MatMul) -> ``odd`` (``domain``:``op_type``) -> output."""
    nodes = [
        helper.make_node("MatMul", ["input", "w"], ["mm"], name="matmul"),
        helper.make_node(op_type, ["mm"], ["output"], name="odd", domain=domain),
    ]
    extra = [helper.make_opsetid(domain, 1)] if domain not in ("", "ai.onnx") else []
    return _model(nodes, [_weight(rng)], opset=opset, extra_imports=extra)


def local_function(rng: np.random.Generator) -> onnx.ModelProto:
    """``odd`` calls ``local.fn:MyRelu``, a function defined in the model itself (onnxruntime inlines it)."""
    model = odd_op(rng, "MyRelu", "local.fn")
    fn = helper.make_function(
        "local.fn", "MyRelu", ["x"], ["y"], [helper.make_node("Relu", ["x"], ["y"])], [helper.make_opsetid("", 17)]
    )
    model.functions.append(fn)
    return model


def with_subgraph(rng: np.random.Generator, kind: str, body_op: tuple[str, str] | None = None) -> onnx.ModelProto:
    """input[N,4] -> matmul -> ``kind`` (If/Loop/Scan with a MatMul or Add body) -> matmul2 -> output[N,4].

    The If's condition is computed from the data, so no optimizer can fold the branch away.
    ``body_op`` (op_type, domain) replaces the first body node's op, to hide a custom op inside.
    """
    w = _weight(rng)
    inits = [w, numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    pre = [helper.make_node("MatMul", ["input", "w"], ["mm"], name="matmul")]
    if kind == "If":
        then_g = helper.make_graph(
            [helper.make_node("MatMul", ["mm", "w"], ["t_out"], name="then_matmul")],
            "then",
            [],
            [helper.make_tensor_value_info("t_out", F, ["N", 4])],
        )
        else_g = helper.make_graph(
            [helper.make_node("Sigmoid", ["mm"], ["e_out"], name="else_sigmoid")],
            "else",
            [],
            [helper.make_tensor_value_info("e_out", F, ["N", 4])],
        )
        sub = [
            helper.make_node("ReduceSum", ["input"], ["s"], name="sum", keepdims=0),
            helper.make_node("Greater", ["s", "zero"], ["cond"], name="positive"),
            helper.make_node("If", ["cond"], ["sub_out"], name="branch", then_branch=then_g, else_branch=else_g),
        ]
    elif kind == "Loop":
        inits.append(numpy_helper.from_array(np.array(3, np.int64), "trip"))
        loop_g = helper.make_graph(
            [
                helper.make_node("MatMul", ["carry", "w"], ["mmb"], name="loop_matmul"),
                helper.make_node("Relu", ["mmb"], ["carry_out"], name="loop_relu"),
                helper.make_node("Identity", ["c_in"], ["c_out"], name="loop_cond"),
            ],
            "loop_body",
            [
                helper.make_tensor_value_info("i", TensorProto.INT64, []),
                helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
                helper.make_tensor_value_info("carry", F, ["N", 4]),
            ],
            [
                helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
                helper.make_tensor_value_info("carry_out", F, ["N", 4]),
            ],
        )
        sub = [helper.make_node("Loop", ["trip", "", "mm"], ["sub_out"], name="loop", body=loop_g)]
    elif kind == "Scan":
        inits.append(numpy_helper.from_array(np.zeros(4, np.float32), "state0"))
        scan_g = helper.make_graph(
            [
                helper.make_node("Add", ["state", "row"], ["state2"], name="scan_add"),
                helper.make_node("Identity", ["state2"], ["row_out"], name="scan_identity"),
            ],
            "scan_body",
            [helper.make_tensor_value_info("state", F, [4]), helper.make_tensor_value_info("row", F, [4])],
            [helper.make_tensor_value_info("state2", F, [4]), helper.make_tensor_value_info("row_out", F, [4])],
        )
        sub = [
            helper.make_node(
                "Scan", ["state0", "mm"], ["final", "sub_out"], name="scan", body=scan_g, num_scan_inputs=1
            )
        ]
    else:
        raise ValueError(kind)
    if body_op is not None:
        holder = sub[-1]
        first = holder.attribute[0].g.node[0]
        first.op_type, first.domain = body_op
    post = [helper.make_node("MatMul", ["sub_out", "w2"], ["output"], name="matmul2")]
    extra = [helper.make_opsetid(body_op[1], 1)] if body_op and body_op[1] else []
    return _model([*pre, *sub, *post], [*inits, _weight(rng, "w2")], extra_imports=extra)


def hostile_names(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, str]]:
    """``conv_relu`` whose Conv/Relu/Clip nodes and their output tensors carry ``HOSTILE_NAMES``.

    Returns the model and {hostile node name: op_type}.
    """
    model = models.conv_relu(rng)
    renamed_tensors: dict[str, str] = {}
    chosen: dict[str, str] = {}
    targets = [n for n in model.graph.node if n.op_type in ("Conv", "Relu", "Clip")]
    for node, name in zip(targets, HOSTILE_NAMES):
        renamed_tensors[node.output[0]] = name + "_out"
        node.name = name
        chosen[name] = node.op_type
    for node in model.graph.node:
        node.input[:] = [renamed_tensors.get(t, t) for t in node.input]
        node.output[:] = [renamed_tensors.get(t, t) for t in node.output]
    for out in model.graph.output:
        out.name = renamed_tensors.get(out.name, out.name)
    onnx.checker.check_model(model)
    return model, chosen


def dynamic_spatial(rng: np.random.Generator) -> onnx.ModelProto:
    """``conv_relu`` with symbolic height and width (``H``, ``W``): any image size runs."""
    model = models.conv_relu(rng)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, name in zip(dims[2:], ("H", "W")):
        dim.ClearField("dim_value")
        dim.dim_param = name
    return model


def save_external(model: onnx.ModelProto, folder: Path, location: str = "weights.bin") -> Path:
    """Save ``model`` to ``folder/model.onnx`` with every initializer in ``location``."""
    (folder / location).parent.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # onnx.save moves the weights of the model it saves out of it
    onnx.save(
        copy, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=0
    )
    return path


def relocate_external(path: Path, location: str) -> None:
    """Point every external-data entry of the model at ``path`` to ``location`` (left unchecked)."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    path.write_bytes(model.SerializeToString())
