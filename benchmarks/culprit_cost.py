#!/usr/bin/env python3
"""What measuring the culprits costs, as a ratio to one debug pass over the same samples (issue 15, point 2).

    python benchmarks/culprit_cost.py                    # a conv stack built in code, depth 8/16/32
    python benchmarks/culprit_cost.py --model ocr        # the demo's PP-OCRv4 recogniser (slow: ~600 runs)

Prints, per model: L (switchable layers), the switchable-graph runs ``culprits()`` made, its seconds, the
seconds of one ``debugger.run()`` on the same samples (the debug graph: quantized model plus float
twins), and their ratio. Times are wall-clock on whatever the machine is doing: compare ratios.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import quantdebug as qd


def conv_stack(depth: int, channels: int = 16, size: int = 32, seed: int = 0) -> onnx.ModelProto:
    """``depth`` 3x3 Conv + Relu layers on a [N, channels, size, size] input."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "input"
    for i in range(depth):
        w = rng.normal(0, np.sqrt(2 / (9 * channels)), (channels, channels, 3, 3)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(channels, np.float32), f"b{i}")]
        nodes += [
            helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        x = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "conv_stack",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def random_data(model: onnx.ModelProto, n: int, seed: int = 1) -> Callable[[], Iterator[list[np.ndarray]]]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = [1] + [d.dim_value for d in dims[1:]]

    def samples() -> Iterator[list[np.ndarray]]:
        rng = np.random.default_rng(seed)
        for _ in range(n):
            yield [rng.normal(0, 1, shape).astype(np.float32)]

    return samples


def measure(name: str, model: Any, calibration_data: Any, debug_data: Any, samples: int) -> dict[str, Any]:
    debugger = qd.QuantizationDebugger(
        model, calibration_data, debug_dataset=debug_data, debug_options=qd.DebugOptions(progress=False)
    )
    t = time.perf_counter()
    debugger.run()
    debug_s = time.perf_counter() - t
    t = time.perf_counter()
    frame = debugger.culprits(samples=samples)
    culprits_s = time.perf_counter() - t
    row = {
        "model": name,
        "layers": len(frame),
        "runs": frame.attrs["runs"],
        "culprits_s": culprits_s,
        "debug_pass_s": debug_s,
        "ratio": culprits_s / debug_s,
    }
    print(
        f"{name:<14} L={row['layers']:>4} runs={row['runs']:>5} culprits {culprits_s:8.2f} s  "
        f"one debug pass {debug_s:7.2f} s  ratio {row['ratio']:7.1f}",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["conv", "ocr"], default="conv")
    parser.add_argument("--samples", type=int, default=4, help="debug samples, all of them used by culprits()")
    args = parser.parse_args()
    if args.model == "ocr":
        from quantdebug import demo  # optional dependency: the demo extra

        debug = demo.ocr_dataset(args.samples, seed=2)
        measure("ocr", str(demo.rec_model_path()), demo.ocr_dataset(8, seed=demo.CALIB_SEED), debug, args.samples)
        return
    for depth in (8, 16, 32):
        model = conv_stack(depth)
        measure(f"conv x{depth}", model, random_data(model, 8, seed=0), random_data(model, args.samples), args.samples)


if __name__ == "__main__":
    main()
