"""The fix as onnxruntime ``quantize_static`` settings: written as plain JSON, read back as keyword arguments.

The file holds names only (``"QInt8"``, ``"QDQ"``) and plain numbers, so it can be read and
diffed. ``onnxruntime_settings`` turns it into what ``quantize_static`` takes: enums for types,
formats and methods, numpy arrays for ``rmin``/``rmax``/``scale``/``zero_point`` (onnxruntime
reads their ``dtype``), sets for ``recv_nodes``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

from quantdebug.config import QuantConfig
from quantdebug.errors import ConfigError
from quantdebug.pipeline.calibrate import Calibration
from quantdebug.pipeline.plan import QUANT_TYPES, default_op_types, tensor_overrides
from quantdebug.pipeline.prepare import PreparedModel
from quantdebug.support import read_json_object

SETTINGS_FORMAT = "quantdebug.onnxruntime-settings"
HOW_TO_LOAD = (
    "settings = quantdebug.onnxruntime_settings(this_file); "
    "onnxruntime.quantization.quantize_static(float_model, output_model, calibration_data_reader, **settings). "
    "float_model: the model FixResult.save_float_model() writes (quantdebug's pre-processed copy of yours: "
    "these node and tensor names are its names). Passing this JSON as it is fails: onnxruntime wants enums "
    "and numpy arrays where JSON has names and numbers."
)
WEIGHTS_WARNING = (
    "this fix changes weights ({levers}), which quantize_static settings cannot express: these settings "
    "quantize the float model with plain rounding and the ranges of the model before the change, so they do not "
    "reproduce the fixed model. Deploy the fixed model itself (FixResult.save_model(path)), or quantize the "
    "transformed float model (FixResult.save_float_model(path)) with your own quantizer."
)
_META = ("format", "version", "how_to_load", "warning")
_RANGE_KEYS = ("rmin", "rmax", "scale")


def quantized_tensors(model: onnx.ModelProto) -> set[str]:
    """The tensors a QDQ model quantizes: the inputs of its QuantizeLinear nodes."""
    return {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}


def ort_settings(
    prepared: PreparedModel,
    calibration: Calibration,
    config: QuantConfig,
    fixed: onnx.ModelProto,
) -> dict[str, Any]:
    """The fix as plain-JSON ``quantize_static`` keyword arguments (see ``onnxruntime_settings``).

    ``prepared`` is the preparation the fixed model was quantized from; ``fixed`` the fixed model.
    Ranges are given as ``rmin``/``rmax`` where quantdebug's range differs from what onnxruntime's
    MinMax calibration computes on the same data: the candidate's calibration and clamp tensors,
    and, for a base config that calibrates another way, every tensor the fixed model quantizes.
    """
    model = prepared.model
    precisions = prepared.precisions(config)
    floats = frozenset(n for n, p in precisions.items() if p == "float")
    plan = prepared.plan(config, precisions)  # what PreparedModel.quantize quantized the fixed model with
    overrides = {tensor: _plain(entry) for tensor, entry in tensor_overrides(model, config, plan).items()}
    ranges = calibration.ranges(config)
    quantized = quantized_tensors(fixed)
    changed = set(dict(config.calibration_overrides)) | {t for t, _, _ in config.tensor_clamps}
    for tensor in sorted(quantized & set(ranges)):
        # onnxruntime's MinMax calibrator gives the exact (min, max) of the same data; anything
        # else (another method, a clamp, the width quantdebug gives an all-zero tensor) is written
        if tensor in changed or ranges[tensor] != calibration.tensor_range(tensor, "minmax"):
            lo, hi = ranges[tensor]
            overrides.setdefault(tensor, {}).update({"rmin": lo, "rmax": hi})
    extra: dict[str, Any] = {"ActivationSymmetric": config.symmetric_activations}
    if config.symmetric_weights is not None:
        extra["WeightSymmetric"] = config.symmetric_weights
    extra.update(_plain(dict(config.extra_options)))
    if overrides:
        extra["TensorQuantOverrides"] = {t: [overrides[t]] for t in sorted(overrides)}
    op_types = config.op_types_to_quantize if config.op_types_to_quantize is not None else default_op_types()
    quantizable = set(op_types)
    excluded = [n.name for n in model.graph.node if n.name in floats and n.op_type in quantizable]
    warning = (
        {"warning": WEIGHTS_WARNING.format(levers=", ".join(weight_levers(config)))} if config.changes_weights else {}
    )
    return {
        "format": SETTINGS_FORMAT,
        "version": 1,
        "how_to_load": HOW_TO_LOAD,
        **warning,
        "quant_format": QuantFormat.QDQ.name,
        "activation_type": QUANT_TYPES[config.activation_type].name,
        "weight_type": QUANT_TYPES[config.weight_type].name,
        "per_channel": config.per_channel,
        "reduce_range": config.reduce_range,
        "calibrate_method": CalibrationMethod.MinMax.name,
        "op_types_to_quantize": list(op_types),
        "nodes_to_exclude": excluded,
        "extra_options": extra,
    }


def weight_levers(config: QuantConfig) -> list[str]:
    """The weight levers ``config`` turns on, by their lever names."""
    on = (
        ("equalize", config.equalize_on),
        ("smooth_quant", config.smooth_quant_on),
        ("adaround", config.adaround_on),
        ("bias_correction", config.bias_correction_on),
    )
    return [name for name, flag in on if flag]


def _plain(value: Any) -> Any:
    """Enums by name, sets as sorted lists, numpy values as numbers: what JSON can hold."""
    if isinstance(value, QuantType):
        return value.name
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(_plain(v) for v in value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


def onnxruntime_settings(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``onnxruntime.quantization.quantize_static`` from a saved fix.

    ``source`` is the file ``FixResult.save_onnxruntime_settings`` writes (or its dict,
    ``FixResult.ort_settings``)::

        settings = qd.onnxruntime_settings("ort_settings.json")
        quantize_static("model_float.onnx", "model_int8.onnx", reader, **settings)

    with ``model_float.onnx`` from ``FixResult.save_float_model`` and ``reader`` a
    ``CalibrationDataReader`` over the calibration data the fix used.
    """
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        data = read_json_object(Path(source), ConfigError, "onnxruntime settings file")
    if data.get("format") != SETTINGS_FORMAT:
        raise ConfigError(
            f"{source if not isinstance(source, Mapping) else 'this dict'} is not quantdebug onnxruntime settings "
            "(write them with FixResult.save_onnxruntime_settings)"
        )
    settings = {k: v for k, v in data.items() if k not in _META}
    try:
        settings["quant_format"] = QuantFormat[settings["quant_format"]]
        settings["calibrate_method"] = CalibrationMethod[settings["calibrate_method"]]
        activation = QuantType[settings["activation_type"]]
        settings["activation_type"] = activation
        settings["weight_type"] = QuantType[settings["weight_type"]]
        extra = dict(settings.get("extra_options", {}))
        overrides = extra.get("TensorQuantOverrides")
        if overrides is not None:
            extra["TensorQuantOverrides"] = {
                tensor: [_entry(e, activation) for e in entries] for tensor, entries in overrides.items()
            }
        settings["extra_options"] = extra
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"onnxruntime settings are damaged ({type(exc).__name__}: {exc}); save them again") from exc
    return settings


def _entry(entry: Mapping[str, Any], default_type: QuantType) -> dict[str, Any]:
    """One TensorQuantOverrides entry with onnxruntime's types (its ``convert`` part as well)."""
    out = dict(entry)
    quant_type = QuantType[out["quant_type"]] if "quant_type" in out else default_type
    if "quant_type" in out:
        out["quant_type"] = quant_type
    for key in _RANGE_KEYS:
        if key in out:
            out[key] = np.array(out[key], dtype=np.float32)
    if "zero_point" in out:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(quant_type.tensor_type)
        out["zero_point"] = np.array(out["zero_point"], dtype=dtype)
    if "convert" in out:
        convert = _entry(out["convert"], quant_type)
        if "recv_nodes" in convert:
            convert["recv_nodes"] = set(convert["recv_nodes"])
        out["convert"] = convert
    return out
