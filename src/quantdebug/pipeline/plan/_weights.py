"""The weight levers around onnxruntime's quantizer, as one pipeline stage.

(a) float-model transforms when asked: fold BatchNormalization, then cross-layer equalization,
then SmoothQuant; a transformed float model has other activation ranges, so it is re-calibrated
on the same samples; (b) onnxruntime's quantizer as always; (c) adaptive rounding and bias
correction on the QDQ model it wrote. What was changed is recorded in the QDQ model's metadata
(``quantdebug.weight_changes``, a JSON list of records) so the report and ``fix`` can name it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from quantdebug.config import QuantConfig
from quantdebug.errors import ConfigError
from quantdebug.pipeline.plan import _adaround
from quantdebug.pipeline.plan._segments import Segments

METADATA_KEY = "quantdebug.weight_changes"
Feeds = Iterable[Mapping[str, np.ndarray]]
# per layer: (the statistics it was fitted on, learned integers or None, corrected float bias or None)
Fitted = dict[str, tuple[tuple[bytes, ...], np.ndarray | None, np.ndarray | None]]
Progress = Callable[[int], None]


def missing_data_error(config: QuantConfig) -> ConfigError:
    on = [
        name
        for name, flag in (
            ("weight_rounding='adaround'", config.adaround_on),
            ("bias_correction", config.bias_correction_on),
            ("equalize", config.equalize_on),
            ("smooth_quant", config.smooth_quant_on),
        )
        if flag
    ]
    return ConfigError(
        f"{', '.join(on)} need the calibration samples at quantize time, and this calibration has none "
        "(a Calibration loaded from a file keeps no data); pass them: qd.quantize(model, calibration, config, "
        "dataset=representative_dataset) or Calibration.load(path, dataset=representative_dataset)"
    )


def limited(dataset: Feeds, config: QuantConfig) -> Feeds:
    """The samples the weight levers fit to: all of ``dataset``, or its first ``adaround_samples``."""
    if config.adaround_samples is None:
        return dataset
    n = config.adaround_samples
    return _Take(dataset, n)


class _Take:
    """The first ``n`` samples of a re-iterable dataset, itself re-iterable (it is read per pass)."""

    def __init__(self, dataset: Feeds, n: int) -> None:
        self.dataset, self.n = dataset, n

    def __iter__(self) -> Any:
        return itertools.islice(iter(self.dataset), self.n)


@dataclasses.dataclass(frozen=True)
class WeightFit:
    """What adaptive rounding and bias correction learned, in a form every QDQ model of the same
    layers takes: the learned integers with the weight scale they are on, and each corrected bias
    in float (a 16-bit input changes a bias's int32 scale, not the bias).

    ``records`` name what was changed (``weight_changes``); ``apply_fit`` writes it into a model.
    """

    records: list[dict[str, Any]]
    integers: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # node -> (canonical q, scale, zero point)
    biases: dict[str, np.ndarray]  # node -> corrected float bias (out,)


def fit_weights(
    qdq: onnx.ModelProto,
    float_model: onnx.ModelProto,
    config: QuantConfig,
    feeds: Feeds,
    nodes: Callable[[Sequence[str]], list[str]],
    *,
    progress: Callable[[int], None] = lambda n: None,
) -> WeightFit:
    """Fit adaptive rounding and bias correction of ``qdq``'s layers against ``float_model`` on ``feeds``;
    ``apply_fit`` writes the result into a QDQ model (scales and zero points stay as onnxruntime chose them)."""
    targets, skipped, levers = _plan(qdq, float_model, config, nodes)
    if not targets:
        return WeightFit(_records(levers, targets, skipped, {}, {}), {}, {})
    if config.adaround_target == "float":
        fitted = _sequential(qdq, float_model, targets, levers, feeds, progress)
    else:
        fitted = _passes(qdq, targets, levers, feeds, progress)
    integers = {t.node: (q, t.scale, t.zero_point) for t in targets if (q := fitted[t.node][1]) is not None}
    biases = {t.node: b for t in targets if (b := fitted[t.node][2]) is not None}
    return WeightFit(_records(levers, targets, skipped, integers, biases), integers, biases)


def fit_scope(
    qdq: onnx.ModelProto,
    float_model: onnx.ModelProto,
    config: QuantConfig,
    nodes: Callable[[Sequence[str]], list[str]],
) -> tuple[frozenset[str], frozenset[str]]:
    """The layers a fit of ``config`` rounds on ``qdq``, and those whose bias it corrects.

    Two configs of the same scope (and the same numeric adaround options) fit the same integers and
    biases: bias correction asked of a model whose layers have no bias to correct (a transformer's
    MatMuls) changes nothing, and fix fitted every such candidate again (a whole sweep each).
    """
    targets, _, levers = _plan(qdq, float_model, config, nodes)
    return (
        frozenset(t.node for t in targets if levers.rounds(t)),
        frozenset(t.node for t in targets if levers.corrects(t) and _adaround.has_bias(t)),
    )


def fit_records(
    qdq: onnx.ModelProto,
    float_model: onnx.ModelProto,
    config: QuantConfig,
    fit: WeightFit,
    nodes: Callable[[Sequence[str]], list[str]],
) -> WeightFit:
    """``fit``, made for a config of the same ``fit_scope``, with the records ``config`` itself gives."""
    targets, skipped, levers = _plan(qdq, float_model, config, nodes)
    return dataclasses.replace(fit, records=_records(levers, targets, skipped, fit.integers, fit.biases))


def _plan(
    qdq: onnx.ModelProto,
    float_model: onnx.ModelProto,
    config: QuantConfig,
    nodes: Callable[[Sequence[str]], list[str]],
) -> tuple[list[_adaround.Target], list[tuple[str, str]], _Levers]:
    """The layers to fit, those skipped (and why), and what to fit of each."""
    rounded = _selected(config.adaround_on, config.adaround_nodes, nodes)
    corrected = _selected(config.bias_correction_on, config.bias_correction_nodes, nodes)
    wanted = None if rounded is None or corrected is None else rounded | corrected
    targets, skipped = _adaround.find_targets(qdq, float_model, wanted)
    return targets, skipped, _Levers(config=config, rounded=rounded, corrected=corrected)


def _records(
    levers: _Levers,
    targets: Sequence[_adaround.Target],
    skipped: list[tuple[str, str]],
    integers: Mapping[str, Any],
    biases: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """What a fit changed and what it left alone (``weight_changes``)."""
    if not targets:
        return [_record("adaround", [], "skipped", "no layer with a quantized constant weight", skipped)]
    records: list[dict[str, Any]] = []
    done_round = [t.node for t in targets if t.node in integers]
    done_bias = [t.node for t in targets if t.node in biases]
    no_bias = [(t.node, "no quantized bias to correct") for t in targets if levers.corrects(t) and t.bias_init is None]
    if levers.config.adaround_on:
        records.append(_record("adaround", done_round, "applied" if done_round else "skipped", "", skipped))
    if levers.config.bias_correction_on:
        records.append(
            _record("bias_correction", done_bias, "applied" if done_bias else "skipped", "", skipped + no_bias)
        )
    return records


def apply_fit(
    qdq: onnx.ModelProto, float_model: onnx.ModelProto, fit: WeightFit
) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
    """A copy of ``qdq`` with ``fit``'s integers and biases written in, and the records of what was.

    Learned integers go only where ``qdq`` quantizes the weight on the scale they were learned on;
    a layer whose weight scale differs (or that ``qdq`` leaves in float) keeps what it has, and
    the records say so.
    """
    names = set(fit.integers) | set(fit.biases)
    targets, _ = _adaround.find_targets(qdq, float_model, names)
    found = {t.node: t for t in targets}
    updates: dict[str, np.ndarray] = {}
    moved: dict[str, str] = {}
    for node in sorted(names):
        t = found.get(node)
        if t is None:
            moved[node] = "this model does not quantize its weight and input"
            continue
        learned = fit.integers.get(node)
        q = None
        if learned is not None:
            q, scale, zero_point = learned
            same_grid = np.array_equal(scale, t.scale) and np.array_equal(zero_point, t.zero_point)
            if q.shape != t.q.shape or not same_grid:
                moved[node] = "its weight scale differs from the one its rounding was fitted on"
                continue
        bias = fit.biases.get(node) if t.bias_init is not None else None
        updates.update(_updates(t, q, bias))
    out = onnx.ModelProto()
    out.CopyFrom(qdq)
    _adaround.write(out, updates)
    if not moved:
        return out, [dict(r) for r in fit.records]
    records = []
    for r in fit.records:
        r = dict(r)
        gone = [n for n in r["nodes"] if n in moved]
        if gone:
            r["nodes"] = [n for n in r["nodes"] if n not in moved]
            r["skipped"] = [*r.get("skipped", []), *({"node": n, "reason": moved[n]} for n in gone)]
        records.append(r)
    return out, records


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Levers:
    """What to fit: the config and the nodes to round / to correct (None: every target)."""

    config: QuantConfig
    rounded: set[str] | None
    corrected: set[str] | None

    def rounds(self, t: _adaround.Target) -> bool:
        return self.config.adaround_on and (self.rounded is None or t.node in self.rounded)

    def corrects(self, t: _adaround.Target) -> bool:
        return self.config.bias_correction_on and (self.corrected is None or t.node in self.corrected)

    def fit(self, t: _adaround.Target) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(learned integers or None where nearest stays, corrected float bias or None) of one layer."""
        q, learned = t.q, None
        if self.rounds(t):
            aim = _adaround.float_aim(t) if t.C is not None else None
            q = _adaround.adaround(t, self.config.adaround_iterations, self.config.adaround_seed, aim=aim)
            # keep nearest rounding where the learned one does not reconstruct better (the objective
            # is exact on these samples, so "no worse than nearest" then holds layer by layer)
            error = _adaround.reconstruction_error
            if error(t, t.dequantized(q)) <= error(t, t.dequantized()):
                learned = q
            else:
                q = t.q
        bias = _adaround.corrected_bias(t, q) if self.corrects(t) else None
        return learned, bias


def _passes(
    qdq: onnx.ModelProto, targets: Sequence[_adaround.Target], levers: _Levers, feeds: Feeds, progress: Progress
) -> Fitted:
    """The layer target: every layer fitted at once on one streaming pass, ``adaround_passes`` times."""
    out = qdq
    fitted: Fitted = {}
    for _ in range(levers.config.adaround_passes):
        # each pass sees the inputs the previous one's layers give: after k passes every layer at
        # depth <= k is fitted to exactly the inputs it gets in the result
        _adaround.gather(out, targets, feeds, progress=progress)
        updates: dict[str, np.ndarray] = {}
        for t in targets:
            key = _adaround.stats_key(t)
            if t.node not in fitted or fitted[t.node][0] != key:
                fitted[t.node] = (key, *levers.fit(t))
            updates.update(_updates(t, *fitted[t.node][1:]))
        out = onnx.ModelProto()
        out.CopyFrom(qdq)
        _adaround.write(out, updates)
    return fitted


def _sequential(
    qdq: onnx.ModelProto,
    float_model: onnx.ModelProto,
    targets: Sequence[_adaround.Target],
    levers: _Levers,
    feeds: Feeds,
    progress: Progress,
) -> Fitted:
    """The float target: layer by layer in graph order, each fitted on the inputs the already
    changed layers before it give, toward the float model's layer output on the float inputs.

    Both models run segment by segment (``Segments``): the whole sweep costs about one pass of
    each over the samples, however many layers there are.
    """
    samples = list(feeds)
    quantized, floats = Segments(qdq, samples), Segments(float_model, samples)
    float_x = {n.name: n.input[0] for n in float_model.graph.node}
    order = {n.name: k for k, n in enumerate(qdq.graph.node)}
    fitted: Fitted = {}
    # The moments of the last layer, kept for the next one while it reads the same input the same
    # way (attention's query, key and value projections): that input lies upstream of every layer
    # fitted since, so its moments are the same numbers, and gathering them again cost a third of
    # a transformer's sweep
    shared: tuple[tuple[Any, ...], tuple[Any, ...]] | None = None  # (key, the moments)
    for t in sorted(targets, key=lambda t: order[t.node]):
        cross = levers.rounds(t)
        key = _moments_key(t, float_x[t.node], cross)
        if shared is not None and shared[0] == key:
            t.G, t.sum_x, t.sum_f, t.C, t.count, t.factor = shared[1]
        else:
            shared = None  # the sweep holds one input's moments at a time
            t.G = t.sum_x = t.sum_f = t.C = t.factor = None
            t.count = 0
            for xq, xf in zip(quantized.get(t.x_name), floats.get(float_x[t.node])):
                patches = _adaround.accumulate(t, xq)
                _adaround.accumulate_float(t, xq, xf, cross=cross, xq_patches=patches)
        fitted[t.node] = ((), *levers.fit(t))  # a sweep fits each layer once: no key to compare
        mine = _updates(t, *fitted[t.node][1:])
        for name, value in mine.items():
            quantized.set_initializer(name, value)
        shared = (key, (t.G, t.sum_x, t.sum_f, t.C, t.count, t.factor))
        t.G = t.C = t.factor = None
        progress(1)
    return fitted


def _moments_key(t: _adaround.Target, float_input: str, cross: bool) -> tuple[Any, ...]:
    """Equal for two layers whose sweep moments are the same numbers: the same inputs, read the same way."""
    return (t.x_name, float_input, t.op_type, repr(t.conv), t.weight.shape[0], t.weight.shape[2], cross)


def _updates(t: _adaround.Target, q: np.ndarray | None, bias: np.ndarray | None) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if q is not None:
        out[t.q_init] = t.q_layout(q)
    if bias is not None:
        assert t.bias_init is not None
        out[t.bias_init] = _adaround.bias_initializer(t, bias)
    return out


def _selected(on: bool, selectors: Sequence[str], nodes: Callable[[Sequence[str]], list[str]]) -> set[str] | None:
    """None: every node; else the nodes named (the empty set when the technique is off)."""
    if not on:
        return set()
    return set(nodes(selectors)) if selectors else None


def _record(kind: str, nodes: list[str], status: str, reason: str, skipped: list[tuple[str, str]]) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": kind, "nodes": nodes, "status": status, "reason": reason}
    if skipped:
        record["skipped"] = [{"node": n, "reason": r} for n, r in skipped]
    return record


def stamp(model: onnx.ModelProto, records: list[dict[str, Any]]) -> None:
    """Record the weight changes in ``model``'s metadata (replacing an earlier record)."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    if records:
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(records, sort_keys=True)


def weight_changes(model: onnx.ModelProto) -> list[dict[str, Any]]:
    """The records ``stamp`` wrote into ``model`` (empty for a model no weight lever touched)."""
    for p in model.metadata_props:
        if p.key == METADATA_KEY:
            return list(json.loads(p.value))
    return []
