"""A hypothesis strategy for small random ONNX graphs of the op types onnxruntime quantizes.

Ops: Conv, MatMul, Gemm, Add, Mul, Relu, Clip, Sigmoid, Concat, MaxPool, AveragePool, Reshape,
Softmax, on a rank-4 (NCHW) or rank-2 ([N, F]) activation with a symbolic batch ``N``. Binary ops
and Concat take either a constant or an earlier tensor of a compatible shape (so graphs branch and
merge); Reshape moves between rank 4 and rank 2. Weight scales and data scales span four decades.
Every graph is checked with ``onnx.checker`` and by shape inference before it is returned.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from tests import models

OPS_4D = ("Conv", "Relu", "Clip", "Sigmoid", "Add", "Mul", "Concat", "MaxPool", "AveragePool", "Softmax", "Reshape")
OPS_2D = ("MatMul", "Gemm", "Relu", "Clip", "Sigmoid", "Add", "Mul", "Concat", "Softmax", "Reshape")


@dataclasses.dataclass
class RandomGraph:
    model: onnx.ModelProto
    recipe: list[str]  # one line per node, shown when an example fails
    feeds: list[dict[str, np.ndarray]]

    def __repr__(self) -> str:
        return "RandomGraph(\n  " + "\n  ".join(self.recipe) + "\n)"


class _Builder:
    def __init__(self, rng: np.random.Generator, weight_scale: float) -> None:
        self.rng = rng
        self.weight_scale = weight_scale
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.recipe: list[str] = []
        self.count = 0

    def name(self, op: str) -> str:
        self.count += 1
        return f"{op.lower()}{self.count}"

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, name: str, shape: tuple[int, ...], fan_in: int) -> str:
        std = self.weight_scale * np.sqrt(2.0 / max(fan_in, 1))
        return self.const(name, self.rng.normal(0.0, std, size=shape).astype(np.float32))

    def node(self, op: str, inputs: list[str], note: str = "", **attrs: Any) -> str:
        name = self.name(op)
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        self.recipe.append(f"{name}: {op}({', '.join(inputs)}) {note}".rstrip())
        return out


@st.composite
def random_graphs(draw: st.DrawFn, max_ops: int = 6, samples: int = 3) -> RandomGraph:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    weight_scale = 10 ** draw(st.floats(-1.5, 1.5))
    b = _Builder(rng, weight_scale)
    rank4 = draw(st.booleans())
    if rank4:
        shape: list[int] = [draw(st.integers(1, 4)), draw(st.sampled_from([2, 4, 6])), draw(st.sampled_from([2, 4, 5]))]
    else:
        shape = [draw(st.integers(2, 10))]
    input_shape = list(shape)
    x = "input"
    history: list[tuple[str, list[int]]] = [(x, list(shape))]  # tensors of the current rank, for branches
    n_ops = draw(st.integers(1, max_ops))
    for step in range(n_ops):
        ops = OPS_4D if len(shape) == 3 else OPS_2D
        # the first op has weights, so that almost every graph has a layer to verify
        op = (
            draw(st.sampled_from(("Conv",) if len(shape) == 3 else ("MatMul", "Gemm")))
            if step == 0
            else draw(st.sampled_from(ops))
        )
        if op == "Conv":
            c_in = shape[0]
            split: bool = draw(st.booleans())
            depthwise = c_in > 1 and split
            c_out = c_in if depthwise else draw(st.integers(1, 5))
            k = draw(st.sampled_from([1, 3]))
            group = c_in if depthwise else 1
            w = b.weight(f"w{b.count + 1}", (c_out, c_in // group, k, k), fan_in=(c_in // group) * k * k)
            inputs = [x, w]
            if draw(st.booleans()):
                inputs.append(
                    b.const(f"bias{b.count + 1}", rng.normal(0, 0.1 * weight_scale, c_out).astype(np.float32))
                )
            x = b.node("Conv", inputs, f"k={k} group={group}", kernel_shape=[k, k], pads=[k // 2] * 4, group=group)
            shape = [c_out, *shape[1:]]
        elif op == "MatMul":
            f_out = draw(st.integers(1, 10))
            x = b.node("MatMul", [x, b.weight(f"w{b.count + 1}", (shape[0], f_out), fan_in=shape[0])])
            shape = [f_out]
        elif op == "Gemm":
            f_out = draw(st.integers(1, 10))
            trans = draw(st.booleans())
            w_shape = (f_out, shape[0]) if trans else (shape[0], f_out)
            inputs = [x, b.weight(f"w{b.count + 1}", w_shape, fan_in=shape[0])]
            if draw(st.booleans()):
                inputs.append(
                    b.const(f"bias{b.count + 1}", rng.normal(0, 0.1 * weight_scale, f_out).astype(np.float32))
                )
            x = b.node("Gemm", inputs, f"transB={int(trans)}", transB=int(trans))
            shape = [f_out]
        elif op in ("Relu", "Sigmoid"):
            x = b.node(op, [x])
        elif op == "Clip":
            lo = draw(st.floats(-2.0, 0.0))
            hi = lo + draw(st.floats(0.25, 6.0))
            nm = b.count + 1
            lo_t = b.const(f"clip{nm}.min", np.array(lo, np.float32))
            hi_t = b.const(f"clip{nm}.max", np.array(hi, np.float32))
            x = b.node("Clip", [x, lo_t, hi_t], f"[{lo:.3g}, {hi:.3g}]")
        elif op in ("Add", "Mul"):
            same_shape = [t for t, s in history if s == shape and t != x]
            use_tensor: bool = draw(st.booleans())
            if same_shape and use_tensor:
                other = draw(st.sampled_from(same_shape))
            else:
                per_channel = [shape[0], 1, 1] if len(shape) == 3 else [shape[0]]
                value = rng.normal(1.0 if op == "Mul" else 0.0, 0.5, size=per_channel).astype(np.float32)
                other = b.const(f"{op.lower()}{b.count + 1}.const", value)
            x = b.node(op, [x, other])
        elif op == "Concat":
            concat_with = [(t, s) for t, s in history if s[1:] == shape[1:]]
            other, other_shape = draw(st.sampled_from(concat_with))
            x = b.node("Concat", [x, other], axis=1)
            shape = [shape[0] + other_shape[0], *shape[1:]]
        elif op in ("MaxPool", "AveragePool"):
            if min(shape[1:]) < 2:
                x = b.node("Relu", [x], "(pool skipped: too small)")
            else:
                x = b.node(op, [x], kernel_shape=[2, 2], strides=[2, 2])
                shape = [shape[0], shape[1] // 2, shape[2] // 2]
        elif op == "Softmax":
            x = b.node("Softmax", [x], axis=1 if len(shape) == 3 else -1)
        elif op == "Reshape":
            if len(shape) == 3:
                target = b.const(f"reshape{b.count + 1}.shape", np.array([0, -1], np.int64))
                shape = [int(np.prod(shape))]
            else:
                target = b.const(f"reshape{b.count + 1}.shape", np.array([0, shape[0], 1, 1], np.int64))
                shape = [shape[0], 1, 1]
            x = b.node("Reshape", [x, target])
            history = []
        history.append((x, list(shape)))
    outputs = [x]
    extra = [t for t, _ in history if t not in ("input", x)]
    second_output: bool = draw(st.booleans())
    if extra and second_output:
        outputs.append(draw(st.sampled_from(extra)))  # a second graph output from the middle of the graph
    graph = helper.make_graph(
        b.nodes,
        "random",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=models.IR_VERSION)
    inferred = {o.name: o for o in onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.output}
    for info in model.graph.output:
        info.CopyFrom(inferred[info.name])
    onnx.checker.check_model(model, full_check=True)
    data_scale = 10 ** draw(st.floats(-1.5, 1.5))
    offset = draw(st.sampled_from([0.0, 0.0, 1.0, -2.0]))
    feeds = [
        {"input": (offset + data_scale * rng.standard_normal((1, *input_shape))).astype(np.float32)}
        for _ in range(samples)
    ]
    recipe = [f"seed={seed} weight_scale={weight_scale:.3g} data_scale={data_scale:.3g} offset={offset}", *b.recipe]
    recipe.append(f"outputs: {outputs}")
    return RandomGraph(model, recipe, feeds)
