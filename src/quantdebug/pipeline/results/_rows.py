"""The results stage's entry: a finished run's sums into layer rows, model statistics and impact columns."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from quantdebug.config import DEFAULT_METRICS
from quantdebug.pipeline.plan import Plan
from quantdebug.pipeline.results._results import LayerRow
from quantdebug.pipeline.run import DebugGraph, RunState


def layer_rows(
    plan: Plan,
    graph: DebugGraph,
    state: RunState,
    covers: Mapping[str, Sequence[str]],
    tensor_index: Mapping[str, int],
) -> list[LayerRow]:
    """One row per verified unit, in graph order: its parameters, the means of its metrics, and the
    nodes of the user's model it covers (``covers``: pre-processed node -> user nodes)."""
    means = state.layer.means()
    custom_means = state.custom.means() if state.custom is not None else None
    rows = []
    for k, unit in enumerate(graph.units):
        row = plan.info[unit.output]
        metrics = {m: float(means[k, j]) for j, m in enumerate(DEFAULT_METRICS)}
        if custom_means is not None and state.custom is not None:
            metrics.update({m: float(custom_means[k, j]) for j, m in enumerate(state.custom.metrics)})
        rows.append(
            LayerRow(
                op_name=unit.op_type,
                tensor_idx=tensor_index.get(unit.float_tensor, -1),
                tensor_name=unit.float_tensor,
                node_name=unit.node,
                scale=row.scale,
                zero_point=row.zero_point,
                precision=row.precision,
                qmin=row.qmin,
                qmax=row.qmax,
                covers=tuple(u for n in unit.twin for u in covers.get(n, ())),
                metrics=metrics,
            )
        )
    return rows


def model_statistics(state: RunState) -> dict[str, float]:
    """The model metrics' means over the samples that measured them."""
    count = state.model_count
    return {k: v / count for k, v in state.model_sums.items()} if count else {}


def with_impact(rows: list[LayerRow] | None, culprits: Mapping[str, Any] | None) -> list[LayerRow] | None:
    """``rows`` with the ``impact`` a culprits measurement gave each tensor (NaN where it has none)."""
    if rows is None or culprits is None:
        return rows
    impact = {str(c["tensor_name"]): float(c["impact"]) for c in culprits["rows"]}
    return [dataclasses.replace(r, impact=impact.get(r.tensor_name, math.nan)) for r in rows]


def worst_tensors(rows: Sequence[LayerRow], top: int) -> list[str]:
    """The ``top`` tensors with the largest rmse/scale (NaN rows left out)."""
    ranked = sorted((r for r in rows if r.rmse_over_scale == r.rmse_over_scale), key=lambda r: -r.rmse_over_scale)
    return [r.tensor_name for r in ranked[:top]]
