"""The debugger's per-layer statistics, in both verify modes, as evidence for the fix ranking.

Per-layer verify feeds each quantized node the quantized form of its float inputs: its error is
what the node itself adds. Whole-model verify runs the quantized model end to end: its error is
what has accumulated by that node. Both are read as rmse/scale, the error in quantization steps of
the node's output, where plain rounding gives 1/sqrt(12) (about 0.29). A node whose isolated error
is several times the rounding floor, or whose accumulated error is several times its inputs', is
more suspect than its neighbours; the switchable graph says how much each matters at the outputs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from quantdebug.config import DEFAULT_METRICS, DebugOptions
from quantdebug.pipeline.plan import Plan, Unit
from quantdebug.pipeline.results import rmse_over_scale
from quantdebug.pipeline.run import DebugJob, build_debug_model

ROUNDING = 1.0 / math.sqrt(12.0)  # rmse/scale of plain rounding to the nearest step
_MSE = DEFAULT_METRICS.index("mean_squared_error")


@dataclasses.dataclass(frozen=True)
class LayerEvidence:
    """One quantized node's statistics from the two verify modes, in quantization steps."""

    node: str
    per_layer: float  # rmse/scale with float-derived inputs: the error the node adds
    whole_model: float  # rmse/scale with the quantized model's inputs: the error accumulated here
    inputs_whole_model: float  # the largest whole-model rmse/scale among the units feeding it

    @property
    def added(self) -> float:
        """Isolated error over the rounding floor (1.0: the node rounds and nothing more)."""
        return self.per_layer / ROUNDING

    @property
    def growth(self) -> float:
        """Accumulated error over what arrives at the node (floored at rounding): where error jumps."""
        return self.whole_model / max(self.inputs_whole_model, ROUNDING)

    @property
    def score(self) -> float:
        """The larger of the two ratios; NaN statistics (a node never seen) count as unremarkable."""
        values = [v for v in (self.added, self.growth) if not math.isnan(v)]
        return max(values) if values else 0.0


def _verify(
    float_model: onnx.ModelProto, plan: Plan, feeds: Sequence[Mapping[str, np.ndarray]], mode: str
) -> dict[str, float]:
    """rmse/scale per unit output tensor after one debug run over ``feeds`` in ``mode``."""
    options = DebugOptions(verify_mode=mode, check_fidelity=False, progress=False)  # type: ignore[arg-type]
    graph = build_debug_model(plan.optimized, float_model, plan.units, whole_model=mode == "whole_model")
    job = DebugJob(graph=graph, options=options, deployed=None, float_model=None, custom_params=[])
    state = job.empty_state()
    # a few samples, one at a time: no batching check, no stacking of samples whose shapes may differ
    job.loop().process(iter([dict(f) for f in feeds]), state, batch_free=False, advance=lambda n: None)
    means = state.layer.means()
    return {
        u.output: rmse_over_scale(float(means[k, _MSE]), plan.info[u.output].scale) for k, u in enumerate(graph.units)
    }


def layer_evidence(
    float_model: onnx.ModelProto, plan: Plan, feeds: Sequence[Mapping[str, np.ndarray]]
) -> dict[str, LayerEvidence]:
    """Per verified node (by float-model name): its per-layer and whole-model rmse/scale on ``feeds``."""
    if not plan.units or not feeds:
        return {}
    per_layer = _verify(float_model, plan, feeds, "per_layer")
    whole = _verify(float_model, plan, feeds, "whole_model")
    by_tensor = {u.float_tensor: u for u in plan.units}
    producer = {o: n for n in float_model.graph.node for o in n.output if o}

    def feeding_units(tensors: Sequence[str]) -> list[Unit]:
        """The nearest verified units upstream of ``tensors``, through nodes that are not verified."""
        found: list[Unit] = []
        seen: set[str] = set()
        todo = list(tensors)
        while todo:
            t = todo.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in by_tensor:
                found.append(by_tensor[t])
            elif t in producer:
                todo.extend(i for i in producer[t].input if i)
        return found

    out: dict[str, LayerEvidence] = {}
    for unit in plan.units:
        feeding = feeding_units([b.float_tensor for b in unit.boundaries])
        inputs = [whole.get(u.output, math.nan) for u in feeding if u is not unit]
        inputs = [v for v in inputs if not math.isnan(v)]
        evidence = LayerEvidence(
            unit.node,
            per_layer.get(unit.output, math.nan),
            whole.get(unit.output, math.nan),
            max(inputs, default=0.0),
        )
        previous = out.get(unit.node)
        if previous is None or evidence.score > previous.score:  # a node with several integer outputs
            out[unit.node] = evidence
    return out
