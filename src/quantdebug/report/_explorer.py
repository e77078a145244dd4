"""Per-node statistics as a node-data overlay for Google's Model Explorer.

The file follows Model Explorer's ``ModelNodeData`` JSON (``model_explorer/node_data_builder.py``
in google-ai-edge/model-explorer): a dict from graph id to ``GraphNodeData``::

    {"<graph id>": {"results": {"<node id>": {"value": 0.31}, ...},
                    "thresholds": [{"value": 0.45, "bgColor": "#..."}, ...]}}

A node whose value is ``<= thresholds[i].value`` (and above the previous one) gets that item's
colours; ``gradient`` (``[{"stop": 0..1, "bgColor": ...}]``, stop 0 = smallest value) is used
instead for metrics without a fixed scale. With the ONNX adapter (``model-explorer-onnx``) the
graph id is the ONNX graph's name (``onnx.load(path).graph.name``) and node ids are ONNX node
names; quantdebug writes one result per node of the *user's* model that a verified row covers.
Open the overlay with::

    pip install model-explorer-onnx
    model-explorer model.onnx --extensions=model_explorer_onnx --node_data_paths=rmse_over_scale.json

(``onnxvis model.onnx --node_data_paths=...`` is the adapter's shortcut for the same.)
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from quantdebug.errors import QuantDebugError
from quantdebug.pipeline.results import LayerRow, Statistics
from quantdebug.support import write_text
from quantdebug.thresholds import SEVERE_RMSE_OVER_SCALE, SEVERITY, SUSPECT_RMSE_OVER_SCALE, WATCH_RMSE_OVER_SCALE

DEFAULT_GRAPH_ID = "main_graph"  # the name torch.onnx gives a graph; pass graph_id for others
RATIO_METRIC = "rmse/scale"
IMPACT_METRIC = "impact"  # a layer's share of the output noise, after debugger.culprits() or DebugOptions(impact=True)
DERIVED_METRICS = (RATIO_METRIC, IMPACT_METRIC, "range", "scale")
_IMPACT_THRESHOLDS = [  # shares of the output noise: negligible, noticeable, large, most of it
    (0.01, "#e8f5e9", "#000000"),
    (0.1, "#ffe082", "#000000"),
    (0.5, "#ef6c00", "#ffffff"),
    (sys.float_info.max, "#b71c1c", "#ffffff"),
]
_GRADIENT = [  # low values green, high values red
    {"stop": 0, "bgColor": "#e8f5e9"},
    {"stop": 0.5, "bgColor": "#ffe082"},
    {"stop": 1, "bgColor": "#e57373"},
]


def metric_value(row: LayerRow, metric: str) -> float:
    """``rmse/scale``, ``range``, ``scale`` or any metric saved in the row."""
    if metric == RATIO_METRIC:
        return row.rmse_over_scale
    if metric == IMPACT_METRIC:
        return row.impact
    if metric == "range":
        return row.range
    if metric == "scale":
        return row.scale
    if metric in row.metrics:
        return float(row.metrics[metric])
    raise QuantDebugError(
        f"unknown metric {metric!r}; choose one of {', '.join(map(repr, DERIVED_METRICS))} or a saved metric"
    )


def explorer_node_data(
    statistics: Statistics, metric: str = RATIO_METRIC, *, graph_id: str | None = None
) -> dict[str, Any]:
    """Model Explorer node data: ``{graph_id: {"results": {node: {"value": v}}, ...}}``.

    ``graph_id`` is the ONNX graph's name; by default ``provenance["graph_name"]`` when the run
    recorded it, else ``"main_graph"``. Each user node covered by a verified row gets that row's
    value (the worst one when several rows cover it); rows without a value (NaN) are left out.
    rmse/scale is coloured on the report's fixed severity scale, ``impact`` on fixed shares of the
    output noise (layers without a measured impact are left out), other metrics on a gradient.
    """
    known = set(DERIVED_METRICS) | {m for r in statistics.layers for m in r.metrics} | set(statistics.metric_names)
    if metric not in known:
        raise QuantDebugError(f"unknown metric {metric!r}; choose one of {', '.join(map(repr, sorted(known)))}")
    gid = graph_id if graph_id is not None else str(statistics.provenance.get("graph_name") or DEFAULT_GRAPH_ID)
    results: dict[str, dict[str, float]] = {}
    for row in statistics.layers:
        value = metric_value(row, metric) if metric in DERIVED_METRICS or metric in row.metrics else math.nan
        if math.isnan(value):
            continue
        if math.isinf(value):  # JSON has no infinity; keep the node, at the end of the scale
            value = math.copysign(sys.float_info.max, value)
        for node in row.covers or (row.node_name,):
            if node and (node not in results or value > results[node]["value"]):
                results[node] = {"value": float(value)}
    graph: dict[str, Any] = {"results": results}
    if metric == RATIO_METRIC:
        graph["thresholds"] = [
            {"value": WATCH_RMSE_OVER_SCALE, "bgColor": SEVERITY["ok"][1], "textColor": "#ffffff"},
            {"value": SUSPECT_RMSE_OVER_SCALE, "bgColor": SEVERITY["watch"][1], "textColor": "#000000"},
            {"value": SEVERE_RMSE_OVER_SCALE, "bgColor": SEVERITY["suspect"][1], "textColor": "#ffffff"},
            {"value": sys.float_info.max, "bgColor": SEVERITY["severe"][1], "textColor": "#ffffff"},
        ]
    elif metric == IMPACT_METRIC:
        graph["thresholds"] = [{"value": v, "bgColor": bg, "textColor": fg} for v, bg, fg in _IMPACT_THRESHOLDS]
    else:
        graph["gradient"] = [dict(item) for item in _GRADIENT]
    return {gid: graph}


def save_explorer_node_data(
    statistics: Statistics,
    path: str | os.PathLike[str],
    metric: str = RATIO_METRIC,
    *,
    graph_id: str | None = None,
) -> Path:
    """Write `explorer_node_data` to ``path`` as JSON, atomically; returns the path."""
    data = explorer_node_data(statistics, metric, graph_id=graph_id)
    out = Path(path)
    write_text(out, json.dumps(data, indent=1, allow_nan=False))
    return out
