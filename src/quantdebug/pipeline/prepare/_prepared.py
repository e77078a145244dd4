"""A float model made ready for quantization: loaded, pre-processed, fingerprinted, selectable."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import onnx

from quantdebug.config import QuantConfig
from quantdebug.data import Dataset, as_dataset
from quantdebug.errors import ConfigError
from quantdebug.pipeline.calibrate import Calibration, Calibrator, model_fingerprint
from quantdebug.pipeline.plan import PlannedPrecision, _weights, default_op_types, quantize_with_ranges
from quantdebug.pipeline.plan._select import Selector, resolve_precisions
from quantdebug.pipeline.prepare import _external
from quantdebug.pipeline.prepare._load import ModelSource, load_model
from quantdebug.pipeline.prepare._preprocess import Preprocessed, default_opset, preprocess
from quantdebug.support._progress import progress_bar

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
        # transformed float model + its ranges per (transform options, dataset): fix re-quantizes often
        self._transformed: dict[
            tuple[Any, ...], tuple[onnx.ModelProto, list[dict[str, Any]], Calibration, Dataset]
        ] = {}
        # the last adaround / bias correction: the debugger and fix re-quantize the same config often
        self._adjusted: tuple[tuple[Any, ...], onnx.ModelProto, list[dict[str, Any]], Dataset] | None = None

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

    @staticmethod
    def plan(config: QuantConfig, precisions: Mapping[str, str]) -> PlannedPrecision:
        """The nodes left in float, and those raised to 16 bits on top of an 8-bit default."""
        wide_default = config.activation_type in _WIDE
        return PlannedPrecision(
            exclude=tuple(n for n, p in precisions.items() if p == "float"),
            int16=tuple(n for n, p in precisions.items() if p in _WIDE and not wide_default),
        )

    def quantize(
        self,
        calibration: Calibration,
        config: QuantConfig,
        precisions: Mapping[str, str],
        dataset: Iterable[Mapping[str, Any]] | None = None,
    ) -> onnx.ModelProto:
        """The QDQ model; the weight levers of ``config`` fit to ``dataset`` or the calibration's own samples."""
        calibration.check_model(self.fingerprint, self.user_model)
        plan = self.plan(config, precisions)
        if plan.int16 and default_opset(self.model) < 21:
            raise ConfigError(
                "16-bit node precisions need a model prepared for opset 21; pass the QuantConfig when preparing"
            )
        if not config.changes_weights:
            return quantize_with_ranges(self.model, calibration.ranges(config), config, plan)
        data = dataset if dataset is not None else calibration.dataset
        if data is None:
            raise _weights.missing_data_error(config)
        if not isinstance(data, Dataset):  # the user's own samples (Calibration.load, qd.quantize): validate them
            data = as_dataset(data, self.model, what="dataset")
        feeds = _weights.limited(data, config)
        model, ranges_from = self.model, calibration
        records: list[dict[str, Any]] = []
        if config.equalize_on or config.smooth_quant_on:
            model, records, ranges_from = self.transformed(config, data, feeds)
        qdq = quantize_with_ranges(model, ranges_from.ranges(config), config, plan)
        if config.adaround_on or config.bias_correction_on:
            qdq, more = self.adjusted(qdq, model, config, data, feeds)
            records = [*records, *more]
        _weights.stamp(qdq, records)
        return qdq

    def adjusted(
        self,
        qdq: onnx.ModelProto,
        model: onnx.ModelProto,
        config: QuantConfig,
        data: Dataset,
        feeds: Iterable[Mapping[str, Any]],
    ) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
        """``qdq`` after adaround / bias correction, reused while the QDQ model, options and samples are the same."""
        import hashlib  # as in prepared_model: only hashing needs it

        fields: tuple[str, ...] = ("weight_rounding", "adaround_nodes", "adaround_iterations", "adaround_samples")
        fields += ("adaround_seed", "adaround_passes", "bias_correction", "bias_correction_nodes", "adaround_target")
        digest = hashlib.sha256(qdq.SerializeToString(deterministic=True)).hexdigest()
        key = (digest, id(data), *(getattr(config, f) for f in fields))
        cached = self._adjusted
        if cached is None or cached[0] != key or cached[3] is not data:
            with progress_bar("adaround" if config.adaround_on else "bias correction", None) as advance:
                out, records = _weights.adjust_weights(qdq, model, config, feeds, self.resolve, progress=advance)
            cached = self._adjusted = (key, out, records, data)
        result = onnx.ModelProto()
        result.CopyFrom(cached[1])  # callers stamp and may change it
        return result, list(cached[2])

    def resolve(self, selectors: Sequence[str]) -> list[str]:
        """Node names of the pre-processed model for the weight levers' node lists."""
        selector = self.selector()
        return list(dict.fromkeys(n for s in selectors for n in selector.nodes_for(s, "weight lever nodes")))

    def transformed(
        self, config: QuantConfig, data: Dataset, feeds: Iterable[Mapping[str, Any]]
    ) -> tuple[onnx.ModelProto, list[dict[str, Any]], Calibration]:
        """The float model as equalize / SmoothQuant leave it, its records, and its re-calibration on ``feeds``."""
        key: tuple[Any, ...] = (config.equalize_on, config.equalize_nodes, config.smooth_quant)
        key += (config.smooth_quant_nodes, config.adaround_samples, id(data))
        cached = self._transformed.get(key)
        if cached is None or cached[3] is not data:  # the same samples, not an object that reused its id
            model, records = _weights.transform_float(self.model, config, feeds, self.resolve)
            # other weights give other activation ranges: calibrate the transformed model afresh
            with progress_bar("re-calibrating", None) as advance:
                samples = iter(feeds)
                again = Calibrator(model).run(samples, batch_size=1, batch_free=False, progress=advance)  # type: ignore[arg-type]
            cached = (model, records, again, data)
            self._transformed = {key: cached}  # one entry: a transformed model is a full copy
        return cached[0], cached[1], cached[2]


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
