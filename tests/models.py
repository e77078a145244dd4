"""Small float32 ONNX test models built in code.

Every builder takes a ``np.random.Generator`` for its weights and returns an
``onnx.ModelProto`` (``wide_range_node`` returns ``(model, bad_node_name)``).
Conventions:

* default opset 17 (``opset=``), IR version 10, float32 everywhere;
* the batch dimension is the symbolic ``"N"`` by default (``batch=`` takes an
  ``int`` for a static batch);
* every node has a unique name (except in ``unnamed_nodes`` /
  ``duplicate_names``); node ``foo`` writes tensor ``foo_out`` so node names
  and tensor names are never the same string; weights are ``foo.weight`` /
  ``foo.bias``; single-input models read ``input`` and write ``output``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10
DEFAULT_OPSET = 17
MAX_OPSET = 22  # highest opset IR version 10 allows
FLOAT32_MIN = float(np.finfo(np.float32).min)  # -3.4028235e38, the usual mask sentinel
ATTENTION_MASK_INPUT = "attention_mask"

Dim = int | str
Batch = int | str
ModelBuilder = Callable[[np.random.Generator], onnx.ModelProto]


class _GraphBuilder:
    """Accumulates nodes/initializers and turns them into a checked-shape model."""

    def __init__(self, rng: np.random.Generator, name: str, opset: int, min_opset: int = 13) -> None:
        if not min_opset <= opset <= MAX_OPSET:
            raise ValueError(f"{name}: opset must be in [{min_opset}, {MAX_OPSET}], got {opset}")
        self.rng = rng
        self.name = name
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []

    def input(self, name: str, shape: Sequence[Dim]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, name: str, shape: Sequence[int], fan_in: int) -> str:
        """He-normal float32 weight."""
        std = np.sqrt(2.0 / fan_in)
        return self.const(name, self.rng.normal(0.0, std, size=tuple(shape)).astype(np.float32))

    def bias(self, name: str, size: int) -> str:
        return self.const(name, self.rng.normal(0.0, 0.1, size=(size,)).astype(np.float32))

    def node(self, op: str, inputs: Sequence[str], name: str, out: str | None = None, **attrs: Any) -> str:
        """Add node ``name``; returns its (single) output tensor, ``{name}_out`` by default."""
        output = out if out is not None else f"{name}_out"
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=name, **attrs))
        return output

    def conv(
        self,
        x: str,
        name: str,
        c_in: int,
        c_out: int,
        k: int = 3,
        *,
        stride: int = 1,
        group: int = 1,
        bias: bool = True,
        out: str | None = None,
    ) -> str:
        """Conv with ``same`` padding (odd ``k``)."""
        w = self.weight(f"{name}.weight", (c_out, c_in // group, k, k), fan_in=(c_in // group) * k * k)
        inputs = [x, w] + ([self.bias(f"{name}.bias", c_out)] if bias else [])
        pad = k // 2
        return self.node(
            "Conv", inputs, name, out, kernel_shape=[k, k], pads=[pad] * 4, strides=[stride, stride], group=group
        )

    def clip(self, x: str, name: str, lo: float, hi: float, out: str | None = None) -> str:
        lo_t = self.const(f"{name}.min", np.array(lo, dtype=np.float32))
        hi_t = self.const(f"{name}.max", np.array(hi, dtype=np.float32))
        return self.node("Clip", [x, lo_t, hi_t], name, out)

    def gemm(self, x: str, name: str, n_in: int, n_out: int, out: str | None = None) -> str:
        """Gemm with transB=1 (weight stored [n_out, n_in]) and bias."""
        w = self.weight(f"{name}.weight", (n_out, n_in), fan_in=n_in)
        return self.node("Gemm", [x, w, self.bias(f"{name}.bias", n_out)], name, out, transB=1)

    def head(self, x: str, channels: int, n_classes: int, prefix: str = "") -> str:
        """GlobalAveragePool -> Flatten -> Gemm to the graph output ``output``."""
        gap = self.node("GlobalAveragePool", [x], f"{prefix}gap")
        flat = self.node("Flatten", [gap], f"{prefix}flatten", axis=1)
        return self.gemm(flat, f"{prefix}fc", channels, n_classes, out="output")

    def se_block(self, x: str, channels: int, reduced: int, prefix: str) -> str:
        """Squeeze-excite: GAP -> Conv -> Relu -> Conv -> HardSigmoid -> Mul."""
        s = self.node("GlobalAveragePool", [x], f"{prefix}se_pool")
        s = self.conv(s, f"{prefix}se_reduce", channels, reduced, k=1)
        s = self.node("Relu", [s], f"{prefix}se_relu")
        s = self.conv(s, f"{prefix}se_expand", reduced, channels, k=1)
        s = self.node("HardSigmoid", [s], f"{prefix}se_hsigmoid", alpha=1.0 / 6.0, beta=0.5)
        return self.node("Mul", [x, s], f"{prefix}se_scale")

    def build(self, outputs: Sequence[str], shapes: dict[str, Sequence[Dim]] | None = None) -> onnx.ModelProto:
        """Make the model; output shapes come from ``shapes`` or from shape inference."""
        shapes = shapes or {}
        out_infos = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, self.name, self.inputs, out_infos, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", self.opset)],
            ir_version=IR_VERSION,
            producer_name="quantdebug-tests",
        )
        inferred = {o.name: o for o in onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.output}
        for info in model.graph.output:
            if info.name in shapes:
                info.CopyFrom(helper.make_tensor_value_info(info.name, TensorProto.FLOAT, list(shapes[info.name])))
            elif inferred[info.name].type.tensor_type.HasField("shape"):
                info.CopyFrom(inferred[info.name])
            else:
                raise ValueError(f"{self.name}: no shape for output {info.name!r}; pass it in `shapes`")
        return model


def conv_relu(rng: np.random.Generator, *, opset: int = DEFAULT_OPSET, batch: Batch = "N") -> onnx.ModelProto:
    """input[N,3,16,16] -> conv1 -> relu1 -> conv2 -> clip1(0,6) -> conv3(s2) -> relu2 -> gap/flatten/fc.

    Output ``output``[N,10].
    """
    g = _GraphBuilder(rng, "conv_relu", opset)
    x = g.input("input", [batch, 3, 16, 16])
    x = g.node("Relu", [g.conv(x, "conv1", 3, 8)], "relu1")
    x = g.clip(g.conv(x, "conv2", 8, 8), "clip1", 0.0, 6.0)
    x = g.node("Relu", [g.conv(x, "conv3", 8, 16, stride=2)], "relu2")
    return g.build([g.head(x, 16, 10)])


def depthwise(rng: np.random.Generator, *, opset: int = DEFAULT_OPSET, batch: Batch = "N") -> onnx.ModelProto:
    """input[N,3,16,16] -> conv1 -> relu1 -> dwconv(group=8) -> relu2 -> pwconv(1x1) -> clip1 -> gap/flatten/fc.

    Output ``output``[N,10].
    """
    g = _GraphBuilder(rng, "depthwise", opset)
    x = g.input("input", [batch, 3, 16, 16])
    x = g.node("Relu", [g.conv(x, "conv1", 3, 8)], "relu1")
    x = g.node("Relu", [g.conv(x, "dwconv", 8, 8, group=8)], "relu2")
    x = g.clip(g.conv(x, "pwconv", 8, 16, k=1), "clip1", 0.0, 6.0)
    return g.build([g.head(x, 16, 10)])


def matmul_gemm(rng: np.random.Generator, *, opset: int = DEFAULT_OPSET, batch: Batch = "N") -> onnx.ModelProto:
    """input[N,16] -> matmul1 -> add1(bias) -> relu1 -> fc1(Gemm transB=1) -> relu2 -> fc2 -> output[N,8]."""
    g = _GraphBuilder(rng, "matmul_gemm", opset)
    x = g.input("input", [batch, 16])
    x = g.node("MatMul", [x, g.weight("matmul1.weight", (16, 32), fan_in=16)], "matmul1")
    x = g.node("Add", [x, g.bias("add1.bias", 32)], "add1")
    x = g.node("Relu", [x], "relu1")
    x = g.node("Relu", [g.gemm(x, "fc1", 32, 24)], "relu2")
    return g.build([g.gemm(x, "fc2", 24, 8, out="output")])


def weight_layers(rng: np.random.Generator, *, opset: int = DEFAULT_OPSET, batch: Batch = "N") -> onnx.ModelProto:
    """Every layer kind the weight levers handle: input[N,4,12,12] -> conv1(s2) -> relu1 -> gconv(group=2)
    -> relu2 -> dwconv(group=8) -> relu3 -> pwconv(1x1) -> relu4 -> gap/flatten -> fc(Gemm) -> relu5
    -> matmul1 -> output[N,6].
    """
    g = _GraphBuilder(rng, "weight_layers", opset)
    x = g.input("input", [batch, 4, 12, 12])
    x = g.node("Relu", [g.conv(x, "conv1", 4, 8, stride=2)], "relu1")
    x = g.node("Relu", [g.conv(x, "gconv", 8, 8, group=2)], "relu2")
    x = g.node("Relu", [g.conv(x, "dwconv", 8, 8, group=8)], "relu3")
    x = g.node("Relu", [g.conv(x, "pwconv", 8, 12, k=1)], "relu4")
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x], "gap")], "flatten", axis=1)
    x = g.node("Relu", [g.gemm(x, "fc", 12, 10)], "relu5")
    return g.build([g.node("MatMul", [x, g.weight("matmul1.weight", (10, 6), fan_in=10)], "matmul1", "output")])


def add_mul_concat(rng: np.random.Generator, *, opset: int = DEFAULT_OPSET, batch: Batch = "N") -> onnx.ModelProto:
    """Two conv branches of input[N,3,16,16] -> add / mul -> concat(axis=1) -> maxpool -> avgpool -> output[N,16,4,4].

    Nodes: conv_a, relu_a, conv_b, relu_b, add, mul, concat, maxpool, avgpool.
    """
    g = _GraphBuilder(rng, "add_mul_concat", opset)
    x = g.input("input", [batch, 3, 16, 16])
    a = g.node("Relu", [g.conv(x, "conv_a", 3, 8)], "relu_a")
    b = g.node("Relu", [g.conv(x, "conv_b", 3, 8, k=1)], "relu_b")
    s = g.node("Add", [a, b], "add")
    p = g.node("Mul", [a, b], "mul")
    c = g.node("Concat", [s, p], "concat", axis=1)
    c = g.node("MaxPool", [c], "maxpool", kernel_shape=[2, 2], strides=[2, 2])
    out = g.node("AveragePool", [c], "avgpool", out="output", kernel_shape=[2, 2], strides=[2, 2])
    return g.build([out])


def sigmoid_softmax(rng: np.random.Generator, *, opset: int = DEFAULT_OPSET, batch: Batch = "N") -> onnx.ModelProto:
    """input[N,3,8,8] -> conv1 -> sigmoid1 -> flatten -> matmul1 -> softmax1(axis=-1) -> output[N,10]."""
    g = _GraphBuilder(rng, "sigmoid_softmax", opset)
    x = g.input("input", [batch, 3, 8, 8])
    x = g.node("Sigmoid", [g.conv(x, "conv1", 3, 4)], "sigmoid1")
    x = g.node("Flatten", [x], "flatten", axis=1)
    x = g.node("MatMul", [x, g.weight("matmul1.weight", (4 * 8 * 8, 10), fan_in=64)], "matmul1")
    return g.build([g.node("Softmax", [x], "softmax1", out="output", axis=-1)])


def _mobilenetv3_body(g: _GraphBuilder, x: str, c: int, expand: int, prefix: str, out: str | None = None) -> str:
    """Inverted residual with SE and HardSwish; ``x`` has ``c`` channels."""
    h = g.node("HardSwish", [g.conv(x, f"{prefix}expand", c, expand, k=1)], f"{prefix}expand_hswish")
    h = g.node("HardSwish", [g.conv(h, f"{prefix}dwconv", expand, expand, group=expand)], f"{prefix}dw_hswish")
    h = g.se_block(h, expand, max(expand // 4, 1), prefix)
    h = g.conv(h, f"{prefix}project", expand, c, k=1)
    return g.node("Add", [x, h], f"{prefix}residual", out)


def mobilenetv3_block(rng: np.random.Generator, *, opset: int = DEFAULT_OPSET, batch: Batch = "N") -> onnx.ModelProto:
    """MobileNetV3-style bneck: input[N,3,32,32] -> stem(conv s2 + HardSwish) -> block -> output[N,16,16,16].

    Block nodes: expand, expand_hswish, dwconv (group=64), dw_hswish, SE (se_pool,
    se_reduce, se_relu, se_expand, se_hsigmoid, se_scale), project, residual (Add, writes ``output``).
    """
    g = _GraphBuilder(rng, "mobilenetv3_block", opset, min_opset=14)
    x = g.input("input", [batch, 3, 32, 32])
    x = g.node("HardSwish", [g.conv(x, "stem", 3, 16, stride=2)], "stem_hswish")
    return g.build([_mobilenetv3_body(g, x, 16, 64, "", out="output")])


def all_ops(rng: np.random.Generator, *, opset: int = DEFAULT_OPSET, batch: Batch = "N") -> onnx.ModelProto:
    """One model with every op family: input[N,3,16,16] -> output[N,10] (softmax probabilities).

    conv1/relu1 -> dwconv/clip1 -> pwconv/hswish1 -> SE (HardSigmoid) -> branches
    conv_a | conv_b/sigmoid_b -> add, mul -> concat -> maxpool -> avgpool -> gap ->
    flatten -> fc1(Gemm)/relu2 -> matmul1 -> add_bias -> softmax.
    """
    g = _GraphBuilder(rng, "all_ops", opset, min_opset=14)
    x = g.input("input", [batch, 3, 16, 16])
    x = g.node("Relu", [g.conv(x, "conv1", 3, 8)], "relu1")
    x = g.clip(g.conv(x, "dwconv", 8, 8, group=8), "clip1", 0.0, 6.0)
    x = g.node("HardSwish", [g.conv(x, "pwconv", 8, 16, k=1)], "hswish1")
    x = g.se_block(x, 16, 4, "")
    a = g.conv(x, "conv_a", 16, 8, k=1)
    b = g.node("Sigmoid", [g.conv(x, "conv_b", 16, 8)], "sigmoid_b")
    x = g.node("Concat", [g.node("Add", [a, b], "add"), g.node("Mul", [a, b], "mul")], "concat", axis=1)
    x = g.node("MaxPool", [x], "maxpool", kernel_shape=[2, 2], strides=[2, 2])
    x = g.node("AveragePool", [x], "avgpool", kernel_shape=[2, 2], strides=[2, 2])
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x], "gap")], "flatten", axis=1)
    x = g.node("Relu", [g.gemm(x, "fc1", 16, 32)], "relu2")
    x = g.node("MatMul", [x, g.weight("matmul1.weight", (32, 10), fan_in=32)], "matmul1")
    x = g.node("Add", [x, g.bias("add_bias.bias", 10)], "add_bias")
    return g.build([g.node("Softmax", [x], "softmax", out="output", axis=-1)])


WIDE_RANGE_NODE = "scale_up"


def wide_range_node(
    rng: np.random.Generator, factor: float = 1e6, *, opset: int = DEFAULT_OPSET, batch: Batch = "N"
) -> tuple[onnx.ModelProto, str]:
    """Small CNN whose node ``scale_up`` (returned name) has an activation range ~``factor`` x its neighbours'.

    input[N,3,16,16] -> conv1 -> relu1 -> scale_up (Mul by c) -> unscale (Div by c) -> conv2 -> relu2
    -> gap/flatten/fc -> output[N,10], with c = [factor, 1, ..., 1] per channel (shape [1,8,1,1]).

    How it breaks: in float, Div undoes Mul (channel 0 keeps its relative precision), so the
    output is that of a plain CNN. With per-tensor int8 (onnxruntime QDQ, MinMax),
    ``scale_up_out`` is calibrated to [0, ~factor * max(relu1_out[:, 0])], a scale of ~factor/255
    (~16000 for 1e6), so channels 1..7 (values O(1)) all round to the zero point: 7 of 8 channels
    reaching conv2 are zero. (The Mul constant c, quantized per tensor with scale ~factor/255,
    loses its 1s to 0 as well, which alone has the same effect.) Div is not among the ops
    onnxruntime quantizes by default, so ``nodes_to_exclude=["scale_up"]`` leaves
    ``scale_up_out`` in float and restores normal int8 accuracy (the sanity test checks a
    >10x output MSE ratio; typically 100-10000x).
    """
    g = _GraphBuilder(rng, "wide_range_node", opset)
    x = g.input("input", [batch, 3, 16, 16])
    x = g.node("Relu", [g.conv(x, "conv1", 3, 8)], "relu1")
    c = np.ones((1, 8, 1, 1), dtype=np.float32)
    c[0, 0] = factor
    # Separate constants: onnxruntime rewires *every* consumer of a quantized initializer to its
    # dequantized copy, so a shared one would make ``unscale`` divide by the collapsed 0s (NaN).
    x = g.node("Mul", [x, g.const("scale_up.factor", c)], WIDE_RANGE_NODE)
    x = g.node("Div", [x, g.const("unscale.divisor", c.copy())], "unscale")
    x = g.node("Relu", [g.conv(x, "conv2", 8, 16)], "relu2")
    return g.build([g.head(x, 16, 10)]), WIDE_RANGE_NODE


def reshape_mixes_batch(rng: np.random.Generator, *, opset: int = DEFAULT_OPSET, batch: Batch = "N") -> onnx.ModelProto:
    """input[N,3,8,8] -> conv1 -> flatten_all (Reshape [1,-1]) -> softmax_all -> restore -> output[N,4,8,8].

    ``restore`` reshapes back to ``Shape(conv1_out)`` (node ``shape``).

    The softmax normalizes over all samples at once, so a batch of 3 is not three runs of batch 1:
    a tool must refuse to batch this model.
    """
    g = _GraphBuilder(rng, "reshape_mixes_batch", opset)
    x = g.input("input", [batch, 3, 8, 8])
    x = g.conv(x, "conv1", 3, 4)
    shape = g.node("Shape", [x], "shape")
    flat = g.node("Reshape", [x, g.const("flatten_all.shape", np.array([1, -1], dtype=np.int64))], "flatten_all")
    sm = g.node("Softmax", [flat], "softmax_all", axis=-1)
    out = g.node("Reshape", [sm, shape], "restore", out="output")
    return g.build([out], shapes={"output": [batch, 4, 8, 8]})


def multi_io(rng: np.random.Generator, *, opset: int = DEFAULT_OPSET, batch: Batch = "N") -> onnx.ModelProto:
    """Inputs ``image``[N,3,8,8] and ``features``[N,5]; outputs ``logits``[N,4] and ``feature_map``[N,8,8,8].

    image -> conv1 -> relu1 (= feature_map) -> gap -> flatten; features -> matmul1 -> add1;
    concat(axis=1) -> fc -> logits.
    """
    g = _GraphBuilder(rng, "multi_io", opset)
    img = g.input("image", [batch, 3, 8, 8])
    feats = g.input("features", [batch, 5])
    fmap = g.node("Relu", [g.conv(img, "conv1", 3, 8)], "relu1", out="feature_map")
    pooled = g.node("Flatten", [g.node("GlobalAveragePool", [fmap], "gap")], "flatten", axis=1)
    f = g.node("MatMul", [feats, g.weight("matmul1.weight", (5, 8), fan_in=5)], "matmul1")
    f = g.node("Add", [f, g.bias("add1.bias", 8)], "add1")
    x = g.node("Concat", [pooled, f], "concat", axis=1)
    logits = g.gemm(x, "fc", 16, 4, out="logits")
    return g.build([logits, fmap])


def unnamed_nodes(rng: np.random.Generator, *, opset: int = DEFAULT_OPSET, batch: Batch = "N") -> onnx.ModelProto:
    """``conv_relu`` with every node name empty (tensor names unchanged)."""
    model = conv_relu(rng, opset=opset, batch=batch)
    for node in model.graph.node:
        node.name = ""
    return model


def duplicate_names(rng: np.random.Generator, *, opset: int = DEFAULT_OPSET, batch: Batch = "N") -> onnx.ModelProto:
    """``conv_relu`` whose nodes share names: all Conv nodes are ``conv``, all Relu/Clip nodes ``act``.

    It passes ``onnx.checker`` but onnxruntime refuses to load it ("two nodes with same node
    name"), at every optimization level: a tool must rename nodes before running it.
    """
    model = conv_relu(rng, opset=opset, batch=batch)
    for node in model.graph.node:
        if node.op_type == "Conv":
            node.name = "conv"
        elif node.op_type in ("Relu", "Clip"):
            node.name = "act"
    return model


LONG_NAME = "encoder.stage_0.block_0.depthwise_separable.pointwise_conv"


def variable_width(rng: np.random.Generator, *, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """input[1,3,8,W] -> conv (named LONG_NAME) -> relu1 -> pad (W+2) -> pool (2x2) -> conv2 -> relu2 -> head.

    W is free, so a layer's element count varies across samples of different widths; Pad, MaxPool and
    Flatten move int8 values without arithmetic, so their error is exactly zero on every CPU.
    """
    g = _GraphBuilder(rng, "variable_width", opset)
    x = g.input("input", [1, 3, 8, "W"])
    x = g.node("Relu", [g.conv(x, LONG_NAME, 3, 8)], "relu1")
    x = g.node("Pad", [x, g.const("pad.pads", np.array([0, 0, 0, 1, 0, 0, 0, 1], np.int64))], "pad")
    x = g.node("MaxPool", [x], "pool", kernel_shape=[2, 2], strides=[2, 2])
    x = g.node("Relu", [g.conv(x, "conv2", 8, 8)], "relu2")
    return g.build([g.head(x, 8, 4)])


def causal_mask(seq_len: int, sentinel: float = FLOAT32_MIN) -> np.ndarray:
    """[seq_len, seq_len] float32 additive mask: 0 on/below the diagonal, ``sentinel`` above."""
    upper = np.triu(np.ones((seq_len, seq_len), dtype=bool), k=1)
    return np.where(upper, np.float32(sentinel), np.float32(0.0)).astype(np.float32)


def attention_mask_sentinel(
    rng: np.random.Generator,
    *,
    mask_as_input: bool = False,
    seq_len: int = 8,
    dim: int = 16,
    opset: int = DEFAULT_OPSET,
    batch: Batch = "N",
) -> onnx.ModelProto:
    """Single-head causal self-attention, x[N,T,D] -> output[N,T,D].

    q_proj/k_proj/v_proj (MatMul) -> k_transpose -> qk_matmul -> qk_scale (Mul 1/sqrt(D))
    -> mask_add (Add mask) -> softmax -> av_matmul -> out_proj -> output. The mask holds 0 or the
    float32 minimum -3.4028235e38; it is the constant ``mask_add.mask`` [T,T], or with
    ``mask_as_input`` the graph input ``attention_mask`` [N,T,T] (``input_feed`` fills it with
    ``causal_mask``). Calibrating ``mask_add``'s inputs/output naively yields a range ~3.4e38 wide.
    """
    g = _GraphBuilder(rng, "attention_mask_sentinel", opset)
    x = g.input("x", [batch, seq_len, dim])
    if mask_as_input:
        mask = g.input(ATTENTION_MASK_INPUT, [batch, seq_len, seq_len])
    else:
        mask = g.const("mask_add.mask", causal_mask(seq_len))
    q = g.node("MatMul", [x, g.weight("q_proj.weight", (dim, dim), fan_in=dim)], "q_proj")
    k = g.node("MatMul", [x, g.weight("k_proj.weight", (dim, dim), fan_in=dim)], "k_proj")
    v = g.node("MatMul", [x, g.weight("v_proj.weight", (dim, dim), fan_in=dim)], "v_proj")
    kt = g.node("Transpose", [k], "k_transpose", perm=[0, 2, 1])
    s = g.node("MatMul", [q, kt], "qk_matmul")
    s = g.node("Mul", [s, g.const("qk_scale.factor", np.array(1.0 / np.sqrt(dim), dtype=np.float32))], "qk_scale")
    s = g.node("Add", [s, mask], "mask_add")
    p = g.node("Softmax", [s], "softmax", axis=-1)
    o = g.node("MatMul", [p, v], "av_matmul")
    out = g.node("MatMul", [o, g.weight("out_proj.weight", (dim, dim), fan_in=dim)], "out_proj", out="output")
    return g.build([out])


def shared_tensors(rng: np.random.Generator, *, opset: int = DEFAULT_OPSET, batch: Batch = "N") -> onnx.ModelProto:
    """Initializers and activations that several nodes share: input[N,4,8,8] -> output[N,6] and ``relu_out``.

    conv_a and conv_b read the same weight and bias; relu (of conv_a) feeds add, transpose and the
    graph output ``relu_out``; add and transpose meet in mul; concat(mul, add) -> pool -> reshape
    -> gemm_a and gemm_b, which share a weight and a bias -> sum (writes ``output``).
    """
    g = _GraphBuilder(rng, "shared_tensors", opset)
    x = g.input("input", [batch, 4, 8, 8])
    w = g.weight("shared_conv.weight", (4, 4, 3, 3), fan_in=36)
    b = g.bias("shared_conv.bias", 4)
    a = g.node("Conv", [x, w, b], "conv_a", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    c = g.node("Conv", [x, w, b], "conv_b", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    r = g.node("Relu", [a], "relu")
    s = g.node("Add", [r, c], "add")
    t = g.node("Transpose", [r], "transpose", perm=[0, 1, 3, 2])
    m = g.node("Mul", [s, t], "mul")
    x = g.node("Concat", [m, s], "concat", axis=1)
    x = g.node("MaxPool", [x], "pool", kernel_shape=[2, 2], strides=[2, 2])
    x = g.node("Reshape", [x, g.const("reshape.shape", np.array([-1, 128], dtype=np.int64))], "reshape")
    fc_w, fc_b = g.weight("shared_fc.weight", (6, 128), fan_in=128), g.bias("shared_fc.bias", 6)
    y = g.node("Gemm", [x, fc_w, fc_b], "gemm_a", transB=1)
    z = g.node("Gemm", [x, fc_w, fc_b], "gemm_b", transB=1)
    return g.build([g.node("Add", [y, z], "sum", out="output"), r])


MANY_NODES_BLOCKS = ("conv_relu", "conv_clip", "shared_conv", "add", "gate", "concat_conv", "transposes")
MANY_NODES_BLOCKS += ("reshapes", "maxpool", "softmax")


def many_nodes(
    rng: np.random.Generator, *, opset: int = DEFAULT_OPSET, batch: Batch = "N", blocks: int = 40
) -> onnx.ModelProto:
    """A random stack of ``blocks`` small blocks on input[N,4,6,6] -> output[N,5] and ``mid``.

    Each block (one of MANY_NODES_BLOCKS, drawn from ``rng``) reads one or two tensors drawn from
    everything before it, so most tensors have several readers; ``shared_conv`` blocks all use one
    weight and bias, the ``reshapes`` blocks one pair of shape constants. The output of the middle
    block is also a graph output (``mid``); a gap/flatten/gemm head writes ``output``.
    """
    g = _GraphBuilder(rng, "many_nodes", opset)
    pool = [g.input("input", [batch, 4, 6, 6])]
    shared_w = g.weight("shared_conv.weight", (4, 4, 3, 3), fan_in=36)
    shared_b = g.bias("shared_conv.bias", 4)
    flat = g.const("flat.shape", np.array([0, 4, 36], dtype=np.int64))
    grid = g.const("grid.shape", np.array([0, 4, 6, 6], dtype=np.int64))
    mid = ""
    for i in range(blocks):
        kind = MANY_NODES_BLOCKS[int(rng.integers(len(MANY_NODES_BLOCKS)))]
        x, y = (pool[int(k)] for k in rng.integers(len(pool), size=2))
        p = f"b{i}_"
        if kind == "conv_relu":
            out = g.node("Relu", [g.conv(x, f"{p}conv", 4, 4)], f"{p}relu")
        elif kind == "conv_clip":
            out = g.clip(g.conv(x, f"{p}conv", 4, 4, k=1), f"{p}clip", 0.0, 6.0)
        elif kind == "shared_conv":
            out = g.node("Conv", [x, shared_w, shared_b], f"{p}conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        elif kind == "add":
            out = g.node("Add", [x, y], f"{p}add")
        elif kind == "gate":
            out = g.node("Mul", [x, g.node("Sigmoid", [y], f"{p}sigmoid")], f"{p}gate")
        elif kind == "concat_conv":
            out = g.conv(g.node("Concat", [x, y], f"{p}concat", axis=1), f"{p}conv", 8, 4, k=1)
        elif kind == "transposes":
            t = g.node("Transpose", [x], f"{p}transpose_a", perm=[0, 1, 3, 2])
            out = g.node("Transpose", [t], f"{p}transpose_b", perm=[0, 1, 3, 2])
        elif kind == "reshapes":
            out = g.node("Reshape", [g.node("Reshape", [x, flat], f"{p}flatten"), grid], f"{p}unflatten")
        elif kind == "maxpool":
            out = g.node("MaxPool", [x], f"{p}maxpool", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        else:
            out = g.node("Softmax", [x], f"{p}softmax", axis=1)
        pool.append(out)
        if i == blocks // 2:
            mid = g.node("Identity", [out], f"{p}mid", out="mid")
    x = g.node("Flatten", [g.node("GlobalAveragePool", [pool[-1]], "gap")], "flatten", axis=1)
    return g.build([g.gemm(x, "fc", 4, 5, out="output"), mid])


ALL_MODELS: dict[str, ModelBuilder] = {
    "conv_relu": conv_relu,
    "depthwise": depthwise,
    "matmul_gemm": matmul_gemm,
    "add_mul_concat": add_mul_concat,
    "sigmoid_softmax": sigmoid_softmax,
    "mobilenetv3_block": mobilenetv3_block,
    "all_ops": all_ops,
    "reshape_mixes_batch": reshape_mixes_batch,
    "multi_io": multi_io,
    "unnamed_nodes": unnamed_nodes,
    "duplicate_names": duplicate_names,
    "attention_mask_sentinel": attention_mask_sentinel,
    "attention_mask_input": functools.partial(attention_mask_sentinel, mask_as_input=True),
    "shared_tensors": shared_tensors,
    "many_nodes": many_nodes,
}
"""Builders returning a plain ``ModelProto`` (``wide_range_node`` returns a tuple, so it is not here)."""

BATCH_MIXING_MODELS = frozenset({"reshape_mixes_batch"})
"""Models whose samples interact across the batch dimension."""


def input_feed(model: onnx.ModelProto, rng: np.random.Generator, batch: int = 1) -> dict[str, np.ndarray]:
    """Random inputs for ``model``'s graph inputs; symbolic/unknown dims become ``batch``.

    Float inputs are standard normal, integer inputs uniform in [0, 10); an input named
    ``attention_mask`` gets ``causal_mask`` broadcast to its shape.
    """
    init_names = {t.name for t in model.graph.initializer}
    feed: dict[str, np.ndarray] = {}
    for inp in model.graph.input:
        if inp.name in init_names:
            continue
        ttype = inp.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else batch for d in ttype.shape.dim)
        dtype = helper.tensor_dtype_to_np_dtype(ttype.elem_type)
        if inp.name == ATTENTION_MASK_INPUT:
            feed[inp.name] = np.broadcast_to(causal_mask(shape[-1]), shape).astype(dtype)
        elif np.issubdtype(dtype, np.floating):
            feed[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            feed[inp.name] = rng.integers(0, 10, size=shape).astype(dtype)
        elif dtype == np.bool_:
            feed[inp.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise TypeError(f"input {inp.name!r}: unsupported dtype {dtype}")
    return feed
