"""Calibrate once, quantize many times: the functional API over PreparedModel (``fix`` lives in ``quantdebug.fix``)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import overload

import onnx

from quantdebug.config import DebugOptions, QuantConfig
from quantdebug.data import Dataset, as_dataset
from quantdebug.errors import ConfigError
from quantdebug.executors import Executor
from quantdebug.fix import fix
from quantdebug.frontends import adapt_dataset, from_framework
from quantdebug.pipeline.calibrate import Calibration, calibrate_model
from quantdebug.pipeline.prepare import (
    ModelSource,
    PreparedModel,
    load_model,
    prepared_for_quantized,
    prepared_model,
)
from quantdebug.support import external, progress_bar


@dataclasses.dataclass(frozen=True, kw_only=True)
class DebugInputs:
    """What a QuantizationDebugger works on, checked: its prepared model and datasets, and the
    calibration (given, or made here), or the model quantized elsewhere it was given instead."""

    quant_config: QuantConfig
    options: DebugOptions
    prepared: PreparedModel
    external: onnx.ModelProto | None
    rep: Dataset | None
    debug: Dataset
    calibration: Calibration | None


def debug_inputs(
    float_model: object,
    representative_dataset: object | None,
    debug_dataset: object | None,
    quant_config: QuantConfig | None,
    debug_options: DebugOptions | None,
    calibration: Calibration | None,
    quantized_model: ModelSource | None,
) -> DebugInputs:
    """QuantizationDebugger's arguments checked and turned into pipeline inputs (calibrating if needed)."""
    if float_model is None:
        raise ConfigError("float_model is required: a path, bytes or onnx.ModelProto of the float model")
    float_model, (representative_dataset, debug_dataset) = from_framework(
        float_model, representative_dataset, debug_dataset
    )
    config = quant_config or QuantConfig()
    if not isinstance(config, QuantConfig):
        raise ConfigError(f"quant_config must be a qd.QuantConfig; got {type(config).__name__}")
    options = debug_options or DebugOptions()
    if not isinstance(options, DebugOptions):
        raise ConfigError(f"debug_options must be a qd.DebugOptions; got {type(options).__name__}")
    external: onnx.ModelProto | None = None
    if quantized_model is not None:
        external = load_model(quantized_model, what="quantized model")
        prepared = prepared_for_quantized(float_model, external)  # type: ignore[arg-type]
    else:
        prepared = prepared_model(float_model, config)  # type: ignore[arg-type]
    rep = (
        as_dataset(representative_dataset, prepared.model, what="representative_dataset")
        if representative_dataset is not None
        else None
    )
    debug_source = debug_dataset if debug_dataset is not None else representative_dataset
    if debug_source is None:
        raise ConfigError("debug_dataset is required (or a representative_dataset to use for both)")
    debug = as_dataset(debug_source, prepared.model, what="debug_dataset")
    if calibration is not None:
        calibration.check_model(prepared.fingerprint, prepared.user_model)
    elif external is None:
        if rep is None:
            raise ConfigError("representative_dataset is required to calibrate (or pass calibration=...)")
        calibration = _calibrate_prepared(prepared, rep, batch_size=16, progress=options.progress, executor=None)
    return DebugInputs(
        quant_config=config,
        options=options,
        prepared=prepared,
        external=external,
        rep=rep,
        debug=debug,
        calibration=calibration,
    )


def calibrate(
    float_model: ModelSource,
    representative_dataset: object,
    config: QuantConfig | None = None,
    *,
    batch_size: int = 16,
    progress: bool | None = None,
    executor: Executor | None = None,
) -> Calibration:
    """One streaming pass over ``representative_dataset``; the result serves any later quantization.

    ``executor`` (for example ``qd.RayExecutor()``) splits the pass over workers; their
    statistics merge exactly into the single-process calibration.
    """
    del config  # every range method comes from the same pass; the config picks one at quantize time
    float_model, (representative_dataset,) = from_framework(float_model, representative_dataset)  # type: ignore[assignment]
    prepared = prepared_model(float_model)
    dataset = as_dataset(representative_dataset, prepared.model, what="representative_dataset")
    return _calibrate_prepared(prepared, dataset, batch_size=batch_size, progress=progress, executor=executor)


def _calibrate_prepared(
    prepared: PreparedModel, dataset: Dataset, *, batch_size: int, progress: bool | None, executor: Executor | None
) -> Calibration:
    """The calibration pass of ``prepared``, on ``executor`` or here, stamped with the user model's fingerprint."""
    shown = progress if executor is None else False  # an executor draws its own bar
    with progress_bar("calibrating", shown) as advance:
        return calibrate_model(
            prepared.model,
            dataset,
            fingerprint=prepared.fingerprint,
            batch_size=batch_size,
            progress=advance,
            executor=executor,
        )


@overload
def quantize(
    float_model: ModelSource,
    calibration: Calibration,
    config: QuantConfig | None = None,
    *,
    denylisted_nodes: Iterable[str] = (),
    denylisted_ops: Iterable[str] = (),
    output_path: None = None,
    dataset: object | None = None,
) -> onnx.ModelProto: ...


@overload
def quantize(
    float_model: ModelSource,
    calibration: Calibration,
    config: QuantConfig | None = None,
    *,
    denylisted_nodes: Iterable[str] = (),
    denylisted_ops: Iterable[str] = (),
    output_path: str | os.PathLike[str],
    dataset: object | None = None,
) -> None: ...


def quantize(
    float_model: ModelSource,
    calibration: Calibration,
    config: QuantConfig | None = None,
    *,
    denylisted_nodes: Iterable[str] = (),
    denylisted_ops: Iterable[str] = (),
    output_path: str | os.PathLike[str] | None = None,
    dataset: object | None = None,
) -> onnx.ModelProto | None:
    """The QDQ model for ``config``, with the denylisted nodes and op types left in float.

    The weight levers (adaround, bias correction, equalize, SmoothQuant) fit to ``dataset``, or
    without it to the samples ``qd.calibrate`` kept in memory. Same config, calibration and data
    give the same bytes.

    With ``output_path`` the model is written there atomically instead of returned; that is the
    way for models over protobuf's 2 GB limit (given as a path with external data), whose weights
    go to ``<file name>.data`` beside it. Without it such a model raises ``ModelTooLargeError``.
    """
    if not isinstance(calibration, Calibration):
        raise ConfigError(
            "calibration must be a qd.Calibration (from qd.calibrate or Calibration.load); "
            f"got {type(calibration).__name__}"
        )
    config = config or QuantConfig()
    prepared = prepared_model(float_model, config)
    calibration.check_model(prepared.fingerprint, prepared.user_model)
    precisions = prepared.precisions(config, tuple(denylisted_nodes), tuple(denylisted_ops))
    if dataset is not None:
        dataset = as_dataset(adapt_dataset(dataset), prepared.model, what="dataset")
    quantized = prepared.quantize(calibration, config, precisions, dataset)
    if output_path is not None:
        external.write_model(quantized, output_path)
        return None
    return external.as_proto(quantized, "quantized model", "qd.quantize(..., output_path=...)")


__all__ = ["calibrate", "fix", "from_framework", "quantize"]
