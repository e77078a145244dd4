"""``quantdebug debug``: compare every quantized layer with float, save the statistics, print the summary."""

from __future__ import annotations

import json

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
from quantdebug.config import VERIFY_MODES
from quantdebug.fix import CULPRIT_SAMPLES, apply_suggestion, quantize_command
from quantdebug.report import MAX_HISTOGRAMS, debug_summary
from quantdebug.support import write_text
from quantdebug.thresholds import SUSPECT_RMSE_OVER_SCALE

SUGGESTED_CONFIG = "suggested_config.json"  # beside the statistics: the culprits' config, for quantize --config
MODES = [m.replace("_", "-") for m in VERIFY_MODES]  # spelled per-layer, whole-model on the command line


@click.command(short_help="Compare each quantized layer with float; save statistics.")
@click.argument("model", metavar="MODEL.onnx")
@data_options(required=True)
@click.option(
    "--quantized",
    metavar="Q.onnx",
    help="Debug this QDQ model (quantized elsewhere) instead of quantizing MODEL.",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default=MODES[0],
    show_default=True,
    help="per-layer: each layer gets float inputs; whole-model: errors accumulate as deployed.",
)
@quant_options
@click.option(
    "--output", "-o", required=True, metavar="STATS_DIR", help="Folder for layer_statistics.csv and statistics.json."
)
@click.option(
    "--top",
    type=click.IntRange(min=0),
    metavar="N",
    default=10,
    show_default=True,
    help="Rows in each summary table (0: all).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=0.0),
    metavar="X",
    default=SUSPECT_RMSE_OVER_SCALE,
    show_default=True,
    help="The tutorial's rule: rmse/scale above this is suspect (counted after the culprits).",
)
@click.option(
    "--culprit-samples",
    type=click.IntRange(min=0),
    metavar="N",
    default=CULPRIT_SAMPLES,
    show_default=True,
    help="Debug samples the culprits are measured on (about 2L runs for L layers; 0: skip them).",
)
@common_options
def debug(
    model: str,
    data: DataArgs,
    quantized: str | None,
    mode: str,
    quant: QuantArgs,
    output: str,
    top: int,
    threshold: float,
    culprit_samples: int,
) -> None:
    """Quantize MODEL, compare every quantized layer with its float twin, and save the statistics.

    Writes STATS_DIR/layer_statistics.csv (TensorFlow Lite's columns) and
    STATS_DIR/statistics.json (everything, with provenance), then prints the
    likely culprits (each layer's share of the output noise, why, and the change
    to try), a denylist drawn from them, their changes as one config (saved as
    STATS_DIR/suggested_config.json, for 'quantdebug quantize --config'), and
    TensorFlow Lite's view: the worst
    layers by rmse/scale, the layer's error in quantization steps (near 0.3 is
    rounding alone).
    """
    float_model = load_model(model)
    options = qd.DebugOptions(
        denylisted_nodes=quant.denylisted_nodes,
        denylisted_ops=quant.denylisted_ops,
        verify_mode=mode.replace("-", "_"),  # type: ignore[arg-type]
        progress=progress(),
    )
    if quantized is not None:
        debugger = qd.QuantizationDebugger(
            float_model,
            quantized_model=load_model(quantized),
            debug_dataset=open_dataset(data, float_model),
            debug_options=options,
        )
    else:
        calibration, dataset = calibrate_or_load(float_model, data, quant.calibration_path, "debug")
        assert dataset is not None
        debugger = qd.QuantizationDebugger(
            float_model,
            debug_dataset=dataset,
            quant_config=quant.config,
            debug_options=options,
            calibration=calibration,
        )
    note(f"debugging {len(debugger.layer_names)} layers ...")
    debugger.run()
    if culprit_samples:
        note("measuring each layer's effect on the outputs ...")
        debugger.culprits(samples=culprit_samples)
    statistics = debugger.statistics(histograms=MAX_HISTOGRAMS)
    folder = statistics.save(output)
    samples = getattr(debugger, "samples_seen", None)
    command = None
    suggestion = statistics.extras.get("culprits", {}).get("suggestion") or {}
    if suggestion.get("nodes"):  # the culprits' own changes, on top of this run's config, for 'quantdebug quantize'
        base = quant.config if quantized is None else qd.QuantConfig()
        path = folder / SUGGESTED_CONFIG
        write_text(path, json.dumps(apply_suggestion(base, suggestion["config"]).to_dict(), indent=1))
        command = quantize_command(str(path), model, data.spec)
    click.echo(debug_summary(statistics, folder, top=top, threshold=threshold, samples=samples, command=command))
