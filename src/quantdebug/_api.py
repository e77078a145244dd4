"""Calibrate once, quantize many times: the functional API over PreparedModel."""

from __future__ import annotations

from collections.abc import Iterable

import onnx

from ._prepared import PreparedModel
from ._progress import progress_bar
from .calibration import Calibration, calibrate_model
from .config import QuantConfig
from .data import as_dataset
from .errors import ConfigError
from .graph._load import ModelSource


def calibrate(
    float_model: ModelSource,
    representative_dataset: object,
    config: QuantConfig | None = None,
    *,
    batch_size: int = 16,
    progress: bool | None = None,
) -> Calibration:
    """One streaming pass over ``representative_dataset``; the result serves any later quantization."""
    del config  # every range method comes from the same pass; the config picks one at quantize time
    prepared = PreparedModel(float_model)
    dataset = as_dataset(representative_dataset, prepared.model, what="representative_dataset")
    with progress_bar("calibrating", progress) as advance:
        calibration = calibrate_model(prepared.model, dataset, batch_size=batch_size, progress=advance)
    calibration.fingerprint = prepared.fingerprint
    return calibration


def quantize(
    float_model: ModelSource,
    calibration: Calibration,
    config: QuantConfig | None = None,
    *,
    denylisted_nodes: Iterable[str] = (),
    denylisted_ops: Iterable[str] = (),
) -> onnx.ModelProto:
    """The QDQ model for ``config``, with the denylisted nodes and op types left in float."""
    if not isinstance(calibration, Calibration):
        raise ConfigError(
            "calibration must be a qd.Calibration (from qd.calibrate or Calibration.load); "
            f"got {type(calibration).__name__}"
        )
    config = config or QuantConfig()
    prepared = PreparedModel(float_model, config)
    calibration.check_model(prepared.fingerprint)
    precisions = prepared.precisions(config, tuple(denylisted_nodes), tuple(denylisted_ops))
    return prepared.quantize(calibration, config, precisions)
