"""Leave out of a fix the changes that do not change the fixed model.

A search keeps whole-model levers found early (percentile calibration on a tensor, per-channel
weights on a node) when later steps put the tensor's consumers or the node itself in float; the
change then does nothing. Which changes do something is read from the fixed model itself: the
tensors it quantizes (the inputs of its QuantizeLinear nodes) and the nodes whose weights it
dequantizes per channel; a precision change counts where the node is quantized at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import onnx
from onnx import numpy_helper

from quantdebug.config import QuantConfig
from quantdebug.fix._result import Candidate
from quantdebug.fix._settings import quantized_tensors
from quantdebug.pipeline.calibrate import Calibration
from quantdebug.pipeline.prepare import PreparedModel
from quantdebug.support.external import has_references


def per_channel_nodes(model: onnx.ModelProto) -> set[str]:
    """Nodes of a QDQ model that read a weight dequantized with more than one scale."""
    init = {i.name: i for i in model.graph.initializer}
    per_channel_dq = {
        n.output[0]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[1] in init and numpy_helper.to_array(init[n.input[1]]).size > 1
    }
    return {n.name for n in model.graph.node if any(t in per_channel_dq for t in n.input)}


def live_changes(
    candidate: Candidate,
    fixed: onnx.ModelProto,
    base_precisions: Mapping[str, str],
    final_precisions: Mapping[str, str],
) -> Candidate:
    """``candidate`` without the changes that leave ``fixed`` as it is.

    ``base_precisions``: every node's precision under the base config (``"float"`` for nodes that
    onnxruntime does not quantize); ``final_precisions``: under the candidate's config.
    """
    quantized = quantized_tensors(fixed)
    channelled = per_channel_nodes(fixed)
    precision = tuple(
        (node, p)
        for node, p in candidate.precision
        # a node onnxruntime does not quantize, or whose entry a later one overrides, changes nothing
        if base_precisions.get(node, "float") != "float" and final_precisions.get(node) == p
    )
    return candidate.merged(
        precision=tuple(dict.fromkeys(precision)),
        per_channel=tuple(n for n in candidate.per_channel if n in channelled),
        calibration=tuple(c for c in candidate.calibration if c[0] in quantized),
        clamps=tuple(c for c in candidate.clamps if c[0] in quantized),
    )


def checked_live_changes(
    candidate: Candidate,
    model: onnx.ModelProto,
    base: QuantConfig,
    base_precisions: Mapping[str, str],
    prepared_for: Callable[[QuantConfig], PreparedModel],
    calibration: Calibration,
) -> tuple[Candidate, int]:
    """``live_changes`` of the candidate that gave ``model``, and how many changes were left out.

    The pruned candidate is kept only when its config gives the same bytes through ``qd.quantize``'s
    path (checked for models in one protobuf; one whose weights live in external data trusts the rule).
    """
    before = prepared_for(candidate.config(base))
    live = live_changes(candidate, model, base_precisions, before.precisions(candidate.config(base)))
    if live == candidate:
        return candidate, 0
    config = live.config(base)
    prepared = prepared_for(config)
    if prepared is not before:  # every 16-bit entry dead: another opset, so other bytes
        return candidate, 0
    if not has_references(model):
        again = prepared.quantize(calibration, config, prepared.precisions(config))
        if again.SerializeToString() != model.SerializeToString():
            return candidate, 0
    return live, len(candidate.describe()) - len(live.describe())
