"""``quantdebug calibrate`` (save activation ranges) and ``quantdebug quantize`` (write the QDQ model)."""

from __future__ import annotations

import click

import quantdebug as qd
from quantdebug.cli._common import common_options, load_model, note, progress
from quantdebug.cli._options import (
    DataArgs,
    calibrate_or_load,
    data_options,
    open_dataset,
    quant_config,
    quant_options,
    split_names,
)


@click.command(short_help="Save activation ranges from representative data.")
@click.argument("model", metavar="MODEL.onnx")
@data_options(required=True)
@click.option("--output", "-o", required=True, metavar="CAL.json", help="Where to write the calibration (JSON).")
@common_options
def calibrate(model: str, data: DataArgs, output: str) -> None:
    """Read the representative data once and save the activation ranges.

    The calibration serves every later 'quantize' or 'debug' run of the same
    model (--calibration CAL.json), with any config or denylist.
    """
    float_model = load_model(model)
    dataset = open_dataset(data, float_model)
    note("calibrating ...")
    calibration = qd.calibrate(float_model, dataset, progress=progress())
    calibration.save(output)
    note(f"wrote {output} ({len(calibration.stats)} tensors, {calibration.num_samples} samples)")


@click.command(short_help="Write the quantized (QDQ) model.")
@click.argument("model", metavar="MODEL.onnx")
@data_options(required=False)
@quant_options
@click.option("--output", "-o", required=True, metavar="OUT.onnx", help="Where to write the quantized model.")
@common_options
def quantize(
    model: str,
    data: DataArgs | None,
    per_channel: bool,
    activation_type: str,
    weight_type: str,
    calibration_method: str,
    denylist_nodes: tuple[str, ...],
    denylist_ops: tuple[str, ...],
    calibration_path: str | None,
    output: str,
) -> None:
    """Quantize MODEL to a QDQ model that onnxruntime runs, leaving denylisted nodes in float.

    Give --data to calibrate, or --calibration with ranges from 'quantdebug calibrate'.
    """
    float_model = load_model(model)
    if calibration_path is not None and data is not None:
        note("note: --data is not read; the ranges come from --calibration")
        data = None
    calibration, _ = calibrate_or_load(float_model, data, calibration_path, "quantize")
    config = quant_config(per_channel, activation_type, weight_type, calibration_method)
    qd.quantize(
        float_model,
        calibration,
        config,
        denylisted_nodes=split_names(denylist_nodes),
        denylisted_ops=split_names(denylist_ops),
        output_path=output,
    )
    note(f"wrote {output}")
