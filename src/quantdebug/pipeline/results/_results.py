"""Saved statistics: one JSON document that the CSV, the DataFrame, the report and `compare` read.

A statistics folder holds ``layer_statistics.csv`` (TensorFlow Lite's columns) and
``statistics.json`` (everything needed to re-render a report without re-running anything).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from quantdebug.config import DEFAULT_METRICS
from quantdebug.errors import QuantDebugError
from quantdebug.support import FORMULA_CHARS, read_json_object, write_text
from quantdebug.thresholds import SUSPECT_RMSE_OVER_SCALE

FORMAT = "quantdebug.statistics"
FORMAT_VERSION = 1
CSV_NAME = "layer_statistics.csv"
JSON_NAME = "statistics.json"


def csv_safe(text: str) -> str:
    """Guard names that a spreadsheet would run as a formula."""
    return "'" + text if text[:1] in FORMULA_CHARS else text


def rmse_over_scale(mse: float, scale: float) -> float:
    """A layer's root-mean-square error in quantization steps (NaN without a scale or an MSE)."""
    return math.sqrt(mse) / scale if scale > 0 and mse >= 0 else math.nan


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One verified quantized tensor and its statistics."""

    op_name: str
    tensor_idx: int
    tensor_name: str
    node_name: str
    scale: float
    zero_point: int
    precision: str
    qmin: int
    qmax: int
    covers: tuple[str, ...]
    metrics: dict[str, float]
    impact: float = math.nan  # share of the output noise (debugger.culprits()); NaN where not measured

    @property
    def rmse_over_scale(self) -> float:
        return rmse_over_scale(self.metrics.get("mean_squared_error", math.nan), self.scale)

    @property
    def range(self) -> float:
        return (self.qmax - self.qmin) * self.scale

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["covers"] = list(self.covers)
        d["metrics"] = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.metrics.items()}
        d["impact"] = None if math.isnan(self.impact) else self.impact
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerRow:
        data = dict(d)
        data["covers"] = tuple(data.get("covers", ()))
        data["metrics"] = {k: (math.nan if v is None else float(v)) for k, v in data["metrics"].items()}
        data["impact"] = math.nan if data.get("impact") is None else float(data["impact"])
        return cls(**data)


@dataclasses.dataclass
class Statistics:
    """The results of one debug run."""

    layers: list[LayerRow]
    metric_names: list[str]
    verify_mode: str = "per_layer"
    model_statistics: dict[str, float] = dataclasses.field(default_factory=dict)
    coverage: list[dict[str, str]] = dataclasses.field(default_factory=list)
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)  # histograms, fix trace, ...

    # -- tables -------------------------------------------------------------------------------
    def layer_statistics(self) -> dict[str, dict[str, float]]:
        return {r.tensor_name: dict(r.metrics) for r in self.layers}

    def dump_csv(self, file: IO[str]) -> None:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(
            ["op_name", "tensor_idx", *self.metric_names, "scale", "zero_point", "tensor_name", "node_name", "impact"]
        )
        for r in self.layers:
            writer.writerow(
                [csv_safe(r.op_name), r.tensor_idx]
                + [repr(float(r.metrics[m])) for m in self.metric_names]
                + [repr(r.scale), r.zero_point, csv_safe(r.tensor_name), csv_safe(r.node_name), repr(r.impact)]
            )

    def csv_text(self) -> str:
        buffer = io.StringIO()
        self.dump_csv(buffer)
        return buffer.getvalue()

    def frame(self) -> Any:
        """pandas DataFrame: the CSV columns (``impact`` NaN where not measured), then 'precision', 'range',
        'rmse/scale' and 'user_nodes' (the nodes of the user's model that each row covers, e.g. a Conv
        and the Relu fused into it)."""
        import pandas as pd  # start-up time: pandas loads only for a DataFrame

        columns = [
            *("op_name", "tensor_idx", *self.metric_names, "scale", "zero_point", "tensor_name", "node_name", "impact")
        ]
        records = []
        for r in self.layers:
            rec: dict[str, Any] = {"op_name": r.op_name, "tensor_idx": r.tensor_idx}
            rec.update({m: r.metrics[m] for m in self.metric_names})
            rec.update(scale=r.scale, zero_point=r.zero_point, tensor_name=r.tensor_name, node_name=r.node_name)
            rec["impact"] = r.impact
            rec.update({"precision": r.precision, "range": r.range, "rmse/scale": r.rmse_over_scale})
            rec["user_nodes"] = ", ".join(r.covers)
            records.append(rec)
        extra = ["precision", "range", "rmse/scale", "user_nodes"]
        return pd.DataFrame.from_records(records, columns=[*columns, *extra])

    def suspects(self, threshold: float = SUSPECT_RMSE_OVER_SCALE, first: int = 0) -> list[LayerRow]:
        """The tutorial's rule: rows with rmse/scale above ``threshold`` (plus the first ``first`` rows)."""
        picked = [r for r in self.layers if r.rmse_over_scale > threshold]
        for r in self.layers[:first]:
            if r not in picked:
                picked.append(r)
        return picked

    def _repr_html_(self) -> str:
        """Jupyter's view: the culprits when measured, then the worst layers by rmse/scale."""
        from quantdebug.report import statistics_html  # import cycle: the report package imports this one

        culprits = self.extras.get("culprits")
        return statistics_html(self.layers, self.verify_mode, culprits if isinstance(culprits, Mapping) else None)

    # -- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "verify_mode": self.verify_mode,
            "metric_names": list(self.metric_names),
            "layers": [r.to_dict() for r in self.layers],
            "model_statistics": dict(self.model_statistics),
            "coverage": list(self.coverage),
            "provenance": dict(self.provenance),
            "extras": dict(self.extras),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Statistics:
        if data.get("format") != FORMAT:
            raise QuantDebugError("this is not a quantdebug statistics file (statistics.json)")
        if data.get("version") != FORMAT_VERSION:
            raise QuantDebugError(
                f"statistics format version {data.get('version')} is not supported (expected {FORMAT_VERSION})"
            )
        return cls(
            layers=[LayerRow.from_dict(r) for r in data["layers"]],
            metric_names=list(data.get("metric_names", DEFAULT_METRICS)),
            verify_mode=str(data.get("verify_mode", "per_layer")),
            model_statistics=dict(data.get("model_statistics", {})),
            coverage=list(data.get("coverage", [])),
            provenance=dict(data.get("provenance", {})),
            extras=dict(data.get("extras", {})),
        )

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the CSV and the JSON into ``folder`` (created if needed), each atomically."""
        out = Path(folder)
        if out.exists() and not out.is_dir():
            raise QuantDebugError(f"statistics output {str(out)!r} exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        # render both first: a failure then leaves both old files; the JSON (what load reads) goes last
        csv_text = self.csv_text()
        json_text = json.dumps(self.to_dict(), indent=1, allow_nan=False, default=_json_default)
        write_text(out / CSV_NAME, csv_text)
        write_text(out / JSON_NAME, json_text)
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Statistics:
        path = Path(folder)
        if path.is_dir():
            path = path / JSON_NAME
        if not path.is_file():
            raise QuantDebugError(f"no statistics at {str(folder)!r} (expected a folder with {JSON_NAME})")
        return cls.from_dict(read_json_object(path, QuantDebugError, "statistics file"))


def _json_default(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()  # type: ignore[attr-defined]
    raise TypeError(f"cannot store {type(value).__name__} in statistics JSON")


def compare_statistics(
    a: Statistics, b: Statistics, metrics: Sequence[str] = ("mean_squared_error",)
) -> list[dict[str, Any]]:
    """Layer by layer: what changed between two runs (matched by tensor name)."""
    rows_b = {r.tensor_name: r for r in b.layers}
    rows_a = {r.tensor_name: r for r in a.layers}
    out: list[dict[str, Any]] = []
    for name in list(dict.fromkeys([*rows_a, *rows_b])):
        ra, rb = rows_a.get(name), rows_b.get(name)
        rec: dict[str, Any] = {"tensor_name": name, "node_name": (ra or rb).node_name, "status": "both"}  # type: ignore[union-attr]
        if ra is None:
            rec["status"] = "only in B"
        elif rb is None:
            rec["status"] = "only in A"
        rec["rmse/scale A"] = ra.rmse_over_scale if ra else math.nan
        rec["rmse/scale B"] = rb.rmse_over_scale if rb else math.nan
        rec["precision A"] = ra.precision if ra else ""
        rec["precision B"] = rb.precision if rb else ""
        for m in metrics:
            va = ra.metrics.get(m, math.nan) if ra else math.nan
            vb = rb.metrics.get(m, math.nan) if rb else math.nan
            rec[f"{m} A"], rec[f"{m} B"] = va, vb
        out.append(rec)
    return out
