"""SmoothQuant (Xiao et al. 2023): move activation outliers of MatMul/Gemm inputs into the weights.

``X W = (X / s) (diag(s) W)``. With ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` the outlier
channels of X shrink and per-tensor int8 keeps the others. The division by ``s`` is folded into
the node that produces X (LayerNormalization's scale and bias, a decomposed LayerNorm's last
Mul/Add, a MatMul/Gemm's output channels), so no node is added: an inserted Mul would itself be
quantized first and gain nothing. Where nothing can absorb it the site is skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from quantdebug.errors import ConfigError, DatasetError
from quantdebug.pipeline.transform._graph import Graph, attr, check_node_names, record
from quantdebug.runtime import make_session

KIND = "smooth_quant"
MIN_SCALE = 1e-5  # the reference implementation's clamp: a dead channel does not blow up its weights


@dataclasses.dataclass
class _Edit:
    """Divide the constant at ``node.input[index]`` by ``s``: along its last axis, or (``columns``)
    along a MatMul/Gemm weight's output channels."""

    node: onnx.NodeProto
    index: int
    columns: bool = False


@dataclasses.dataclass
class _Site:
    tensor: str
    matmuls: list[onnx.NodeProto]
    absorbers: list[onnx.NodeProto]
    edits: list[_Edit]

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.absorbers] + [n.name for n in self.matmuls]


def smooth_quant(
    model: onnx.ModelProto,
    feeds: Iterable[Mapping[str, np.ndarray]],
    alpha: float,
    nodes: Sequence[str] | None = None,
) -> tuple[onnx.ModelProto, list[dict[str, object]]]:
    """SmoothQuant with migration strength ``alpha`` (0..1) on every MatMul/Gemm with a constant weight.

    ``feeds``: the calibration samples (``{input name: array}``), read once in a streaming pass
    that keeps only per-channel maxima. MatMuls that read the same tensor (Q, K, V) share one
    scale. ``nodes``: only sites whose MatMul/Gemm nodes are all named (None: all). Returns a
    copy of the model and one record per site; the input model is not changed.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"smooth_quant: alpha must be a number in [0, 1] (0.5 is the paper's default), got {alpha!r}")
    g = Graph.of(model)
    chosen = check_node_names(g.model, nodes, "smooth_quant")
    records: list[dict[str, object]] = []
    sites: list[_Site] = []
    for tensor, readers in _sites(g, chosen):
        found = _site(g, tensor, readers, chosen)
        if isinstance(found, str):
            records.append(record(KIND, [n.name for n in readers], "skipped", found))
        else:
            sites.append(found)
    if sites:
        act_max = _activation_maxima(g.model, [s.tensor for s in sites], feeds)
        for site in sites:
            records.append(_apply(g, site, act_max[site.tensor], float(alpha)))
        g.drop_unused_initializers()
    position = {n.name: i for i, n in enumerate(model.graph.node)}
    records.sort(key=lambda r: min(position.get(n, -1) for n in r["nodes"]))  # type: ignore[attr-defined]
    return g.model, records


def _weight_in(g: Graph, node: onnx.NodeProto) -> np.ndarray | None:
    """A MatMul/Gemm constant weight as [input channel, output channel], or None."""
    w = g.input_const(node, 1)
    if w is None or w.ndim != 2 or (node.op_type == "Gemm" and attr(node, "transA", 0)):
        return None
    return w.T if node.op_type == "Gemm" and attr(node, "transB", 0) else w


def _sites(g: Graph, chosen: set[str] | None) -> list[tuple[str, list[onnx.NodeProto]]]:
    """Tensors read as data by a MatMul/Gemm with a constant weight, with those readers, in graph order."""
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in g.graph.node:
        if node.op_type in ("MatMul", "Gemm") and node.input[0] and _weight_in(g, node) is not None:
            found.setdefault(node.input[0], []).append(node)
    if chosen is None:
        return list(found.items())
    return [(t, readers) for t, readers in found.items() if any(n.name in chosen for n in readers)]


def _site(g: Graph, tensor: str, readers: list[onnx.NodeProto], chosen: set[str] | None) -> _Site | str:
    if tensor in g.outputs:
        return f"{tensor!r} is a graph output"
    if tensor in g.subgraph_refs:
        return f"{tensor!r} is read inside a subgraph (If/Loop/Scan)"
    others = [n for n in g.value_readers(tensor) if n not in readers or list(n.input).count(tensor) > 1]
    if others:
        names = ", ".join(f"{n.name} ({n.op_type})" for n in others)
        return f"{tensor!r} also feeds {names}: dividing it would change them"
    if chosen is not None and (missing := [n.name for n in readers if n.name not in chosen]):
        return f"{tensor!r} also feeds {missing}, not among nodes: they must share its scale"
    channels = {int(w.shape[0]) for n in readers if (w := _weight_in(g, n)) is not None}
    if len(channels) != 1:
        return f"the MatMuls reading {tensor!r} disagree on its channel count"
    absorbers: list[onnx.NodeProto] = []
    edits: list[_Edit] = []
    why = _absorb(g, tensor, channels.pop(), absorbers, edits)
    if why:
        return why
    return _Site(tensor, readers, absorbers, edits)


def _last_axis(value: np.ndarray | None, channels: int) -> bool:
    """Whether a constant broadcasts along the last axis only (so it can be divided per channel)."""
    return value is not None and value.size in (1, channels) and all(d == 1 for d in value.shape[:-1])


def _absorb(g: Graph, tensor: str, channels: int, absorbers: list[onnx.NodeProto], edits: list[_Edit]) -> str:
    """Plan the edits that divide ``tensor``'s last-axis channels by s; return why not, or ''."""
    node = g.producer.get(tensor)
    if node is None:
        return f"{tensor!r} is a graph input: nothing before it can absorb the scale"
    absorbers.insert(0, node)
    op = node.op_type
    if op == "LayerNormalization":
        scale, bias = g.input_const(node, 1), g.input_const(node, 2)
        has_bias = len(node.input) > 2 and bool(node.input[2])
        if scale is None or scale.shape != (channels,) or (has_bias and (bias is None or bias.shape != (channels,))):
            return f"LayerNormalization {node.name!r} has no constant per-channel scale/bias over the last axis"
        edits.append(_Edit(node, 1))
        if has_bias:
            edits.append(_Edit(node, 2))
        return ""
    if op in ("Mul", "Add"):
        const = [i for i in (0, 1) if g.input_const(node, i) is not None]
        if len(const) != 1 or not _last_axis(g.input_const(node, const[0]), channels):
            return f"{op} {node.name!r} has no constant that broadcasts along the channels"
        edits.append(_Edit(node, const[0]))
        if op == "Mul":
            return ""  # Mul(u, c) / s == Mul(u, c / s) whatever u is
        rest = node.input[1 - const[0]]  # Add(t, c) / s == Add(t / s, c / s): t must be divided too
        reader = g.only_consumer(rest)
        if reader is not node:
            return f"the Add's other input cannot be divided: {reader}"
        return _absorb(g, rest, channels, absorbers, edits)
    if op in ("MatMul", "Gemm") and _weight_in(g, node) is not None:
        edits.append(_Edit(node, 1, columns=True))
        if op == "Gemm" and len(node.input) > 2 and node.input[2]:
            if g.input_const(node, 2) is None:
                return f"Gemm {node.name!r} bias {node.input[2]!r} is not a constant"
            edits.append(_Edit(node, 2))
        return ""
    return (
        f"{tensor!r} comes from {op} {node.name!r}, which cannot absorb a per-channel scale "
        "(an inserted Mul would itself be quantized first)"
    )


