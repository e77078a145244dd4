"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization"), exact on the float model.

For two layers in a row, ``y = W2 f(W1 x + b1)`` with ``f`` positively homogeneous per channel
(none, Relu, LeakyRelu, PRelu), ``f(a / s) = f(a) / s`` for ``s > 0``, so dividing output channel
``c`` of W1 (and b1) by ``s_c`` and multiplying input channel ``c`` of W2 by ``s_c`` changes
nothing. ``s_c = sqrt(r1_c / r2_c)`` gives both channels the range ``sqrt(r1_c * r2_c)``, which is
what lets per-tensor int8 weights keep the small channels. ReLU6 (``Clip(0, m)``) does not commute
with a per-channel scale; with ``clip="rewrite"`` it becomes ``Clip(0)`` then ``Min`` against the
per-channel bound ``m / s_c`` (exact), with ``clip="skip"`` such pairs are left alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

import numpy as np
import onnx
from onnx import helper

from quantdebug.errors import ConfigError
from quantdebug.pipeline.transform._graph import Graph, attr, check_node_names, record, set_attr

KIND = "equalize"
CLIP_MODES = ("rewrite", "skip")
MAX_SWEEPS = 50  # chains converge in a few sweeps; this only bounds a pathological model
CONVERGED = 1e-6  # stop when no scale of a sweep moves by more than this (relative)
_HOMOGENEOUS = ("Relu", "LeakyRelu", "PRelu")  # f(a / s) == f(a) / s for every s > 0


