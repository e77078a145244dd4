"""Frozen, validated options: how to quantize (QuantConfig) and how to debug (DebugOptions).

Both round-trip through plain dicts (JSON) so that a run can be recorded and reproduced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np

from quantdebug.errors import ConfigError

CONFIG_VERSION = 1

ActivationType = Literal["int8", "uint8", "int16", "uint16"]
WeightType = Literal["int8", "uint8", "int16"]
Precision = Literal["int8", "uint8", "int16", "uint16", "float"]
CalibrationMethodName = Literal["minmax", "percentile", "entropy"]
VerifyMode = Literal["per_layer", "whole_model"]
WeightRounding = Literal["nearest", "adaround"]
AdaroundTarget = Literal["float", "layer"]

ACTIVATION_TYPES = ("int8", "uint8", "int16", "uint16")
WEIGHT_TYPES = ("int8", "uint8", "int16")
PRECISIONS = ("int8", "uint8", "int16", "uint16", "float")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
VERIFY_MODES = ("per_layer", "whole_model")
WEIGHT_ROUNDINGS = ("nearest", "adaround")
ADAROUND_TARGETS = ("float", "layer")
OPT_LEVELS = ("all", "extended", "basic", "disabled")

LayerMetric = Callable[[np.ndarray], float]
DirectCompareMetric = Callable[[np.ndarray, np.ndarray, float, int], float]
ModelMetric = Callable[[list[np.ndarray], list[np.ndarray]], float]


def _choice(field: str, value: object, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{field}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}")


def _str_tuple(field: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raise ConfigError(f"{field} must be a list of strings, not the single string {value!r}; write [{value!r}]")
    if not isinstance(value, Iterable):
        raise ConfigError(f"{field} must be a list of strings; got {type(value).__name__}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{field} must hold non-empty strings; got {item!r}")
    return tuple(str(i) for i in items)


def _rules(value: object) -> tuple[tuple[str, str], ...]:
    """node_precision as an ordered tuple of (selector, precision) rules; later rules win."""
    if value is None:
        return ()
    pairs: Iterable[Any] = value.items() if isinstance(value, Mapping) else value  # type: ignore[assignment]
    rules: list[tuple[str, str]] = []
    for pair in pairs:
        try:
            selector, precision = pair
        except (TypeError, ValueError):
            raise ConfigError(f"node_precision entries must be (name, precision) pairs; got {pair!r}") from None
        if not isinstance(selector, str) or not selector:
            raise ConfigError(f"node_precision selector must be a non-empty string; got {selector!r}")
        _choice(f"node_precision[{selector!r}]", precision, PRECISIONS)
        rules.append((selector, str(precision)))
    return tuple(rules)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantConfig:
    """How a float model is quantized.

    The defaults are a static, full-integer QDQ model: int8 activations and int8 weights,
    per-tensor, MinMax calibration, onnxruntime's own list of quantizable op types.

    ``node_precision`` is an ordered list of rules ``(selector, precision)`` where a selector
    is a node name, an output-tensor name, an op type or a ``re:`` regular expression over
    node names, and precision is ``"int8"``, ``"int16"``, ``"float"`` (or the unsigned types).
    Later rules override earlier ones; the debugger's denylists are appended after them as
    ``"float"`` rules, so a denylist always wins.

    The weight levers, each off by default: ``weight_rounding="adaround"`` learns each
    quantized weight's rounding, ``bias_correction`` removes the mean output error per channel,
    ``equalize`` folds BatchNormalization and equalizes consecutive layers' weight ranges,
    ``smooth_quant=alpha`` migrates activation outliers into MatMul/Gemm weights. Each has a
    node list (``adaround_nodes``, ...; selectors as in ``node_precision``). The rule: a global
    flag alone applies to every node it fits; a non-empty node list restricts the technique to
    those nodes and turns it on by itself (``smooth_quant_nodes`` still needs the alpha). All but
    ``equalize`` need the calibration samples at quantize time (``qd.quantize(..., dataset=...)``).
    Adaptive rounding and bias correction are fitted with the ``node_precision`` 16-bit nodes at
    8 bits (those nodes keep 8-bit weights, TFLite's 16x8), so configs that differ only in which
    nodes run at 16 bits share one fit (fix's precision search re-quantizes without refitting);
    nodes left in float are part of the fit.
    """

    activation_type: ActivationType = "int8"
    weight_type: WeightType = "int8"
    per_channel: bool = False
    reduce_range: bool = False
    symmetric_activations: bool = False
    symmetric_weights: bool | None = None
    calibration_method: CalibrationMethodName = "minmax"
    percentile: float = 99.999
    op_types_to_quantize: Sequence[str] | None = None
    node_precision: Sequence[tuple[str, str]] | Mapping[str, str] = ()
    per_channel_nodes: Sequence[str] = ()
    calibration_overrides: Sequence[tuple[str, str]] | Mapping[str, str] = ()
    tensor_clamps: Sequence[tuple[str, float, float]] = ()
    extra_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    weight_rounding: WeightRounding = "nearest"
    adaround_nodes: Sequence[str] = ()
    adaround_iterations: int = 0  # Adam steps after the error-feedback rounding; 0: that rounding alone
    adaround_samples: int | None = None  # None: every sample the calibration was made from
    adaround_seed: int = 0
    # each pass refits on the inputs the previous pass's layers give (exact to depth k); on
    # EfficientNet-Lite0 a second pass took top-1 agreement from 0.78 to 0.87 for twice the time
    adaround_passes: int = 2
    # "float": one sequential sweep, each layer fitted to the float model's layer output on the
    # inputs the already-rounded layers give it (adaround_passes unused); "layer": each layer to
    # its own float weights on its quantized inputs, refitted adaround_passes times
    adaround_target: AdaroundTarget = "float"
    bias_correction: bool = False
    bias_correction_nodes: Sequence[str] = ()
    equalize: bool = False
    equalize_nodes: Sequence[str] = ()
    smooth_quant: float | None = None
    smooth_quant_nodes: Sequence[str] = ()
    version: ClassVar[int] = CONFIG_VERSION

    def __post_init__(self) -> None:
        _choice("activation_type", self.activation_type, ACTIVATION_TYPES)
        self._check_weight_levers()
        _choice("weight_type", self.weight_type, WEIGHT_TYPES)
        _choice("calibration_method", self.calibration_method, CALIBRATION_METHODS)
        for flag in ("per_channel", "reduce_range", "symmetric_activations"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} must be True or False; got {getattr(self, flag)!r}")
        if self.symmetric_weights is not None and not isinstance(self.symmetric_weights, bool):
            raise ConfigError(f"symmetric_weights must be True, False or None; got {self.symmetric_weights!r}")
        if not 50.0 < float(self.percentile) <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100]; got {self.percentile!r}")
        if self.op_types_to_quantize is not None:
            object.__setattr__(
                self, "op_types_to_quantize", _str_tuple("op_types_to_quantize", self.op_types_to_quantize)
            )
        object.__setattr__(self, "node_precision", _rules(self.node_precision))
        object.__setattr__(self, "per_channel_nodes", _str_tuple("per_channel_nodes", self.per_channel_nodes))
        overrides = self.calibration_overrides
        pairs = overrides.items() if isinstance(overrides, Mapping) else overrides
        checked: list[tuple[str, str]] = []
        for tensor, method in pairs:
            _choice(f"calibration_overrides[{tensor!r}]", method, CALIBRATION_METHODS)
            checked.append((str(tensor), str(method)))
        object.__setattr__(self, "calibration_overrides", tuple(checked))
        clamps: list[tuple[str, float, float]] = []
        for entry in self.tensor_clamps:
            try:
                tensor, lo, hi = entry
                lo_f, hi_f = float(lo), float(hi)
            except (TypeError, ValueError):
                raise ConfigError(f"tensor_clamps entries must be (tensor, low, high); got {entry!r}") from None
            if not (np.isfinite(lo_f) and np.isfinite(hi_f) and lo_f < hi_f):
                raise ConfigError(f"tensor_clamps[{tensor!r}] needs finite low < high; got ({lo!r}, {hi!r})")
            clamps.append((str(tensor), lo_f, hi_f))
        object.__setattr__(self, "tensor_clamps", tuple(clamps))
        object.__setattr__(self, "extra_options", dict(self.extra_options))

    def _check_weight_levers(self) -> None:
        _choice("weight_rounding", self.weight_rounding, WEIGHT_ROUNDINGS)
        _choice("adaround_target", self.adaround_target, ADAROUND_TARGETS)
        for flag in ("bias_correction", "equalize"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} must be True or False; got {getattr(self, flag)!r}")
        for name, low in (("adaround_iterations", 0), ("adaround_seed", 0), ("adaround_passes", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}; got {value!r}")
        samples = self.adaround_samples
        if samples is not None and (not isinstance(samples, int) or isinstance(samples, bool) or samples < 1):
            raise ConfigError(f"adaround_samples must be None (all) or a positive integer; got {samples!r}")
        alpha = self.smooth_quant
        if alpha is not None:
            if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
                raise ConfigError(
                    f"smooth_quant must be None (off) or a migration strength alpha in (0, 1); got {alpha!r}"
                )
            object.__setattr__(self, "smooth_quant", float(alpha))
        for field in ("adaround_nodes", "bias_correction_nodes", "equalize_nodes", "smooth_quant_nodes"):
            object.__setattr__(self, field, _str_tuple(field, getattr(self, field)))
        if self.smooth_quant_nodes and self.smooth_quant is None:
            raise ConfigError(
                "smooth_quant_nodes needs the migration strength too: set smooth_quant=0.5 (alpha in (0, 1))"
            )

    @property
    def adaround_on(self) -> bool:
        """Whether adaptive rounding runs (globally or on the nodes named)."""
        return self.weight_rounding == "adaround" or bool(self.adaround_nodes)

    @property
    def bias_correction_on(self) -> bool:
        return self.bias_correction or bool(self.bias_correction_nodes)

    @property
    def equalize_on(self) -> bool:
        return self.equalize or bool(self.equalize_nodes)

    @property
    def smooth_quant_on(self) -> bool:
        return self.smooth_quant is not None

    @property
    def changes_weights(self) -> bool:
        """Whether any weight lever is on: the QDQ model's weights then differ from plain rounding."""
        return self.adaround_on or self.bias_correction_on or self.equalize_on or self.smooth_quant_on

    @property
    def needs_samples(self) -> bool:
        """Whether quantizing needs the calibration samples: every weight lever does (a transformed
        float model is re-calibrated on them; adaround and bias correction fit to them)."""
        return self.changes_weights

    @property
    def precision_rules(self) -> tuple[tuple[str, str], ...]:
        """``node_precision`` as validated (selector, precision) pairs, in order."""
        return self.node_precision  # type: ignore[return-value]  # normalised in __post_init__

    def replace(self, **changes: Any) -> QuantConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": CONFIG_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantConfig:
        data = _checked_fields(cls, data)
        for key in ("node_precision", "calibration_overrides", "tensor_clamps"):
            if key in data:
                data[key] = tuple(tuple(v) for v in data[key])
        for key in ("op_types_to_quantize", "adaround_nodes", "bias_correction_nodes", "equalize_nodes"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        if data.get("smooth_quant_nodes") is not None:  # the fourth node list; one line shorter than a wrapped tuple
            data["smooth_quant_nodes"] = tuple(data["smooth_quant_nodes"])
        return cls(**data)


def _checked_fields(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` without its version, once the version is this one and every field is one of ``cls``'s."""
    data = dict(data)
    version = data.pop("version", CONFIG_VERSION)
    if version != CONFIG_VERSION:
        raise ConfigError(f"{cls.__name__} version {version} is not supported (this quantdebug reads {CONFIG_VERSION})")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} fields {unknown}; valid fields: {sorted(known)}")
    return data


def _metric_dict(field: str, value: object) -> dict[str, Callable[..., float]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{field} must be a dict {{name: function}}; got {type(value).__name__}")
    for name, fn in value.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{field} names must be non-empty strings; got {name!r}")
        if not callable(fn):
            raise ConfigError(f"{field}[{name!r}] must be callable; got {type(fn).__name__}")
    return dict(value)


DEFAULT_METRICS = ("num_elements", "stddev", "mean_error", "max_abs_error", "mean_squared_error")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DebugOptions:
    """How the debugger runs: denylists, verify mode, custom metrics and runtime settings."""

    denylisted_nodes: Sequence[str] = ()
    denylisted_ops: Sequence[str] = ()
    verify_mode: VerifyMode = "per_layer"
    layer_debug_metrics: Mapping[str, LayerMetric] = dataclasses.field(default_factory=dict)
    layer_direct_compare_metrics: Mapping[str, DirectCompareMetric] = dataclasses.field(default_factory=dict)
    model_debug_metrics: Mapping[str, ModelMetric] = dataclasses.field(default_factory=dict)
    batch_size: int = 4  # samples stacked per debug run: 16 cost 2.4x the memory for no speed (RESULTS.md, R3)
    intra_op_num_threads: int | None = None
    graph_optimization_level: str = "all"
    progress: bool | None = None
    check_fidelity: bool = True
    impact: bool = False  # after run(), measure each layer's share of the output noise (debugger.culprits())
    version: ClassVar[int] = CONFIG_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "denylisted_nodes", _str_tuple("denylisted_nodes", self.denylisted_nodes))
        object.__setattr__(self, "denylisted_ops", _str_tuple("denylisted_ops", self.denylisted_ops))
        mode = str(self.verify_mode).replace("-", "_")
        _choice("verify_mode", mode, VERIFY_MODES)
        object.__setattr__(self, "verify_mode", mode)
        seen: dict[str, str] = {name: "the default metrics" for name in DEFAULT_METRICS}
        for field in ("layer_debug_metrics", "layer_direct_compare_metrics", "model_debug_metrics"):
            metrics = _metric_dict(field, getattr(self, field))
            for name in metrics:
                if name in seen:
                    raise ConfigError(
                        f"metric name {name!r} is used in both {seen[name]} and {field}; names must be unique"
                    )
                seen[name] = field
            object.__setattr__(self, field, metrics)
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer; got {self.batch_size!r}")
        if self.intra_op_num_threads is not None and (
            not isinstance(self.intra_op_num_threads, int) or self.intra_op_num_threads < 0
        ):
            raise ConfigError(
                f"intra_op_num_threads must be None or an integer >= 0; got {self.intra_op_num_threads!r}"
            )
        _choice("graph_optimization_level", self.graph_optimization_level, OPT_LEVELS)
        if not isinstance(self.impact, bool):
            raise ConfigError(f"impact must be True or False; got {self.impact!r}")

    @property
    def has_raw_tensor_metrics(self) -> bool:
        return bool(self.layer_debug_metrics or self.layer_direct_compare_metrics)

    def replace(self, **changes: Any) -> DebugOptions:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON form; custom metric functions are recorded by name only."""
        out: dict[str, Any] = {"version": CONFIG_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_metrics"):
                value = list(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DebugOptions:
        data = dict(data)
        for key in ("layer_debug_metrics", "layer_direct_compare_metrics", "model_debug_metrics"):
            names = data.pop(key, [])
            if names:
                raise ConfigError(f"{key} {list(names)} are functions and cannot be loaded from JSON; pass them again")
        return cls(**_checked_fields(cls, data))
