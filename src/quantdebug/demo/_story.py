"""The tutorial's story on a real model: int8 breaks the PP-OCRv4 recogniser, the debugger finds why.

quantize -> measure -> debug -> dump CSV -> pick suspects by rmse/scale -> selective quantization
-> measure again, printed as a short summary; every artifact is written to one output folder.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from quantdebug import QuantizationDebugger
from quantdebug.config import DebugOptions, QuantConfig
from quantdebug.demo._ocr import CALIB_SEED, make_eval_fn, ocr_dataset, rec_model_path, require_demo_packages
from quantdebug.report import save_html
from quantdebug.runtime import make_session
from quantdebug.support import write_bytes
from quantdebug.thresholds import FIRST_LAYERS, SUSPECT_RMSE_OVER_SCALE

DEBUG_SEED = 2


@dataclasses.dataclass
class DemoResult:
    layers: int
    suspects: list[str]
    float_quality: float
    int8_quality: float
    selective_quality: float
    per_channel_quality: float
    fixed_quality: float | None
    fix_changes: list[str]
    fix_evaluations: int
    out_dir: Path
    seconds: dict[str, float]


def run_demo(
    out_dir: str | Path = "quantdebug-demo",
    *,
    calibration_samples: int = 16,
    debug_samples: int = 8,
    eval_lines: int = 32,
    echo: Callable[[str], None] = print,
    progress: bool | None = None,
    with_fix: bool = True,
) -> DemoResult:
    """Run the whole story and return its numbers; ``echo`` receives the printed summary."""
    require_demo_packages()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    evaluate = make_eval_fn(n=eval_lines)
    options = DebugOptions(progress=progress)

    def quality(model: object) -> float:
        return evaluate(make_session(model, what="demo model"))  # type: ignore[arg-type]

    echo("quantdebug demo: PP-OCRv4 text recogniser (shipped in rapidocr-onnxruntime)")
    echo(f"  quality = character accuracy (1 - CER) on {eval_lines} rendered text lines of known text")
    t = time.perf_counter()
    debugger = QuantizationDebugger(
        str(rec_model_path()),
        ocr_dataset(calibration_samples, seed=CALIB_SEED),
        debug_dataset=ocr_dataset(debug_samples, seed=DEBUG_SEED),
        quant_config=QuantConfig(),
        debug_options=options,
    )
    seconds["calibrate+quantize"] = time.perf_counter() - t
    int8 = debugger.get_nondebug_quantized_model()
    write_bytes(out / "model_int8.onnx", int8.SerializeToString())
    float_q = quality(debugger.float_model)
    int8_q = quality(int8)
    echo(f"  1. float model                       {float_q:7.1%}")
    echo(f"  2. int8 (per-tensor, MinMax)         {int8_q:7.1%}   <- quantization broke it")

    t = time.perf_counter()
    debugger.run()
    seconds["debug run"] = time.perf_counter() - t
    stats = debugger.statistics(histograms=6)
    stats.save(out / "stats")
    rows = stats.layers
    suspects = stats.suspects(SUSPECT_RMSE_OVER_SCALE, first=FIRST_LAYERS)
    echo(
        f"  3. debugged {len(rows)} quantized layers on {debug_samples} samples in {seconds['debug run']:.1f} s"
        f" -> {out / 'stats' / 'layer_statistics.csv'}"
    )
    worst = sorted(rows, key=lambda r: r.rmse_over_scale, reverse=True)[:3]
    echo(
        f"  4. suspects (rmse/scale > {SUSPECT_RMSE_OVER_SCALE}, plus the first {FIRST_LAYERS} layers): "
        f"{len(suspects)}; worst: " + ", ".join(f"{r.node_name} ({r.op_name}) {r.rmse_over_scale:.2f}" for r in worst)
    )
    debugger.options = DebugOptions(denylisted_nodes=[r.tensor_name for r in suspects], progress=progress)
    selective = debugger.get_nondebug_quantized_model()
    write_bytes(out / "model_selective.onnx", selective.SerializeToString())
    selective_q = quality(selective)
    echo(f"  5. selective: {len(suspects)} of {len(rows)} layers in float  {selective_q:7.1%}")
    t = time.perf_counter()
    per_channel = QuantizationDebugger(
        str(rec_model_path()),
        calibration=debugger.calibration,
        debug_dataset=ocr_dataset(debug_samples, seed=DEBUG_SEED),
        quant_config=QuantConfig(per_channel=True),
        debug_options=options,
    ).get_nondebug_quantized_model()
    seconds["per-channel requantize"] = time.perf_counter() - t
    per_channel_q = quality(per_channel)
    echo(f"  6. all int8, per-channel weights     {per_channel_q:7.1%}   (same calibration, no float layers)")
    fixed_q: float | None = None
    changes: list[str] = []
    evaluations = 0
    if with_fix:
        t = time.perf_counter()
        result = debugger.fix(eval_fn=evaluate, max_drop=0.02)
        seconds["fix"] = time.perf_counter() - t
        result.save_model(out / "model_fixed.onnx")
        fixed_q, changes, evaluations = result.fixed_quality, result.changes, result.evaluations
        kinds = sorted({c.split(": ", 1)[1] for c in changes})
        echo(
            f"  7. fix: {len(changes)} named changes ({', '.join(kinds) or 'none'}), "
            f"{result.candidate.non_int8} nodes out of int8, {evaluations} evaluations, {seconds['fix']:.0f} s"
            f"  {fixed_q:7.1%}"
        )
        stats.extras["fix"] = result.trace_dict()
        stats.save(out / "stats")
    save_html(stats, out / "report.html", title="quantdebug demo: PP-OCRv4 recogniser")
    echo(f"  outputs: {out}/ (models, stats/layer_statistics.csv, stats/statistics.json, report.html)")
    return DemoResult(
        layers=len(rows),
        suspects=[r.node_name for r in suspects],
        float_quality=float_q,
        int8_quality=int8_q,
        selective_quality=selective_q,
        per_channel_quality=per_channel_q,
        fixed_quality=fixed_q,
        fix_changes=changes,
        fix_evaluations=evaluations,
        out_dir=out,
        seconds=seconds,
    )
