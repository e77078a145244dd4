"""A float model made ready for quantization: loaded, pre-processed, fingerprinted, selectable."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import onnx

from .calibration import Calibration, model_fingerprint
from .config import QuantConfig
from .graph._load import ModelSource, load_model
from .graph._preprocess import Preprocessed, preprocess
from .graph._select import Selector, resolve_precisions
from .quantize import PlannedPrecision, default_op_types, quantize_with_ranges

_WIDE = ("int16", "uint16")


class PreparedModel:
    def __init__(self, source: ModelSource | PreparedModel, config: QuantConfig | None = None) -> None:
        if isinstance(source, PreparedModel):
            self.__dict__.update(source.__dict__)
            return
        self.user_model = load_model(source, what="float model")
        self.pre: Preprocessed = preprocess(self.user_model)
        self.model: onnx.ModelProto = self.pre.model
        # the user's model, not the pre-processed one: a calibration belongs to what the user passed
        self.fingerprint = model_fingerprint(self.user_model)

    def selector(self, row_tensors: Mapping[str, Sequence[str]] | None = None) -> Selector:
        return Selector(self.model, self.pre.covers, self.pre.renamed, row_tensors)

    def precisions(
        self,
        config: QuantConfig,
        denylisted_nodes: Iterable[str] = (),
        denylisted_ops: Iterable[str] = (),
        row_tensors: Mapping[str, Sequence[str]] | None = None,
    ) -> dict[str, str]:
        """{node: precision} for every node; nodes onnxruntime does not quantize are "float"."""
        op_types = set(config.op_types_to_quantize or default_op_types())
        touched = resolve_precisions(
            self.selector(row_tensors), config.node_precision, denylisted_nodes, denylisted_ops, op_types
        )
        return {
            n.name: touched.get(n.name, config.activation_type) if n.op_type in op_types else "float"
            for n in self.model.graph.node
        }

    def quantize(self, calibration: Calibration, config: QuantConfig, precisions: Mapping[str, str]) -> onnx.ModelProto:
        calibration.check_model(self.fingerprint)
        wide_default = config.activation_type in _WIDE
        plan = PlannedPrecision(
            exclude=tuple(n for n, p in precisions.items() if p == "float"),
            int16=tuple(n for n, p in precisions.items() if p in _WIDE and not wide_default),
        )
        return quantize_with_ranges(self.model, calibration.ranges(config), config, plan)
