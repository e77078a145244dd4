"""Chains of weighted layers and activations, the graphs cross-layer equalization works on.

``chain_model`` builds one from an explicit recipe (the unit tests in tests/pipeline/transform use it);
``random_chains`` draws recipes for hypothesis: Conv (grouped, depthwise, 1x1/3x3, with or without
bias, optionally followed by BatchNormalization) or Gemm/MatMul (transB, bias, MatMul + Add bias),
each followed by none, Relu, LeakyRelu, PRelu, Clip(0, 6) or Clip(0); opsets 11 to 21 (Clip's
bounds are attributes before opset 11, inputs from 11); output channels of every weight scaled
over three decades so equalization has something to do; sometimes a residual Add or a second
graph output that equalization must leave alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import onnx
from hypothesis import strategies as st
from tests import models

ACTIVATIONS = ("none", "Relu", "LeakyRelu", "PRelu", "Clip6", "Clip0")
MIN_OPSET, MAX_OPSET = 11, 21


@dataclasses.dataclass(frozen=True)
class Layer:
    op: str  # Conv, Gemm, MatMul
    out: int
    act: str = "none"
    k: int = 1
    group: int = 1
    bias: bool = True
    bn: bool = False  # Conv only: a BatchNormalization after it
    trans_b: bool = False  # Gemm only


@dataclasses.dataclass
class Chain:
    model: onnx.ModelProto
    recipe: list[str]
    feeds: list[dict[str, np.ndarray]]

    def __repr__(self) -> str:
        return "Chain(\n  " + "\n  ".join(self.recipe) + "\n)"


def _spread(rng: np.random.Generator, n: int, decades: float) -> np.ndarray:
    return (10.0 ** rng.uniform(-decades / 2, decades / 2, n)).astype(np.float32)


def chain_model(
    rng: np.random.Generator,
    layers: Sequence[Layer],
    *,
    channels: int,
    spatial: int = 0,
    opset: int = 17,
    residual: bool = False,
    tap: int | None = None,
    decades: float = 3.0,
) -> onnx.ModelProto:
    """Input ``[N, channels, spatial, spatial]`` (``spatial`` 0: ``[N, channels]``) through ``layers``.

    ``residual``: the last layer's output is added to the first layer's (same shape needed).
    ``tap``: the output of layer ``tap`` is also a graph output. ``decades``: how far apart the
    output channels' weight ranges are spread.
    """
    g = models._GraphBuilder(rng, "chain", opset, min_opset=9)  # opset 9-10: Clip bounds as attributes
    x = g.input("input", ["N", channels, spatial, spatial] if spatial else ["N", channels])
    c = channels
    outs: list[str] = []
    for i, layer in enumerate(layers):
        name = f"l{i}"
        if layer.op == "Conv":
            w = rng.normal(
                0, np.sqrt(2.0 / (c // layer.group * layer.k**2)), (layer.out, c // layer.group, layer.k, layer.k)
            )
            w = (w * _spread(rng, layer.out, decades)[:, None, None, None]).astype(np.float32)
            inputs = [x, g.const(f"{name}.weight", w)]
            if layer.bias:
                inputs.append(g.const(f"{name}.bias", rng.normal(0, 0.3, layer.out).astype(np.float32)))
            pad = layer.k // 2
            x = g.node("Conv", inputs, name, kernel_shape=[layer.k] * 2, pads=[pad] * 4, group=layer.group)
            if layer.bn:
                stats = [
                    rng.uniform(0.2, 3.0, layer.out),
                    rng.normal(0, 0.5, layer.out),
                    rng.normal(0, 0.5, layer.out),
                    rng.uniform(0.1, 4.0, layer.out),
                ]
                names = [
                    g.const(f"{name}_bn.{s}", v.astype(np.float32))
                    for s, v in zip(("scale", "B", "mean", "var"), stats)
                ]
                x = g.node("BatchNormalization", [x, *names], f"{name}_bn", epsilon=1e-3)
        else:
            w = rng.normal(0, np.sqrt(2.0 / c), (c, layer.out)) * _spread(rng, layer.out, decades)[None, :]
            w = w.astype(np.float32)
            if layer.op == "Gemm":
                inputs = [x, g.const(f"{name}.weight", w.T.copy() if layer.trans_b else w)]
                if layer.bias:
                    inputs.append(g.const(f"{name}.bias", rng.normal(0, 0.3, layer.out).astype(np.float32)))
                x = g.node("Gemm", inputs, name, transB=int(layer.trans_b))
            else:
                x = g.node("MatMul", [x, g.const(f"{name}.weight", w)], name)
                if layer.bias:
                    x = g.node(
                        "Add",
                        [x, g.const(f"{name}.bias", rng.normal(0, 0.3, layer.out).astype(np.float32))],
                        f"{name}_add",
                    )
        c = layer.out
        x = _activation(g, x, layer.act, c, f"{name}_{layer.act.lower()}", conv=layer.op == "Conv")
        outs.append(x)
    if residual:
        x = g.node("Add", [outs[0], x], "residual")
    outputs = [x] + ([outs[tap]] if tap is not None and outs[tap] != x else [])
    model = g.build(outputs)
    onnx.checker.check_model(model, full_check=True)
    return model


def _activation(g: models._GraphBuilder, x: str, act: str, c: int, name: str, *, conv: bool) -> str:
    if act == "none":
        return x
    if act in ("Relu", "LeakyRelu"):
        return g.node(act, [x], name, **({"alpha": 0.07} if act == "LeakyRelu" else {}))
    if act == "PRelu":
        slope = g.rng.uniform(-0.5, 0.5, (c, 1, 1) if conv else (c,)).astype(np.float32)
        return g.node("PRelu", [x, g.const(f"{name}.slope", slope)], name)
    hi = 6.0 if act == "Clip6" else math.inf
    if g.opset < 11:
        return g.node("Clip", [x], name, min=0.0, **({"max": hi} if math.isfinite(hi) else {}))
    inputs = [x, g.const(f"{name}.min", np.array(0.0, np.float32))]
    if math.isfinite(hi):
        inputs.append(g.const(f"{name}.max", np.array(hi, np.float32)))
    return g.node("Clip", inputs, name)


def feeds_for(
    model: onnx.ModelProto, rng: np.random.Generator, n: int, scale: float = 1.0
) -> list[dict[str, np.ndarray]]:
    shape = [d.dim_value or 2 for d in model.graph.input[0].type.tensor_type.shape.dim]
    return [{"input": (scale * rng.standard_normal(shape)).astype(np.float32)} for _ in range(n)]


@st.composite
def random_chains(draw: st.DrawFn, max_layers: int = 4, conv: bool | None = None) -> Chain:
    """A random chain; ``conv`` True / False asks for Conv layers / Gemm-MatMul layers only."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    conv = draw(st.booleans()) if conv is None else conv
    channels = draw(st.integers(1, 6))
    opset = draw(st.integers(MIN_OPSET, MAX_OPSET))
    layers: list[Layer] = []
    c = channels
    for _ in range(draw(st.integers(2, max_layers))):
        act = draw(st.sampled_from(ACTIVATIONS))
        if conv:
            depthwise = draw(st.booleans())
            out = c * draw(st.sampled_from([1, 2])) if depthwise else draw(st.integers(1, 6))
            divisors = [d for d in range(1, math.gcd(c, out) + 1) if c % d == 0 and out % d == 0]
            group = c if depthwise else draw(st.sampled_from(divisors))
            layers.append(
                Layer(
                    "Conv",
                    out,
                    act,
                    k=draw(st.sampled_from([1, 3])),
                    group=group,
                    bias=draw(st.booleans()),
                    bn=draw(st.booleans()),
                )
            )
        else:
            op = draw(st.sampled_from(["Gemm", "MatMul"]))
            out = draw(st.integers(1, 8))
            layers.append(Layer(op, out, act, bias=draw(st.booleans()), trans_b=draw(st.booleans()) and op == "Gemm"))
        c = out
    residual = layers[0].out == layers[-1].out and draw(st.integers(0, 3)) == 0
    tap = draw(st.sampled_from([None, None, None, *range(len(layers) - 1)]))
    spatial = draw(st.sampled_from([3, 5])) if conv else 0
    model = chain_model(rng, layers, channels=channels, spatial=spatial, opset=opset, residual=residual, tap=tap)
    scale = 10 ** draw(st.floats(-1.0, 1.0))
    feeds = feeds_for(model, rng, 3, scale)
    recipe = [f"seed={seed} opset={opset} channels={channels} spatial={spatial} residual={residual} tap={tap}"]
    recipe += [repr(layer) for layer in layers]
    return Chain(model, recipe, feeds)
