"""``quantdebug fix``: search for the fewest changes that meet a quality target, and write the fixed model."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click

import quantdebug as qd
from quantdebug.cli._common import common_options, fail, load_model, settings
from quantdebug.cli._options import (
    DataArgs,
    QuantArgs,
    calibrate_or_load,
    data_options,
    open_dataset,
    quant_options,
    split_names,
)
from quantdebug.cli._report import write_report
from quantdebug.data import load_callable
from quantdebug.fix import DEFAULT_LEVERS, LEVERS, read_trace
from quantdebug.pipeline.results import Statistics
from quantdebug.support import write_text


def denylisted(quant: QuantArgs) -> qd.QuantConfig:
    """The config with the denylists as its last "float" rules (as the debugger appends them): every
    candidate the search tries keeps those nodes in float, and the fixed config records them."""
    names = (*quant.denylisted_nodes, *(f"op:{op}" for op in quant.denylisted_ops))
    if not names:
        return quant.config
    rules = (*quant.config.precision_rules, *((name, "float") for name in names))
    return dataclasses.replace(quant.config, node_precision=rules)


def _eval_function(spec: str | None) -> Any:
    if spec is None:
        return None
    return load_callable(spec, what="--eval")


@click.command(short_help="Find the fewest changes (int16, float, ...) that meet a target.")
@click.argument("model", metavar="MODEL.onnx")
@data_options(required=False)
@quant_options
@click.option("--target", type=float, metavar="Q", help="Absolute quality target (in the eval function's unit).")
@click.option("--max-drop", type=click.FloatRange(min=0.0), metavar="D", help="Allowed drop from the float quality.")
@click.option(
    "--eval",
    "eval_spec",
    metavar="module:function",
    help="eval_fn(session) -> quality on your own data; default: output SQNR (dB) vs float, target 30 dB.",
)
@click.option("--lower-is-better", is_flag=True, help="The eval function is an error rate (lower is better).")
@click.option(
    "--levers",
    default=",".join(DEFAULT_LEVERS),
    show_default=True,
    metavar="L,L",
    help="Changes the search may make, of: " + ", ".join(LEVERS) + ".",
)
@click.option(
    "--max-evals", type=click.IntRange(min=2), metavar="N", help="Budget of evaluations (default 2*log2(L)+10)."
)
@click.option("--trace", "trace_path", metavar="TRACE.json", help="Save the search trace here as it goes.")
@click.option("--resume", metavar="TRACE.json", help="Continue an interrupted search from its trace.")
@click.option("--output", "-o", required=True, metavar="FIXED.onnx", help="Where to write the fixed model.")
@click.option("--report", "report_path", metavar="report.html", help="Also write an HTML report of the search.")
@common_options
def fix(
    model: str,
    data: DataArgs | None,
    quant: QuantArgs,
    target: float | None,
    max_drop: float | None,
    eval_spec: str | None,
    lower_is_better: bool,
    levers: str,
    max_evals: int | None,
    trace_path: str | None,
    resume: str | None,
    output: str,
    report_path: str | None,
) -> None:
    """Search for the fewest named changes that make the quantized MODEL meet a quality target.

    Writes FIXED.onnx, and beside it FIXED.fix.json: the changes node by node,
    the qualities, the whole search trace, a QuantConfig that reproduces the
    model and the same fix as onnxruntime quantize_static settings.
    """
    if data is None:
        fail("fix needs --data (debug samples; also used to calibrate unless --calibration is given)", code=2)
    eval_fn = _eval_function(eval_spec)  # before any work: a typo in --eval must not wait for calibration
    float_model = load_model(model)
    calibration, dataset = calibrate_or_load(float_model, data, quant.calibration_path, "fix")
    if dataset is None:
        dataset = open_dataset(data, float_model)
    result = qd.fix(
        float_model,
        calibration=calibration,
        debug_dataset=dataset,
        quant_config=denylisted(quant),
        eval_fn=eval_fn,
        higher_is_better=not lower_is_better,
        target=target,
        max_drop=max_drop,
        levers=split_names((levers,)),
        max_evals=max_evals,
        trace_path=trace_path,
        resume=resume,
        verbose=not settings().quiet,
    )
    result.save_model(output)
    report = Path(output).with_suffix(".fix.json")
    write_text(
        report,
        json.dumps(
            {
                "changes": result.changes,
                "node_precision": result.node_precision,
                "met_target": result.met_target,
                "message": result.message,
                "config": result.config.to_dict(),
                "onnxruntime": result.ort_settings,
                **result.trace_dict(),
            },
            indent=1,
            default=str,
        ),
    )
    click.echo(result.summary())
    click.echo(f"wrote {output} and {report}")
    if report_path is not None:
        # no debug run here, so the report holds the search alone (no per-layer statistics)
        searched = Statistics(layers=[], metric_names=[], extras={"fix": read_trace(report)})
        write_report(searched, Path(report_path), title=f"quantdebug fix: {Path(model).name}")
    if not result.met_target:
        sys.exit(3)
