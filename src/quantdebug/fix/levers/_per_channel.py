"""The per_channel lever: nodes whose weight channels span very different ranges get per-channel scales."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from quantdebug.fix.levers._base import Changes, Lever, LeverContext
from quantdebug.pipeline.results import weight_statistics

SPREAD = 8.0  # per-channel weight ranges this many times apart: per-tensor scales waste the small channels


class PerChannel(Lever):
    name = "per_channel"
    order = 1

    def available(self, context: LeverContext) -> bool:
        return not context.base.per_channel  # already per-channel everywhere: nothing to add

    def propose(self, context: LeverContext, suspects: Sequence[str] = ()) -> Changes:
        del suspects
        nodes = spread_nodes(weight_statistics(context.float_model, context.plan.qdq))
        return {"per_channel": tuple(nodes)} if nodes else {}

    def label(self, changes: Changes) -> str:
        return f"per_channel: {len(changes['per_channel'])} nodes"


LEVER = PerChannel()


def spread_nodes(weight_records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Nodes whose per-channel weight ranges are far apart (they need per-channel scales)."""
    nodes = []
    for r in weight_records:
        spread = r.get("channel_range_spread", math.nan)
        per_channel_capable = r.get("op_name") in ("Conv", "ConvTranspose", "MatMul", "Gemm")
        if r.get("kind") == "weight" and per_channel_capable and not r.get("per_channel") and spread >= SPREAD:
            nodes.append(str(r["node_name"]))
    return list(dict.fromkeys(nodes))
