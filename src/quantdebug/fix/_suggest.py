"""The culprits' suggestions as one config: the fewest top culprits whose own levers take most of the noise.

Each culprit's ``lever`` (its ``reason``'s change) is applied on the switchable graph as closely as
a switch can: per-channel weights leave the layer's weights unquantized (per-channel int8 keeps
them within a fraction of a step of float) and its output int8; int16, a clamp and percentile
calibration leave its output unquantized (the error they leave is far below int8's on the range
that matters) and its weights int8; float leaves both unquantized, as onnxruntime's quantizer
applies a denylist (a node read by a quantized node keeps an int8 output). A culprit whose lever,
applied alone, removes under half of what float removes gets the next lever up (``ESCALATION``:
per-channel weights, then also an int16 output, then float). The prefixes of the ranked list are
tried by galloping, then bisection: about 2 log2 L runs, plus 1 to 3 per culprit they reach; then
the free levers (``FREE_LEVERS``: int8 all the same) go to every other culprit that names one. What the config really
recovers is then the user's to measure (the README's step 3 does it on the demo model).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from quantdebug.config import QuantConfig

MOST_NOISE = 0.9  # a suggestion: the fewest top culprits whose change takes this share of the output noise
MIN_IMPACT = 0.01  # culprits below this share are never suggested
PER_CHANNEL_INT16 = "per_channel+int16"
# the next lever up where a culprit's own lever, applied alone, leaves most of its noise
ESCALATION = {"per_channel": PER_CHANNEL_INT16, PER_CHANNEL_INT16: "float", "int16": "float", "clamp": "float"}
ESCALATION["calibration"] = "float"
FREE_LEVERS = ("per_channel", "clamp", "calibration")  # still int8: they cost no float layer and no wider type
WEIGHT_LEVERS = ("float", "per_channel", PER_CHANNEL_INT16)  # levers that leave the weights unquantized
__all__ = [
    "ESCALATION",
    "FREE_LEVERS",
    "MIN_IMPACT",
    "MOST_NOISE",
    "apply_suggestion",
    "config_call",
    "fewest",
    "lever_switches",
    "quantize_command",
    "suggestion_config",
]


def fewest(candidates: int, removes: Callable[[int], float]) -> tuple[int, float]:
    """The smallest count in 1..candidates with ``removes(count) >= MOST_NOISE`` (galloping, then
    bisection over a share that grows with the count), or the best count tried when none does."""
    measured: dict[int, float] = {}

    def share(count: int) -> float:
        if count not in measured:
            measured[count] = removes(count)
        return measured[count]

    lo, count = 0, 1
    while True:
        count = min(count, candidates)
        if share(count) >= MOST_NOISE or count == candidates:
            break
        lo, count = count, 2 * count
    if share(count) >= MOST_NOISE:
        hi = count
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if share(mid) >= MOST_NOISE:
                hi = mid
            else:
                lo = mid
        count = hi
    else:
        best = max(measured.values())
        count = min(c for c, v in measured.items() if v == best)
    return count, measured[count]


def lever_switches(
    switches: Any, chosen: Sequence[int], levers: Sequence[str], readers: Sequence[set[str]]
) -> tuple[list[int], list[int]]:
    """The activation and weight switches left on when each chosen switch's lever is applied."""
    denied = {switches.nodes[k] for k in chosen if levers[k] == "float"}
    weights_off = {switches.nodes[k] for k in chosen if levers[k] in WEIGHT_LEVERS}
    acts_off = {k for k in chosen if levers[k] not in ("float", "per_channel")}
    acts_off |= {k for k in chosen if levers[k] == "float" and readers[k] <= denied}
    off_w = set(switches.weight_switches_of(weights_off))
    act = [a for a in range(len(switches.nodes)) if a not in acts_off]
    return act, [j for j in range(len(switches.weights)) if j not in off_w]


def suggestion_config(
    rows: Sequence[Mapping[str, Any]], clamps: Mapping[str, tuple[str, float, float]]
) -> dict[str, Any]:
    """``QuantConfig`` keyword arguments (plain data) applying each row's lever; ``clamps``: tensor ->
    (tensor, low, high) for the sentinel rows."""
    per_channel: list[str] = []
    precision: list[list[str]] = []
    clamp_rules: list[list[Any]] = []
    overrides: list[list[str]] = []
    for row in rows:
        node, tensor, lever = str(row["node_name"]), str(row["tensor_name"]), row["lever"]
        if lever in ("per_channel", PER_CHANNEL_INT16):
            per_channel.append(node)
        if lever in ("int16", "float", PER_CHANNEL_INT16):
            precision.append([node, "float" if lever == "float" else "int16"])
        if lever == "clamp":
            _, lo, hi = clamps[tensor]
            clamp_rules.append([tensor, _short(lo), _short(hi)])  # as config_call prints them: code == config
        elif lever == "calibration":
            overrides.append([tensor, "percentile"])
    config: dict[str, Any] = {}
    for key, value in (
        ("per_channel_nodes", per_channel),
        ("node_precision", precision),
        ("tensor_clamps", clamp_rules),
        ("calibration_overrides", overrides),
    ):
        if value:
            config[key] = value
    return config


def _short(value: float) -> float:
    return float(f"{value:.6g}")


def config_call(config: Mapping[str, Any]) -> str:
    """The ``QuantConfig(...)`` call that builds ``config``, as Python source a user can paste."""

    def literal(value: Any) -> str:
        if isinstance(value, str):
            return json.dumps(value)  # double quotes, any quote in a name escaped
        if isinstance(value, float):
            return f"{value:.6g}"
        if isinstance(value, (list, tuple)):
            return "(" + ", ".join(literal(v) for v in value) + ")"
        return repr(value)

    parts = [f"{key}=[{', '.join(literal(v) for v in value)}]" for key, value in config.items()]
    return f"QuantConfig({', '.join(parts)})"


def apply_suggestion(base: QuantConfig, config: Mapping[str, Any]) -> QuantConfig:
    """``base`` (the config the culprits were measured under) with the suggestion's rules appended: its
    own rules stay first, and the suggestion's, later, win where both name a node."""
    extended: dict[str, Any] = {}
    for key, value in config.items():
        current = base.precision_rules if key == "node_precision" else getattr(base, key)
        extended[key] = tuple(current) + tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return base.replace(**extended)


def quantize_command(config_path: str, model: str = "MODEL.onnx", data: str = "DATA") -> list[str]:
    """The ``quantdebug quantize`` command that applies a config saved as JSON, as shell-quoted pieces (one
    per line when printed, joined by backslash-newlines, so that no path is cut)."""
    return [
        f"quantdebug quantize {shlex.quote(model)}",
        f"--data {shlex.quote(data)}",
        f"--config {shlex.quote(config_path)}",
        "-o model_suggested.onnx",
    ]
