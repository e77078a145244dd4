"""A float model made ready for quantization: loaded, pre-processed, fingerprinted, selectable."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import onnx

from .calibration import Calibration, model_fingerprint
from .config import QuantConfig
from .errors import ConfigError
from .graph import _external
from .graph._load import ModelSource, load_model
from .graph._preprocess import Preprocessed, default_opset, preprocess
from .graph._select import Selector, resolve_precisions
from .quantize import PlannedPrecision, default_op_types, quantize_with_ranges

_WIDE = ("int16", "uint16")


def needs_16bit(config: QuantConfig) -> bool:
    return (
        config.activation_type in _WIDE
        or config.weight_type in _WIDE
        or any(p in _WIDE for _, p in config.precision_rules)
    )


class PreparedModel:
    def __init__(self, source: ModelSource, config: QuantConfig | None = None, *, optimize: bool = True) -> None:
        self.user_model = load_model(source, what="float model")
        # 16-bit QDQ needs opset 21; convert the float model up front so its twins stay valid
        self.min_opset = 21 if config is not None and needs_16bit(config) else 13
        self.pre: Preprocessed = preprocess(self.user_model, optimize=optimize, min_opset=self.min_opset)
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
            self.selector(row_tensors), config.precision_rules, denylisted_nodes, denylisted_ops, op_types
        )
        return {
            n.name: touched.get(n.name, config.activation_type) if n.op_type in op_types else "float"
            for n in self.model.graph.node
        }

    def quantize(self, calibration: Calibration, config: QuantConfig, precisions: Mapping[str, str]) -> onnx.ModelProto:
        calibration.check_model(self.fingerprint, self.user_model)
        wide_default = config.activation_type in _WIDE
        plan = PlannedPrecision(
            exclude=tuple(n for n, p in precisions.items() if p == "float"),
            int16=tuple(n for n, p in precisions.items() if p in _WIDE and not wide_default),
        )
        if plan.int16 and default_opset(self.model) < 21:
            raise ConfigError(
                "16-bit node precisions need a model prepared for opset 21; pass the QuantConfig when preparing"
            )
        return quantize_with_ranges(self.model, calibration.ranges(config), config, plan)


_CACHE: dict[tuple[str, int, bool], PreparedModel] = {}
_CACHE_SIZE = 2


def prepared_model(source: ModelSource, config: QuantConfig | None = None, *, optimize: bool = True) -> PreparedModel:
    """A PreparedModel, reused when the same model bytes are prepared again (calibrate once, quantize many).

    Pre-processing a large model takes seconds; ``qd.quantize`` called in a loop over denylists
    would otherwise redo it every time. The key is a digest of the model's bytes, so a changed
    file is prepared afresh.
    """
    import hashlib

    model = load_model(source, what="float model")
    h = hashlib.sha256(model.SerializeToString(deterministic=True))
    h.update(_external.file_stamps(model).encode())  # weights left in external data (models over 2 GB)
    digest = h.hexdigest()
    key = (digest, 21 if config is not None and needs_16bit(config) else 13, optimize)
    if key not in _CACHE:
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = PreparedModel(model, config, optimize=optimize)
    return _CACHE[key]