def _activation_maxima(
    model: onnx.ModelProto, tensors: list[str], feeds: Iterable[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """max |X_j| per last-axis channel of each tensor over all feeds: one pass, memory flat."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in tensors if t not in present)
    session = make_session(probe, level="basic", what="smooth_quant statistics model")
    inputs = [i.name for i in session.get_inputs()]
    maxima: dict[str, np.ndarray] = {}
    count = 0
    for feed in feeds:
        if not isinstance(feed, Mapping):
            feed = dict(zip(inputs, feed))  # a sample given as a list of arrays, in input order
        values = session.run(tensors, {k: np.asarray(v) for k, v in feed.items() if k in inputs})
        for name, value in zip(tensors, values):
            flat = np.abs(np.asarray(value, np.float64)).reshape(-1, value.shape[-1]).max(axis=0)
            maxima[name] = np.maximum(maxima[name], flat) if name in maxima else flat
        count += 1
    if not count:
        raise DatasetError("smooth_quant: feeds gave no sample; it needs the calibration samples to measure X")
    return maxima


def _apply(g: Graph, site: _Site, act: np.ndarray, alpha: float) -> dict[str, object]:
    weights = [_weight_in(g, n) for n in site.matmuls]
    w_max = np.max([np.abs(np.asarray(w, np.float64)).max(axis=1) for w in weights], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = act**alpha / w_max ** (1.0 - alpha)
    s = np.where(np.isfinite(s) & (act > 0) & (w_max > 0), np.maximum(s, MIN_SCALE), 1.0)
    for node in site.matmuls:
        w = np.asarray(g.input_const(node, 1), np.float64)
        trans_b = node.op_type == "Gemm" and bool(attr(node, "transB", 0))
        g.set_const(node, 1, w * (s[None, :] if trans_b else s[:, None]), f"{node.name}.weight")
    for edit in site.edits:
        value = np.asarray(g.input_const(edit.node, edit.index), np.float64)
        if edit.columns:
            trans_b = edit.node.op_type == "Gemm" and bool(attr(edit.node, "transB", 0))
            new = value / (s[:, None] if trans_b else s[None, :])
        else:
            new = value / s  # broadcast along the last axis; a scalar becomes per-channel
        g.set_const(edit.node, edit.index, new, f"{edit.node.name}.{'weight' if edit.columns else 'smooth'}")
    by = ", ".join(f"{n.op_type} {n.name!r}" for n in site.absorbers)
    reason = f"{act.size} channels of {site.tensor!r}, scales {s.min():.3g}..{s.max():.3g}, absorbed by {by}"
    return record(KIND, site.names, "applied", reason)
