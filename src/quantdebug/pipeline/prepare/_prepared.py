"""A float model made ready for quantization: loaded, pre-processed, fingerprinted, selectable."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx

from quantdebug.config import QuantConfig
from quantdebug.data import Dataset, as_dataset
from quantdebug.errors import ConfigError, ModelError
from quantdebug.pipeline.calibrate import Calibration, Calibrator, model_fingerprint
from quantdebug.pipeline.plan import (
    Plan,
    PlannedPrecision,
    Selector,
    WeightFit,
    apply_fit,
    build_plan,
    default_op_types,
    fit_records,
    fit_scope,
    fit_weights,
    limited,
    missing_data_error,
    quantize_with_ranges,
    resolve_precisions,
    stamp,
)
from quantdebug.pipeline.prepare._load import ModelSource, load_model
from quantdebug.pipeline.prepare._preprocess import Preprocessed, default_opset, preprocess
from quantdebug.pipeline.transform import transform_float
from quantdebug.support import external, progress_bar

_WIDE = ("int16", "uint16")


FITS_KEPT = 4
# (key, fit, the samples it was fitted on, {the config fields it was asked with: the fit with their records})
_Fit = tuple[tuple[Any, ...], WeightFit, Dataset, dict[tuple[Any, ...], WeightFit]]
DIGESTS_KEPT = 16
FITS_KEPT_BYTES = 256 * 2**20


def _fit_bytes(fit: WeightFit) -> int:
    return sum(a.nbytes for arrays in fit.integers.values() for a in arrays) + sum(
        b.nbytes for b in fit.biases.values()
    )


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
        # recent adaround / bias correction fits, newest last: the debugger and fix re-quantize the same
        # configs often, and fix comes back to its best one after trying others
        self._fits: list[_Fit] = []
        # (digest and the config fields that name the layers to fit, the scope they give): see fit_scope
        self._scopes: list[tuple[tuple[Any, ...], tuple[frozenset[str], frozenset[str]]]] = []
        # (recipe, digest, float model) of the 8-bit models fits were keyed by, newest last
        self._digests: list[tuple[tuple[Any, ...], str, onnx.ModelProto]] = []

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

    def quantized_plan(
        self,
        calibration: Calibration,
        config: QuantConfig,
        precisions: Mapping[str, str],
        dataset: Iterable[Mapping[str, Any]] | None = None,
    ) -> Plan:
        """Quantize with these node ``precisions`` and map the result back to the float nodes it came from."""
        qdq = self.quantize(calibration, config, precisions, dataset)
        return build_plan(self.model, qdq, {n for n, p in precisions.items() if p != "float"})

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
            raise missing_data_error(config)
        if not isinstance(data, Dataset):  # the user's own samples (Calibration.load, qd.quantize): validate them
            data = as_dataset(data, self.model, what="dataset")
        feeds = limited(data, config)
        model, ranges_from = self.model, calibration
        records: list[dict[str, Any]] = []
        if config.equalize_on or config.smooth_quant_on:
            model, records, ranges_from = self.transformed(config, data, feeds)
        ranges = ranges_from.ranges(config)
        qdq = quantize_with_ranges(model, ranges, config, plan)
        if config.adaround_on or config.bias_correction_on:
            # 16-bit nodes keep 8-bit weights (16x8): the weights are fitted with those nodes at
            # 8 bits, so candidates that differ only in which nodes run at 16 bits share one fit.
            # That 8-bit model is what the fit is keyed by; once it has been built for these ranges,
            # config and float nodes, its digest is remembered and it is not built again per candidate
            base_plan = replace(plan, int16=())
            recipe = (repr(sorted(ranges.items())), repr(config.replace(node_precision=())), base_plan)

            def base() -> onnx.ModelProto:
                return qdq if not plan.int16 else quantize_with_ranges(model, ranges, config, base_plan)

            fit = self.fitted(base, model, config, data, feeds, recipe)
            qdq, more = apply_fit(qdq, model, fit)
            records = [*records, *more]
        stamp(qdq, records)
        return qdq

    def fitted(
        self,
        build: Callable[[], onnx.ModelProto],
        model: onnx.ModelProto,
        config: QuantConfig,
        data: Dataset,
        feeds: Iterable[Mapping[str, Any]],
        recipe: tuple[Any, ...],
    ) -> WeightFit:
        """adaround / bias correction fitted on the QDQ model ``build`` makes from the float ``model``;
        reused while that QDQ model, the options and the samples stay.

        ``recipe`` is what ``build`` makes its model from besides ``model``: the QDQ model's digest is
        remembered by it (and by ``model`` itself, held so that it stays the same object), so a later
        call with the same recipe finds its fit without building the QDQ model again.
        """
        # what a fit depends on besides the layers it rounds and corrects (its scope, below)
        fields = ("adaround_iterations", "adaround_samples", "adaround_seed", "adaround_passes", "adaround_target")
        # ... and what names that scope in the config
        scoped = ("weight_rounding", "adaround_nodes", "bias_correction", "bias_correction_nodes")
        built: list[onnx.ModelProto] = []

        def model_to_fit() -> onnx.ModelProto:
            if not built:
                built.append(build())
            return built[0]

        digest = next((d for r, d, m in self._digests if r == recipe and m is model), None)
        if digest is None:
            digest = hashlib.sha256(model_to_fit().SerializeToString(deterministic=True)).hexdigest()
            self._digests = [*self._digests[-(DIGESTS_KEPT - 1) :], (recipe, digest, model)]
        asked = (digest, *(getattr(config, f) for f in scoped))
        scope = next((s for a, s in self._scopes if a == asked), None)
        if scope is None:
            scope = fit_scope(model_to_fit(), model, config, self.resolve)
            self._scopes = [*self._scopes[-(DIGESTS_KEPT - 1) :], (asked, scope)]
        key = (digest, id(data), scope, *(getattr(config, f) for f in fields))
        # the same samples, not an object that reused their id
        hit = next((c for c in self._fits if c[0] == key and c[2] is data), None)
        if hit is None:
            with progress_bar("adaround" if config.adaround_on else "bias correction", None) as advance:
                fit = fit_weights(model_to_fit(), model, config, feeds, self.resolve, progress=advance)
            hit = (key, fit, data, {asked: fit})
        elif asked not in hit[3]:
            # made for another config of the same scope (bias correction asked where no layer has
            # a bias): the same integers and biases, with this config's own records
            hit[3][asked] = fit_records(model_to_fit(), model, config, hit[1], self.resolve)
        self._fits = [c for c in self._fits if c is not hit]
        self._fits.append(hit)
        # the newest fit always stays; older ones while they add up to FITS_KEPT_BYTES (a fit is the
        # learned integers of every fitted weight: a quarter of the float model's weights, or less)
        total = 0
        kept: list[_Fit] = []
        for c in reversed(self._fits):
            total += _fit_bytes(c[1])
            if kept and (len(kept) >= FITS_KEPT or total > FITS_KEPT_BYTES):
                break
            kept.append(c)
        self._fits = kept[::-1]
        return hit[3][asked]

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
            model, records = transform_float(self.model, config, feeds, self.resolve)
            # other weights give other activation ranges: calibrate the transformed model afresh
            with progress_bar("re-calibrating", None) as advance:
                samples = iter(feeds)
                again = Calibrator(model).run(samples, batch_size=1, batch_free=False, progress=advance)  # type: ignore[arg-type]
            cached = (model, records, again, data)
            self._transformed = {key: cached}  # one entry: a transformed model is a full copy
        return cached[0], cached[1], cached[2]


def prepared_for_quantized(float_model: ModelSource, quantized: onnx.ModelProto) -> PreparedModel:
    """Pick the pre-processing of the float model whose names match the given quantized model best.

    Other tools quantize either the raw export or an onnxruntime-optimized copy of it; both are
    tried, and the one under which more quantized units map back to float twins is kept.
    """
    if not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in quantized.graph.node):
        raise ModelError(
            "the quantized model has no QuantizeLinear/DequantizeLinear nodes: only QDQ-format models can be "
            "debugged (quantize with quant_format=QuantFormat.QDQ)"
        )
    best: tuple[int, PreparedModel] | None = None
    for optimize in (False, True):
        prepared = PreparedModel(float_model, optimize=optimize)
        plan = build_plan(prepared.model, quantized, None)
        if best is None or len(plan.units) > best[0]:
            best = (len(plan.units), prepared)
    assert best is not None
    return best[1]


_CACHE: dict[tuple[str, int, bool], PreparedModel] = {}
_CACHE_SIZE = 2
_LOCK = threading.Lock()  # debuggers in threads share the cache; a PreparedModel is built once per key
_Stamps = tuple[tuple[str, int, int], ...]  # (resolved path, size, mtime_ns) of a model file and its data files
_DIGESTS: dict[_Stamps, str] = {}  # a path's digest, until one of its files changes
_DIGESTS_SIZE = 16
# A file written again within the file system's clock tick (a few ms on Linux) can keep its size and
# time: as git does with racily clean files, a digest is remembered only for files last written
# well before they were hashed, so that any later write shows in the time.
_RACY_NS = 2 * 10**9


def _stamps(paths: Iterable[Path]) -> _Stamps | None:
    try:
        return tuple((str(p), (st := p.stat()).st_size, st.st_mtime_ns) for p in paths)
    except OSError:  # gone or unreadable: load_model names the problem
        return None


def _data_files(path: Path) -> list[Path]:
    """The model file and the external-data files it names (read without loading the data)."""
    proto = onnx.load(str(path), load_external_data=False)
    names = {
        entry.value
        for tensor in external.all_tensors(proto)
        for entry in tensor.external_data
        if entry.key == "location" and not entry.value.startswith(external.PREFIX)
    }
    return [path, *sorted((path.parent / n).resolve() for n in names)]


def _digest(model: onnx.ModelProto) -> str:
    h = hashlib.sha256(model.SerializeToString(deterministic=True))
    h.update(external.file_stamps(model).encode())  # weights left in external data (models over 2 GB)
    return h.hexdigest()


def _path_digest(source: ModelSource) -> tuple[str | None, _Stamps | None]:
    """The remembered digest of a model file whose files have not changed since (no load, no hash)."""
    if not isinstance(source, str | os.PathLike):
        return None, None
    path = Path(source).resolve()
    for stamps, digest in _DIGESTS.items():
        if stamps[0][0] == str(path):
            return (digest, stamps) if _stamps(Path(s[0]) for s in stamps) == stamps else (None, None)
    return None, None


def prepared_model(source: ModelSource, config: QuantConfig | None = None, *, optimize: bool = True) -> PreparedModel:
    """A PreparedModel, reused when the same model bytes are prepared again (calibrate once, quantize many).

    Pre-processing a large model takes seconds; ``qd.quantize`` called in a loop over denylists
    would otherwise redo it every time. The key is a digest of the model's bytes, so a changed
    file is prepared afresh; a path's digest is remembered with its files' sizes and times, so
    asking again for an unchanged file neither loads nor hashes it.
    """
    opset = 21 if config is not None and needs_16bit(config) else 13
    with _LOCK:
        digest, _ = _path_digest(source)
        if digest is not None and (digest, opset, optimize) in _CACHE:
            return _CACHE[(digest, opset, optimize)]
        hashed_at = time.time_ns()
        model = load_model(source, what="float model")
        digest = _digest(model)
        if isinstance(source, str | os.PathLike):
            stamps = _stamps(_data_files(Path(source).resolve()))
            if stamps is not None and max(s[2] for s in stamps) < hashed_at - _RACY_NS:
                for old in [k for k in _DIGESTS if k[0][0] == stamps[0][0]]:
                    del _DIGESTS[old]
                while len(_DIGESTS) >= _DIGESTS_SIZE:
                    _DIGESTS.pop(next(iter(_DIGESTS)))
                _DIGESTS[stamps] = digest
        key = (digest, opset, optimize)
        if key not in _CACHE:
            while len(_CACHE) >= _CACHE_SIZE:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = PreparedModel(model, config, optimize=optimize)
        return _CACHE[key]
