#!/usr/bin/env python3
"""What one fix candidate costs with onnxruntime's quantizer plain and indexed, side by side (issue 18).

    python benchmarks/candidate_cost.py                  # the PP-OCRv4 recogniser and a generated model
    python benchmarks/candidate_cost.py --model generated --repeats 9

A candidate is the QDQ model for a config that leaves three nodes in float, quantized from a stored
Calibration, as fix's search makes them. Each repeat times, interleaved in one process, the plain
``quantize_with_ranges(..., indexed=False)``, the indexed one, and ``qd.quantize`` end to end (indexed,
as benchmarks/_worker.py times the candidate row), with the node choice moving on each repeat; a first
untimed call warms the prepared-model cache. Prints medians of wall and CPU (process) time, and
whether the plain and the indexed bytes were equal on every repeat.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

import quantdebug as qd
from quantdebug.pipeline.plan import default_op_types, quantize_with_ranges
from quantdebug.pipeline.prepare import prepared_model


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def generated(blocks: int = 120, channels: int = 8, size: int = 8, seed: int = 0) -> onnx.ModelProto:
    """Residual blocks (Conv -> Relu -> Conv -> Add -> Relu) on a [N, channels, size, size] input."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "input"

    def conv(name: str, src: str) -> str:
        w = rng.normal(0, np.sqrt(2 / (9 * channels)), (channels, channels, 3, 3)).astype(np.float32)
        inits.extend(
            [
                numpy_helper.from_array(w, f"{name}.w"),
                numpy_helper.from_array(rng.normal(0, 0.1, channels).astype(np.float32), f"{name}.b"),
            ]
        )
        nodes.append(
            helper.make_node("Conv", [src, f"{name}.w", f"{name}.b"], [f"{name}_out"], name=name, pads=[1] * 4)
        )
        return f"{name}_out"

    for i in range(blocks):
        h = conv(f"b{i}_conv1", x)
        nodes.append(helper.make_node("Relu", [h], [f"b{i}_relu1_out"], name=f"b{i}_relu1"))
        h = conv(f"b{i}_conv2", f"b{i}_relu1_out")
        nodes.append(helper.make_node("Add", [x, h], [f"b{i}_add_out"], name=f"b{i}_add"))
        nodes.append(helper.make_node("Relu", [f"b{i}_add_out"], [f"b{i}_out"], name=f"b{i}_relu2"))
        x = f"b{i}_out"
    graph = helper.make_graph(
        nodes,
        "residual_stack",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def case(name: str) -> tuple[Any, Any]:
    """(model source, calibration samples) for ``name``."""
    if name == "ocr":
        from quantdebug import demo  # the demo's model and images only for this case

        return str(demo.rec_model_path()), demo.ocr_dataset(8, seed=demo.CALIB_SEED)
    model = generated()
    rng = np.random.default_rng(1)
    return model, [{"input": rng.normal(0, 1, (1, 8, 8, 8)).astype(np.float32)} for _ in range(8)]


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def measure(name: str, repeats: int) -> dict[str, Any]:
    source, samples = case(name)
    calibration = qd.calibrate(source, samples, qd.QuantConfig(), progress=False)
    prepared = prepared_model(source, qd.QuantConfig())
    ops = set(default_op_types())
    layers = [n.name for n in prepared.model.graph.node if n.op_type in ops][:12]
    qd.quantize(source, calibration, qd.QuantConfig(node_precision={n: "float" for n in layers[:3]}))  # warm
    times: dict[str, list[tuple[float, float]]] = {"plain": [], "indexed": [], "qd.quantize": []}
    equal = True
    for r in range(repeats):
        chosen = layers[3 * (r % 4) : 3 * (r % 4) + 3]
        config = qd.QuantConfig(node_precision={n: "float" for n in chosen})
        plan = prepared.plan(config, prepared.precisions(config))
        ranges = calibration.ranges(config)
        digests = []
        for label, indexed in (("plain", False), ("indexed", True)):
            model, wall, cpu = timed(quantize_with_ranges, prepared.model, ranges, config, plan, indexed=indexed)
            times[label].append((wall, cpu))
            digests.append(hashlib.sha256(model.SerializeToString(deterministic=True)).digest())
        equal &= digests[0] == digests[1]
        _, wall, cpu = timed(qd.quantize, source, calibration, config)
        times["qd.quantize"].append((wall, cpu))
    row: dict[str, Any] = {"model": name, "nodes": len(prepared.model.graph.node), "bytes_equal": equal}
    for label, pairs in times.items():
        row[label] = (statistics.median(w for w, _ in pairs), statistics.median(c for _, c in pairs))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["ocr", "generated", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    names = ["ocr", "generated"] if args.model == "both" else [args.model]
    print(f"CPU: {cpu_model()}; onnxruntime {onnxruntime.__version__}; median of {args.repeats}")
    print("model      nodes   plain wall/cpu s   indexed wall/cpu s   qd.quantize wall/cpu s  speedup(cpu)  same bytes")
    for name in names:
        row = measure(name, args.repeats)
        plain, fast, whole = row["plain"], row["indexed"], row["qd.quantize"]
        print(
            f"{row['model']:<10} {row['nodes']:>5}  {plain[0]:>8.3f}/{plain[1]:<8.3f} {fast[0]:>9.3f}/{fast[1]:<8.3f} "
            f"{whole[0]:>13.3f}/{whole[1]:<8.3f} {plain[1] / fast[1]:>11.1f}x  {row['bytes_equal']}"
        )


if __name__ == "__main__":
    main()
