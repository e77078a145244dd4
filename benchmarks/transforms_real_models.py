"""What the float-model transforms give on real models, per-tensor int8, quantized by quantdebug.

- ``efficientnet_lite0``: plain vs cross-layer equalization, with ReLU6 pairs rewritten exactly
  (``Clip(0)`` + a float ``Min`` against the per-channel bound) or skipped; top-1 agreement with
  float on fix_real_models.py's 64 crops, calibrated on its 32.
- ``minilm``: plain vs SmoothQuant (alpha 0.5 and others); mean cosine to the float embeddings.

Each variant: transform the float model, check it still computes the same (max relative error
on the evaluation samples), calibrate it with ``qd.calibrate``, quantize it with ``qd.quantize``
(per-tensor weights and activations, MinMax), and measure. Ops the QDQ model runs in float (not
quantized by onnxruntime, such as the rewrite's Min) are counted.

    python benchmarks/transforms_real_models.py [--models efficientnet_lite0 minilm]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import fix_real_models as cases  # noqa: E402  (the same models, data and metrics as the fix benchmark)

import quantdebug as qd  # noqa: E402
from quantdebug.fix.levers import sentinel_clamps  # noqa: E402  (fix's own clamp rule)
from quantdebug.pipeline.plan import default_op_types  # noqa: E402
from quantdebug.pipeline.transform import equalize, fold_batchnorm, smooth_quant  # noqa: E402
from quantdebug.runtime import make_session  # noqa: E402

Config = qd.QuantConfig | Callable[[qd.Calibration], qd.QuantConfig]
Transform = Callable[[onnx.ModelProto, cases.Case], tuple[onnx.ModelProto, list[dict[str, Any]]]]
NOT_ACTIVATION_OPS = {"QuantizeLinear", "DequantizeLinear", "Shape", "Constant", "Gather", "Unsqueeze", "Concat"}


def float_ops(qdq: onnx.ModelProto) -> list[str]:
    """Nodes of the QDQ model onnxruntime's quantizer does not quantize (they run on float values)."""
    quantized = set(default_op_types()) | NOT_ACTIVATION_OPS
    return [n.name for n in qdq.graph.node if n.op_type not in quantized]


def max_relative_error(a: onnx.ModelProto, b: onnx.ModelProto, samples: Sequence[Any]) -> float:
    sa, sb = make_session(a), make_session(b)
    names = [i.name for i in sa.get_inputs()]
    worst = 0.0
    for sample in samples:
        feed = dict(zip(names, sample)) if not isinstance(sample, dict) else sample
        for x, y in zip(sa.run(None, feed), sb.run(None, feed)):
            worst = max(worst, float(np.max(np.abs(x - y)) / max(float(np.max(np.abs(x))), 1e-30)))
    return worst


def variant(
    case: cases.Case, name: str, transform: Transform | None, config: Config, echo: Callable[[str], None]
) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = case.model if isinstance(case.model, onnx.ModelProto) else onnx.load(case.model)
    records: list[dict[str, Any]] = []
    if transform is not None:
        model, records = transform(model, case)
    transform_s = time.perf_counter() - t0
    samples = list(case.representative())
    calibration = qd.calibrate(model, case.representative, progress=False)
    if not isinstance(config, qd.QuantConfig):
        config = config(calibration)
    qdq = qd.quantize(model, calibration, config)
    row = {
        "model": case.name,
        "variant": name,
        "calibration_method": config.calibration_method,
        "clamped_tensors": len(config.tensor_clamps),
        "quality": case.eval_fn(make_session(qdq)),
        "float_quality": case.eval_fn(make_session(model)),
        "max_relative_change_of_float_outputs": max_relative_error(case.model, model, samples[:8])
        if transform
        else 0.0,
        "applied": sum(r["status"] == "applied" for r in records),
        "skipped": sum(r["status"] == "skipped" for r in records),
        "float_ops_in_qdq": len(float_ops(qdq)),
        "transform_seconds": round(transform_s, 2),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    echo(json.dumps(row))
    return row


def _cle(clip: str) -> Transform:
    def run(model: onnx.ModelProto, case: cases.Case) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
        folded, _ = fold_batchnorm(model)
        return equalize(folded, clip=clip)

    return run


def _smooth(alpha: float) -> Transform:
    def run(model: onnx.ModelProto, case: cases.Case) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
        return smooth_quant(model, case.representative(), alpha)

    return run


MINMAX = qd.QuantConfig(per_channel=False)


def clamped(calibration: qd.Calibration, per_channel: bool = False) -> qd.QuantConfig:
    """MinMax with fix's sentinel clamps: MiniLM's plain int8 is broken first by the attention
    mask's float32-minimum range, which hides what SmoothQuant does to the MatMuls."""
    clamps = sentinel_clamps(calibration, list(calibration.stats))
    return qd.QuantConfig(per_channel=per_channel, tensor_clamps=clamps)


def clamped_per_channel(calibration: qd.Calibration) -> qd.QuantConfig:
    return clamped(calibration, per_channel=True)


VARIANTS: dict[str, list[tuple[str, Transform | None, Config]]] = {
    "efficientnet_lite0": [
        ("plain", None, MINMAX),
        ("equalize, ReLU6 rewritten", _cle("rewrite"), MINMAX),
        ("equalize, ReLU6 pairs skipped", _cle("skip"), MINMAX),
        # the same through quantize's own stage: it folds, equalizes and re-calibrates the pre-processed model
        ("qd.quantize(QuantConfig(equalize=True))", None, qd.QuantConfig(per_channel=False, equalize=True)),
    ],
    "minilm": [
        ("plain", None, MINMAX),
        ("smooth_quant alpha 0.5", _smooth(0.5), MINMAX),
        ("plain, mask clamped", None, clamped),
        *((f"smooth_quant alpha {a}, mask clamped", _smooth(a), clamped) for a in (0.5, 0.8)),
        ("plain, mask clamped, per-channel weights", None, clamped_per_channel),
        ("smooth_quant alpha 0.5, mask clamped, per-channel weights", _smooth(0.5), clamped_per_channel),
    ],
}
BUILDERS = {"efficientnet_lite0": cases._efficientnet_lite0, "minilm": cases._minilm}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(BUILDERS), default=sorted(BUILDERS))
    parser.add_argument("--json", type=Path, help="write the rows here too")
    parser.add_argument("--only", nargs="+", type=int, help="run only these variants (0-based, in VARIANTS order)")
    args = parser.parse_args(argv)
    rows = []
    for name in args.models:
        case = BUILDERS[name]()
        chosen = [v for i, v in enumerate(VARIANTS[name]) if args.only is None or i in args.only]
        rows += [variant(case, label, transform, config, print) for label, transform, config in chosen]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
