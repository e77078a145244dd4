"""The transform stage's entry: the float model with BatchNorm folded, equalized and smoothed as a
QuantConfig asks, before calibration sees it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from quantdebug.config import QuantConfig
from quantdebug.pipeline.transform._equalize import equalize
from quantdebug.pipeline.transform._fold import fold_batchnorm
from quantdebug.pipeline.transform._smooth import smooth_quant

Feeds = Iterable[Mapping[str, np.ndarray]]


def transform_float(
    model: onnx.ModelProto, config: QuantConfig, feeds: Feeds, nodes: Callable[[Sequence[str]], list[str]]
) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
    """``model`` with BatchNormalization folded, equalized and smoothed as ``config`` asks, and the records.

    ``nodes`` resolves the config's selectors to node names of ``model``.
    """

    records: list[dict[str, Any]] = []
    if config.equalize_on:
        model, folded = fold_batchnorm(model)
        if folded:
            records.append({"kind": "fold_batchnorm", "nodes": list(folded), "status": "applied", "reason": ""})
        selected = nodes(config.equalize_nodes) if config.equalize_nodes else None
        model, more = equalize(model, nodes=selected)
        records.extend(more)
    if config.smooth_quant is not None:
        selected = nodes(config.smooth_quant_nodes) if config.smooth_quant_nodes else None
        model, more = smooth_quant(model, feeds, alpha=config.smooth_quant, nodes=selected)
        records.extend(more)
    return model, records
