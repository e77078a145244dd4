"""What a fix search returns: the named changes, the fixed model, the qualities and the whole trace."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import onnx

from quantdebug.config import QuantConfig
from quantdebug.errors import ConfigError, QuantDebugError
from quantdebug.pipeline.plan import weight_changes
from quantdebug.support import write_text
from quantdebug.support.external import as_proto, write_model

# how the summary names what each weight-lever record (``qd.weight_changes``) did to its nodes
WEIGHT_CHANGE_VERBS = {
    "fold_batchnorm": "BatchNormalization folded into",
    "equalize": "equalized",
    "smooth_quant": "SmoothQuant (activation range moved into the weights of)",
    "adaround": "adaptively rounded",
    "bias_correction": "bias-corrected",
}


def weight_change_lines(records: list[dict[str, Any]]) -> list[str]:
    """One line per kind of weight change: the nodes it changed, and how many it skipped."""
    applied: dict[str, list[str]] = {}
    skipped: dict[str, int] = {}
    for r in records:
        kind = str(r.get("kind", "?"))
        if r.get("status") == "applied":
            applied.setdefault(kind, []).extend(str(n) for n in r.get("nodes", ()))
        skipped[kind] = skipped.get(kind, 0) + len(r.get("skipped", ())) + (r.get("status") == "skipped")
    lines = []
    for kind in dict.fromkeys([*applied, *skipped]):
        nodes = list(dict.fromkeys(applied.get(kind, [])))
        verb = WEIGHT_CHANGE_VERBS.get(kind, kind)
        line = f"{verb}: {len(nodes)} nodes" + (f" ({', '.join(nodes)})" if nodes else "")
        if skipped.get(kind):
            line += f"; {skipped[kind]} skipped (qd.weight_changes(result.model) says why)"
        lines.append(line)
    return lines


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One point of the search space: named per-node and per-tensor changes on top of the base config."""

    precision: tuple[tuple[str, str], ...] = ()  # (node, "int16" | "float")
    per_channel: tuple[str, ...] = ()  # nodes whose weights go per-channel
    calibration: tuple[tuple[str, str], ...] = ()  # (tensor, method)
    clamps: tuple[tuple[str, float, float], ...] = ()  # (tensor, low, high)
    settings: tuple[
        tuple[str, Any], ...
    ] = ()  # (QuantConfig field, value): whole-model levers such as weight transforms

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON; ``settings`` only when set, so traces without it read and key as before it existed."""
        d = dataclasses.asdict(self)
        if not self.settings:
            del d["settings"]
        return d

    def key(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def non_int8(self) -> int:
        return len(self.precision)

    @property
    def float_nodes(self) -> tuple[str, ...]:
        return tuple(n for n, p in self.precision if p == "float")

    def merged(self, **changes: Any) -> Candidate:
        return dataclasses.replace(self, **changes)

    def config(self, base: QuantConfig) -> QuantConfig:
        """A QuantConfig that reproduces this candidate exactly."""
        return base.replace(
            **dict(self.settings),
            node_precision=tuple(base.precision_rules) + self.precision,
            per_channel_nodes=tuple(base.per_channel_nodes) + self.per_channel,
            calibration_overrides=tuple(base.calibration_overrides) + self.calibration,  # type: ignore[operator]
            tensor_clamps=tuple(base.tensor_clamps) + self.clamps,
        )

    def describe(self) -> list[str]:
        lines = [f"{node}: {p}" for node, p in self.precision]
        lines += [f"{node}: per-channel weights" for node in self.per_channel]
        lines += [f"{tensor}: {method} calibration" for tensor, method in self.calibration]
        lines += [f"{tensor}: clamp to [{lo:g}, {hi:g}]" for tensor, lo, hi in self.clamps]
        lines += [f"whole model: {field}={value!r}" for field, value in self.settings]
        return lines

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        return cls(
            precision=tuple(tuple(p) for p in d.get("precision", ())),  # type: ignore[misc]
            per_channel=tuple(d.get("per_channel", ())),
            calibration=tuple(tuple(c) for c in d.get("calibration", ())),  # type: ignore[misc]
            clamps=tuple((str(t), float(lo), float(hi)) for t, lo, hi in d.get("clamps", ())),
            settings=tuple((str(k), v) for k, v in d.get("settings", ())),
        )


@dataclasses.dataclass
class TraceEntry:
    step: str
    candidate: Candidate
    quality: float
    non_int8_nodes: int
    size: int
    meets_target: bool
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "candidate": self.candidate.to_dict(),
            "changes": self.candidate.describe(),
            "quality": self.quality,
            "non_int8_nodes": self.non_int8_nodes,
            "size": self.size,
            "meets_target": self.meets_target,
        }


class FixInterrupted(QuantDebugError):
    """The search was interrupted; ``trace`` holds every evaluation done so far (resume from it)."""

    def __init__(self, message: str, trace: list[TraceEntry]) -> None:
        super().__init__(message)
        self.trace = trace


@dataclasses.dataclass
class FixResult:
    """The outcome of ``qd.fix``: node precisions by name, the model, qualities, evaluations and trace."""

    candidate: Candidate
    quantized: onnx.ModelProto = dataclasses.field(repr=False)  # may keep weights in external data: see model
    config: QuantConfig
    float_quality: float
    int8_quality: float
    fixed_quality: float
    target: float
    higher_is_better: bool
    met_target: bool
    evaluations: int
    trace: list[TraceEntry]
    message: str
    quantized_nodes: int
    ort_settings: dict[str, Any]
    # the suspects in the order the search tried them, with the evidence behind each rank:
    # noise shares from the switchable graph, rmse/scale from both verify modes
    ranking: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # the pre-processed float model the fixed one was quantized from: what ort_settings names
    float_model: onnx.ModelProto | None = dataclasses.field(default=None, repr=False)
    # how many changes of the chosen candidate were left out because they do not change the model
    left_out: int = 0

    @property
    def model(self) -> onnx.ModelProto:
        """The fixed QDQ model; ``ModelTooLargeError`` for a model over 2 GB (use ``save_model``)."""
        return as_proto(self.quantized, "fixed model", "FixResult.save_model")

    @property
    def node_precision(self) -> dict[str, str]:
        return dict(self.candidate.precision)

    @property
    def int16_nodes(self) -> list[str]:
        return [n for n, p in self.candidate.precision if p == "int16"]

    @property
    def float_nodes(self) -> list[str]:
        return list(self.candidate.float_nodes)

    @property
    def changes(self) -> list[str]:
        return self.candidate.describe()

    @property
    def weight_changes(self) -> list[dict[str, Any]]:
        """What the weight levers kept did, node by node (``qd.weight_changes`` of the fixed model)."""
        return weight_changes(self.quantized)

    def _repr_html_(self) -> str:
        """Jupyter's view: the summary, then the first suspects with their noise shares."""
        from quantdebug.report import fix_result_html  # import cycle: the report package imports quantdebug.fix

        return fix_result_html(self.summary(), self.ranking)

    def summary(self) -> str:
        lines = [
            self.message,
            f"quality: float {self._q(self.float_quality)}, int8 {self._q(self.int8_quality)}, "
            f"fixed {self._q(self.fixed_quality)} (target {self.target:.4g}); {self.evaluations} evaluations",
            f"{self.candidate.non_int8} of {self.quantized_nodes} quantized nodes out of int8",
        ]
        lines += ["  " + c for c in self.changes]
        lines += ["  " + c for c in weight_change_lines(self.weight_changes)]
        if self.left_out:
            lines.append(f"({self.left_out} more changes tried with these were left out: they do not change the model)")
        return "\n".join(lines)

    def _q(self, quality: float) -> str:
        """A quality for the summary; the default SQNR's inf dB says what it means (outputs equal to float's)."""
        return "inf (identical to float)" if self.higher_is_better and quality == math.inf else f"{quality:.4g}"

    def trace_dict(self) -> dict[str, Any]:
        return {
            "float_quality": self.float_quality,
            "int8_quality": self.int8_quality,
            "fixed_quality": self.fixed_quality,
            "target": self.target,
            "evaluations": self.evaluations,
            "trace": [t.to_dict() for t in self.trace],
            "ranking": self.ranking,
            "weight_changes": self.weight_changes,
        }

    def save_model(self, path: str | os.PathLike[str]) -> None:
        """Write the fixed model atomically (weights in ``<file name>.data`` for a model over 2 GB)."""
        write_model(self.quantized, path)

    def save_onnxruntime_settings(self, path: str | os.PathLike[str]) -> None:
        """The fix as onnxruntime ``quantize_static`` settings, in plain JSON.

        Read them back with ``qd.onnxruntime_settings(path)``, which gives the keyword arguments
        (enums, numpy ranges) for ``quantize_static`` on the model ``save_float_model`` writes.
        A fix that kept a weight lever (adaround, bias correction, equalize, SmoothQuant) changed
        weights these settings cannot express: the file says so in its ``warning`` and a
        ``UserWarning`` is raised; save the fixed model (``save_model``) instead.
        """
        write_text(path, json.dumps(self.ort_settings, indent=1))
        if "warning" in self.ort_settings:
            warnings.warn(f"{path}: {self.ort_settings['warning']}", UserWarning, stacklevel=2)

    def save_float_model(self, path: str | os.PathLike[str]) -> None:
        """Write the pre-processed float model that ``ort_settings`` applies to (its node and tensor names);
        after a kept ``equalize`` or ``smooth_quant`` lever, the transformed one (same outputs, other weights)."""
        if self.float_model is None:
            raise ConfigError("this FixResult was made without its float model")
        write_model(self.float_model, path)

    def save_config(self, path: str | os.PathLike[str]) -> None:
        write_text(Path(path), json.dumps(self.config.to_dict(), indent=1))
