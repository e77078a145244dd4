"""``quantdebug calibrate`` (save activation ranges) and ``quantdebug quantize`` (write the QDQ model)."""

from __future__ import annotations

import click

import quantdebug as qd
from quantdebug.cli._common import common_options, load_model, note, progress
from quantdebug.cli._options import (
    DataArgs,
    QuantArgs,
    calibrate_or_load,
    data_options,
    open_dataset,
    quant_options,
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
    quant: QuantArgs,
    output: str,
) -> None:
    """Quantize MODEL to a QDQ model that onnxruntime runs, leaving denylisted nodes in float.

    Give --data to calibrate, or --calibration with ranges from 'quantdebug calibrate'.
    """
    float_model = load_model(model)
    if quant.calibration_path is not None and data is not None:
        note("note: --data is not read; the ranges come from --calibration")
        data = None
    calibration, _ = calibrate_or_load(float_model, data, quant.calibration_path, "quantize")
    qd.quantize(
        float_model,
        calibration,
        quant.config,
        denylisted_nodes=quant.denylisted_nodes,
        denylisted_ops=quant.denylisted_ops,
        output_path=output,
    )
    note(f"wrote {output}")