@dataclasses.dataclass
class _Layer:
    """A weighted node with the channel bookkeeping for its constant weight (worked on in float64)."""

    node: onnx.NodeProto
    weight: np.ndarray
    bias: np.ndarray | None  # Conv bias / Gemm C / the constant of a MatMul's bias Add
    bias_node: onnx.NodeProto | None  # the node and input index the bias lives at
    bias_index: int
    out: str  # the tensor the layer's channels come out of (after a MatMul's bias Add)

    @property
    def family(self) -> str:
        return "conv" if self.node.op_type == "Conv" else "dense"

    def _trans_b(self) -> bool:
        return self.node.op_type == "Gemm" and bool(attr(self.node, "transB", 0))

    @property
    def groups(self) -> int:
        return int(attr(self.node, "group", 1)) if self.node.op_type == "Conv" else 1  # type: ignore[call-overload]

    @property
    def n_out(self) -> int:
        if self.family == "conv":
            return self.weight.shape[0]
        return self.weight.shape[0] if self._trans_b() else self.weight.shape[1]

    @property
    def n_in(self) -> int:
        if self.family == "conv":
            return self.weight.shape[1] * self.groups
        return self.weight.shape[1] if self._trans_b() else self.weight.shape[0]

    def out_view(self) -> np.ndarray:
        """The weight as [output channel, everything that channel reads]."""
        w = self.weight
        if self.family == "conv":
            return w.reshape(w.shape[0], -1)
        return w if self._trans_b() else w.T

    def in_view(self) -> np.ndarray:
        """The weight as [input channel, everything that reads that channel] (groups respected)."""
        w = self.weight
        if self.family == "dense":
            return w.T if self._trans_b() else w
        g, cg = self.groups, w.shape[1]
        blocks = w.reshape(g, w.shape[0] // g, cg, -1).transpose(0, 2, 1, 3)
        return blocks.reshape(g * cg, -1)

    def divide_out(self, s: np.ndarray) -> None:
        if self.family == "conv":
            self.weight = self.weight / s.reshape((-1,) + (1,) * (self.weight.ndim - 1))
        else:
            self.weight = self.weight / (s[:, None] if self._trans_b() else s[None, :])
        if self.bias is not None:
            # a Gemm C / bias Add constant broadcasts on its last axis; a scalar one becomes a vector
            b = self.bias if self.bias.size > 1 else np.full(self.n_out, float(self.bias.reshape(-1)[0]))
            self.bias = b / s.reshape((1,) * max(b.ndim - 1, 0) + (-1,))

    def multiply_in(self, s: np.ndarray) -> None:
        w = self.weight
        if self.family == "dense":
            self.weight = w * (s[None, :] if self._trans_b() else s[:, None])
            return
        g, cg = self.groups, w.shape[1]
        factor = np.repeat(s.reshape(g, 1, cg), w.shape[0] // g, axis=1).reshape(w.shape[0], cg)
        self.weight = w * factor.reshape(factor.shape + (1,) * (w.ndim - 2))


@dataclasses.dataclass
class _Pair:
    first: _Layer
    act: onnx.NodeProto | None
    clip_max: float | None  # the bound of a Clip(0, m) activation, rewritten at the end
    second: _Layer
    total: np.ndarray  # the product of every sweep's scales

    @property
    def names(self) -> list[str]:
        middle = [self.act.name] if self.act is not None else []
        return [self.first.node.name, *middle, self.second.node.name]


def equalize(
    model: onnx.ModelProto, nodes: Sequence[str] | None = None, *, clip: str = "rewrite"
) -> tuple[onnx.ModelProto, list[dict[str, object]]]:
    """Cross-layer equalization of every exact pair of weighted layers; the float function is kept.

    ``nodes``: only pairs whose two weighted layers are both named are equalized (None: all).
    ``clip``: what to do with a ReLU6 (``Clip(0, m)``) between the layers, one of ``CLIP_MODES``.
    Returns a copy of the model and one record per candidate (``kind``, ``nodes``, ``status``,
    ``reason``). BatchNormalization is not folded here: call ``fold_batchnorm`` first.
    """
    if clip not in CLIP_MODES:
        raise ConfigError(f"equalize: clip must be one of {CLIP_MODES}, got {clip!r}")
    g = Graph.of(model)
    chosen = check_node_names(g.model, nodes, "equalize")
    layers: dict[str, _Layer] = {}
    pairs: list[_Pair] = []
    records: list[dict[str, object]] = []
    for node in list(g.graph.node):
        if node.op_type not in ("Conv", "Gemm", "MatMul") or (chosen is not None and node.name not in chosen):
            continue
        first = layers.get(node.name) or _layer(g, node)
        if isinstance(first, str):
            records.append(record(KIND, [node.name], "skipped", first))
            continue
        found = _pair_after(g, first, layers, clip)
        if isinstance(found, tuple):
            records.append(record(KIND, found[0], "skipped", found[1]))
            continue
        if chosen is not None and found.second.node.name not in chosen:
            records.append(record(KIND, found.names, "skipped", f"{found.second.node.name!r} is not among nodes"))
            continue
        layers[node.name] = found.first
        layers[found.second.node.name] = found.second
        pairs.append(found)
    sweeps = _sweep(pairs)
    for p in pairs:
        lo, hi = float(p.total.min()), float(p.total.max())
        through = f" through {p.act.op_type}" if p.act is not None else ""
        bound = (
            f"; {p.act.name if p.act else ''} rewritten as Clip(0) + Min against the per-channel bound"
            if p.clip_max
            else ""
        )
        reason = f"{p.first.n_out} channels{through}, scales {lo:.3g}..{hi:.3g} after {sweeps} sweeps{bound}"
        records.append(record(KIND, p.names, "applied", reason))
    _write(g, layers.values(), pairs)
    position = {n.name: i for i, n in enumerate(model.graph.node)}
    records.sort(key=lambda r: position.get(r["nodes"][0], -1))  # type: ignore[index]
    return g.model, records


def _layer(g: Graph, node: onnx.NodeProto) -> _Layer | str:
    """The layer view of a Conv/Gemm/MatMul, or why its weights cannot be rescaled."""
    weight = g.input_const(node, 1)
    if weight is None:
        return f"{node.op_type} weight {node.input[1]!r} is not a constant"
    if node.op_type == "MatMul" and weight.ndim != 2:
        return f"MatMul weight has shape {list(weight.shape)}, not [K, N]"
    if node.op_type == "Gemm" and attr(node, "transA", 0):
        return "Gemm with transA=1 reads its input transposed"
    bias_index = 2
    bias_node: onnx.NodeProto | None = node
    bias = g.input_const(node, 2)
    if len(node.input) > 2 and node.input[2] and bias is None:
        return f"{node.op_type} bias {node.input[2]!r} is not a constant"
    if (
        node.op_type == "Gemm"
        and bias is not None
        and bias.size > 1
        and bias.shape[-1] != weight.shape[0 if attr(node, "transB", 0) else 1]
    ):
        return f"Gemm bias of shape {list(bias.shape)} is not per output channel"
    out = node.output[0]
    if node.op_type == "MatMul":
        bias_node = None
        add = g.only_consumer(out)
        if not isinstance(add, str) and add.op_type == "Add":
            other = 1 if add.input[0] == out else 0
            value = g.input_const(add, other)
            n = weight.shape[1]
            if value is not None and value.size in (1, n) and all(d == 1 for d in value.shape[:-1]):
                bias, bias_node, bias_index, out = value, add, other, add.output[0]
    return _Layer(
        node,
        np.asarray(weight, np.float64),
        None if bias is None else np.asarray(bias, np.float64),
        bias_node,
        bias_index,
        out,
    )


def _scalar(g: Graph, node: onnx.NodeProto, index: int, name: str) -> float | str | None:
    """A Clip bound: from input ``index`` (opset 11+) or attribute ``name``; None when absent."""
    if g.opset >= 11:
        if len(node.input) <= index or not node.input[index]:
            return None
        value = g.input_const(node, index)
        if value is None or value.size != 1:
            return f"Clip {name} {node.input[index]!r} is not a constant scalar"
        return float(value.reshape(-1)[0])
    found = attr(node, name)
    return None if found is None else float(found)  # type: ignore[arg-type]


def _pair_after(g: Graph, first: _Layer, layers: dict[str, _Layer], clip: str) -> _Pair | tuple[list[str], str]:
    """The pair that starts at ``first``, or the nodes looked at and why they are not a pair."""
    seen = [first.node.name]
    nxt = g.only_consumer(first.out)
    if isinstance(nxt, str):
        return seen, f"not exact: {nxt}"
    act: onnx.NodeProto | None = None
    clip_max: float | None = None
    if nxt.op_type in (*_HOMOGENEOUS, "Clip"):
        act = nxt
        seen.append(act.name)
        if act.op_type == "PRelu" and act.input[0] != first.out:
            return seen, "PRelu reads the layer as its slope"
        if act.op_type == "Clip":
            lo, hi = _scalar(g, act, 1, "min"), _scalar(g, act, 2, "max")
            if isinstance(lo, str) or isinstance(hi, str):
                return seen, str(lo if isinstance(lo, str) else hi)
            if hi is not None and lo is None:
                return seen, "Clip without a lower bound of 0 is not a ReLU/ReLU6"
            if lo not in (None, 0.0):
                return seen, f"Clip({lo:g}, ...) has a lower bound other than 0: no per-channel scale commutes"
            if hi is not None and math.isfinite(hi):
                if hi <= 0:
                    return seen, f"Clip(0, {hi:g}) has no positive range"
                if clip == "skip":
                    return seen, f"Clip(0, {hi:g}) does not commute with per-channel scales (clip='skip')"
                clip_max = hi
        nxt = g.only_consumer(act.output[0])
        if isinstance(nxt, str):
            return seen, f"not exact: {nxt}"
    tensor = act.output[0] if act is not None else first.out
    while nxt.op_type == "Pad" and nxt.input[0] == tensor:  # TF-style "same" padding: zeros stay zeros
        seen.append(nxt.name)
        why = _pad_commutes(g, nxt)
        if why:
            return seen, why
        tensor = nxt.output[0]
        nxt = g.only_consumer(tensor)
        if isinstance(nxt, str):
            return seen, f"not exact: {nxt}"
    seen.append(nxt.name)
    if nxt.op_type not in ("Conv", "Gemm", "MatMul"):
        return seen, f"the next node is {nxt.op_type}, not a Conv/Gemm/MatMul"
    if nxt.input[0] != tensor:
        return seen, f"{nxt.name} reads the tensor as its weight, not its data"
    second = layers.get(nxt.name) or _layer(g, nxt)
    if isinstance(second, str):
        return seen, second
    if second.family != first.family:
        return seen, f"{first.node.op_type} -> {nxt.op_type}: the channel axes differ"
    if first.n_out != second.n_in:
        return seen, f"{first.n_out} output channels feed {second.n_in} input channels"
    return _Pair(first, act, clip_max, second, np.ones(first.n_out))


def _pad_commutes(g: Graph, pad: onnx.NodeProto) -> str:
    """'' when Pad(x / s) == Pad(x) / s per channel: any mode but a constant other than 0."""
    mode = attr(pad, "mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        return ""  # reflect / edge / wrap copy values, which commutes with a positive scale
    if g.opset < 11:
        value = float(attr(pad, "value", 0.0))  # type: ignore[arg-type]
    elif len(pad.input) > 2 and pad.input[2]:
        found = g.input_const(pad, 2)
        if found is None:
            return f"Pad {pad.name!r} pads with a value computed at run time"
        value = float(found.reshape(-1)[0])
    else:
        value = 0.0
    return "" if value == 0.0 else f"Pad {pad.name!r} pads with {value:g}, which a per-channel scale changes"


def _sweep(pairs: list[_Pair]) -> int:
    """Equalize every pair in order, sweep after sweep, until the scales stop moving (the paper's loop)."""
    for sweep in range(1, MAX_SWEEPS + 1):
        moved = 0.0
        for p in pairs:
            r1 = np.abs(p.first.out_view()).max(axis=1)
            r2 = np.abs(p.second.in_view()).max(axis=1)
            ok = (r1 > 0) & (r2 > 0) & np.isfinite(r1) & np.isfinite(r2)
            s = np.where(ok, np.sqrt(np.where(ok, r1, 1.0) / np.where(ok, r2, 1.0)), 1.0)
            p.first.divide_out(s)
            p.second.multiply_in(s)
            p.total = p.total * s
            moved = max(moved, float(np.max(np.abs(np.log(s)))) if s.size else 0.0)
        if moved <= CONVERGED:
            return sweep
    return MAX_SWEEPS


def _write(g: Graph, layers: Iterable[_Layer], pairs: list[_Pair]) -> None:
    for layer in layers:
        g.set_const(layer.node, 1, layer.weight, f"{layer.node.name}.weight")
        if layer.bias is not None and layer.bias_node is not None:
            g.set_const(layer.bias_node, layer.bias_index, layer.bias, f"{layer.node.name}.bias")
    for p in pairs:
        if p.clip_max is not None and p.act is not None:
            _rewrite_clip(g, p)
    g.drop_unused_initializers()


def _rewrite_clip(g: Graph, p: _Pair) -> None:
    """Clip(0, m) on scaled channels -> Clip(0) then Min(., m / s_c): the same values, exactly."""
    clip = p.act
    assert clip is not None
    if g.opset >= 11:
        del clip.input[2:]
    else:
        set_attr(clip, "max", None)
    rank = p.first.weight.ndim - 1 if p.first.family == "conv" else 1  # channel and trailing spatial dims
    dtype = g.constants[p.first.node.input[1]].dtype  # the model's float type (float16 models exist)
    bound = (np.float64(p.clip_max) / p.total).astype(dtype).reshape((-1,) + (1,) * (rank - 1))
    out = clip.output[0]
    relu_out = g.fresh(f"{clip.name}/relu")
    clip.output[0] = relu_out
    bound_name = g.fresh(f"{clip.name}/bound")
    g.graph.initializer.append(onnx.numpy_helper.from_array(bound, bound_name))
    minimum = helper.make_node("Min", [relu_out, bound_name], [out], name=g.fresh(f"{clip.name}/min"))
    position = list(g.graph.node).index(clip) + 1
    g.graph.node.insert(position, minimum)
