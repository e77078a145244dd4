"""The weight levers of issue 14 on EfficientNet-Lite0, per-tensor int8 weights and activations.

Top-1 agreement with the float model on held-out crops of the example's photo, for plain
nearest rounding, bias correction, adaptive rounding, and both; every row stays fully int8
(no node out of int8). Two splits: the issue's (20 calibration crops, 68 evaluation crops) and
the fix benchmark's (32 calibration crops, seed 1; 64 evaluation crops, seed 3). Wall and CPU
time are of the quantization alone (the calibration pass is shared and timed once).

    python benchmarks/weight_levers.py                      # the issue's split, the float target (default)
    python benchmarks/weight_levers.py --split both --iterations 0 50
    python benchmarks/weight_levers.py --target layer --passes 2    # the layer target, refitted twice
    python benchmarks/weight_levers.py --only-combined        # the issue's bar: adaround + bias correction
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for extra in (ROOT / "src", ROOT / "examples", HERE):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from fix_real_models import machine  # noqa: E402

import quantdebug as qd  # noqa: E402
from quantdebug.runtime import make_session  # noqa: E402

SPLITS = {"issue": ((20, 1), (68, 3)), "fix": ((32, 1), (64, 3))}


def agreement(model: Any, crops: np.ndarray, reference: np.ndarray) -> float:
    session = make_session(model, what="candidate")
    name = session.get_inputs()[0].name
    logits = np.concatenate([session.run(None, {name: crops[i : i + 1]})[0] for i in range(len(crops))])
    return float(np.mean(logits.argmax(1) == reference))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=[*SPLITS, "both"], default="issue")
    parser.add_argument("--iterations", type=int, nargs="+", default=[qd.QuantConfig().adaround_iterations])
    parser.add_argument(
        "--passes", type=int, default=0, help="only the adaround + bias correction row, refitted this many passes"
    )
    parser.add_argument("--target", choices=["float", "layer"], default=qd.QuantConfig().adaround_target)
    parser.add_argument("--only-combined", action="store_true", help="only the adaround + bias correction row")
    args = parser.parse_args()
    base = qd.QuantConfig(adaround_target=args.target)

    import efficientnet_lite0_torch as example
    import torch

    from quantdebug.frontends import from_torch

    model = from_torch(example.load_model(), torch.from_numpy(example.images(1, seed=0)))
    print("| split | what | top-1 agreement | nodes out of int8 | wall s | CPU s |")
    print("|---|---|---|---|---|---|")
    for split in SPLITS if args.split == "both" else [args.split]:
        (n_cal, cal_seed), (n_eval, eval_seed) = SPLITS[split]
        cal = example.images(n_cal, seed=cal_seed)
        crops = example.images(n_eval, seed=eval_seed)
        reference = example.logits_of(model, crops).argmax(1)
        calibration = qd.calibrate(model, [cal[i : i + 1] for i in range(n_cal)], progress=False)
        rows: list[tuple[str, qd.QuantConfig]] = [
            ("nearest (onnxruntime)", qd.QuantConfig()),
            (f"bias correction, {args.target} target", base.replace(bias_correction=True, adaround_passes=1)),
        ]
        for it in args.iterations:
            one = base.replace(weight_rounding="adaround", adaround_iterations=it, adaround_passes=1)
            rows.append((f"adaround, {it} Adam steps, {args.target} target", one))
            rows.append(
                (
                    f"adaround, {it} Adam steps + bias correction, {args.target} target",
                    one.replace(bias_correction=True),
                )
            )
        if args.only_combined:
            rows = rows[-1:]
        if args.passes:
            combined = base.replace(weight_rounding="adaround", bias_correction=True, adaround_passes=args.passes)
            rows = [(f"adaround + bias correction, {args.target} target, {args.passes} passes", combined)]
        for what, config in rows:
            wall, cpu = time.perf_counter(), time.process_time()
            quantized = qd.quantize(model, calibration, config)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            quality = agreement(quantized, crops, reference)
            print(f"| {split} ({n_cal}/{n_eval}) | {what} | {quality:.3f} | 0 | {wall:.1f} | {cpu:.1f} |", flush=True)
    print(f"machine: {machine()}")  # after the table, so the load it names is the runs' own


if __name__ == "__main__":
    main()
