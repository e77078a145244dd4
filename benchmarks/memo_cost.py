#!/usr/bin/env python3
"""What the memos of onnxruntime's weight quantization and shape inference save per fix candidate.

    python benchmarks/memo_cost.py                          # a synthetic MiniLM-size MatMul stack
    python benchmarks/memo_cost.py --model minilm           # all-MiniLM-L6-v2 (torch, transformers)
    python benchmarks/memo_cost.py --calls                  # one call of each memoized function, by size

Candidates of one float model differ in activation settings only. For a sequence of such configs
(per-tensor and per-channel weights, int8/uint8/symmetric activations, some nodes in float or
16 bits), each quantized in turn after two untimed passes over them all, interleaved in one
process: onnxruntime's plain quantizer (``quantize_with_ranges(..., indexed=False)``); the indexed
one on empty memos as a model's first quantize (no weight memo: the indexes' gain alone) and as its
second (the weights' answers computed and kept: the memo's one-time cost); and the indexed one on
the memos the earlier calls left (every later candidate). Prints the median wall time per call of
each, by kind of weights, and whether all four wrote the same bytes every time.

``--calls`` times ``compute_data_quant_params`` and ``quantize_nparray`` on one weight channel of
each size: onnxruntime's own, and a hit of the memo, whose break-even sizes set
``_ort_memo.LARGEST_PARAMS_DATA`` and ``LARGEST_INTEGERS_DATA``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
if str(HERE.parent / "src") not in sys.path:
    sys.path.insert(0, str(HERE.parent / "src"))

from candidate_cost import cpu_model  # noqa: E402

import quantdebug as qd  # noqa: E402
from quantdebug.pipeline.plan import _ort_memo, default_op_types, quantize_with_ranges  # noqa: E402
from quantdebug.pipeline.plan._ort_index import indexed_quantizer  # noqa: E402
from quantdebug.pipeline.prepare import prepared_model  # noqa: E402


def synthetic(blocks: int = 6, width: int = 384, hidden: int = 1536, seed: int = 0) -> onnx.ModelProto:
    """Feed-forward blocks of a MiniLM-size encoder on input[N, 16, width]: MatMul up, Relu, MatMul down,
    each with a bias, and a residual Add (the weights of all-MiniLM-L6-v2's six FFNs)."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "input"

    def linear(name: str, src: str, n_in: int, n_out: int) -> str:
        w = rng.normal(0, 1 / np.sqrt(n_in), (n_in, n_out)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"{name}.w"))
        inits.append(numpy_helper.from_array(rng.normal(0, 0.02, n_out).astype(np.float32), f"{name}.b"))
        nodes.append(helper.make_node("MatMul", [src, f"{name}.w"], [f"{name}_mm"], name=f"{name}_matmul"))
        nodes.append(helper.make_node("Add", [f"{name}_mm", f"{name}.b"], [f"{name}_out"], name=f"{name}_bias"))
        return f"{name}_out"

    for i in range(blocks):
        h = linear(f"b{i}_up", x, width, hidden)
        nodes.append(helper.make_node("Relu", [h], [f"b{i}_relu_out"], name=f"b{i}_relu"))
        h = linear(f"b{i}_down", f"b{i}_relu_out", hidden, width)
        nodes.append(helper.make_node("Add", [x, h], [f"b{i}_out"], name=f"b{i}_residual"))
        x = f"b{i}_out"
    graph = helper.make_graph(
        nodes,
        "ffn_stack",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 16, width])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def case(name: str) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    """(float model, calibration samples) for ``name``."""
    if name == "minilm":
        import fix_real_models  # torch and transformers, only for this model

        minilm = fix_real_models._minilm()
        return minilm.model, list(minilm.representative())[:8]  # type: ignore[return-value]
    rng = np.random.default_rng(1)
    return synthetic(), [{"input": rng.normal(0, 1, (1, 16, 384)).astype(np.float32)} for _ in range(8)]


def configs(layers: list[str], count: int) -> list[qd.QuantConfig]:
    """``count`` candidates that differ in activation settings only, per-tensor and per-channel in turn."""
    activations: list[dict[str, Any]] = [
        {},
        {"activation_type": "uint8"},
        {"symmetric_activations": True},
        {"node_precision": {n: "float" for n in layers[1:4]}},
        {"node_precision": {n: "int16" for n in layers[2:5]}},
    ]
    return [qd.QuantConfig(per_channel=bool(i % 2), **activations[(i // 2) % len(activations)]) for i in range(count)]


def timed(fn: Callable[[], onnx.ModelProto]) -> tuple[bytes, float]:
    start = time.perf_counter()
    model = fn()
    wall = time.perf_counter() - start
    return hashlib.sha256(model.SerializeToString(deterministic=True)).digest(), wall


@contextlib.contextmanager
def empty_memos(seen: onnx.ModelProto | None = None) -> Iterator[None]:
    """Fresh, empty memos while open, as if only ``seen`` had been quantized before; the kept ones back after."""
    kept = _ort_memo.weights, _ort_memo._models, _ort_memo._recent
    _ort_memo.weights, _ort_memo._models = _ort_memo._Memo(_ort_memo.MEMO_BYTES), collections.OrderedDict()
    _ort_memo._recent = collections.OrderedDict()
    if seen is not None:
        _ort_memo._seen_before(seen)
    try:
        yield
    finally:
        _ort_memo.weights, _ort_memo._models, _ort_memo._recent = kept


LABELS = ("plain", "first", "second", "kept")


def measure(name: str, count: int) -> dict[str, Any]:
    model, samples = case(name)
    calibration = qd.calibrate(model, samples, progress=False)
    ops = set(default_op_types())
    layers = [n.name for n in prepared_model(model).model.graph.node if n.op_type in ops]
    candidates = []
    for config in configs(layers, count):
        prepared = prepared_model(model, config)
        plan = prepared.plan(config, prepared.precisions(config))
        candidates.append((config, prepared.model, plan, calibration.ranges(config)))
    with indexed_quantizer() as run:
        assert run.active, "this onnxruntime is not the one the indexes were checked against"
    _ort_memo.clear()
    for _ in range(2):  # the memos as a fix run's earlier candidates leave them
        for config, float_model, plan, ranges in candidates:
            quantize_with_ranges(float_model, ranges, config, plan)
    times: dict[tuple[str, str], list[float]] = {}
    equal = True
    for config, float_model, plan, ranges in candidates:

        def quantize(indexed: bool, *, c: Any = config, m: Any = float_model, p: Any = plan, r: Any = ranges) -> Any:
            return quantize_with_ranges(m, r, c, p, indexed=indexed)

        kind = "per-channel" if config.per_channel else "per-tensor"
        digests = []
        for label in LABELS:
            # first: a model's first quantize (no weight memo); second: its weights' answers computed and kept
            memos = empty_memos(float_model if label == "second" else None)
            with memos if label in ("first", "second") else contextlib.nullcontext():
                digest, wall = timed(lambda: quantize(label != "plain"))  # noqa: B023 - called at once
            times.setdefault((kind, label), []).append(wall)
            digests.append(digest)
        equal &= len(set(digests)) == 1
    row: dict[str, Any] = {"model": name, "nodes": len(layers), "calls": count, "bytes_equal": equal}
    row["median_s"] = {f"{kind} {label}": statistics.median(walls) for (kind, label), walls in times.items()}
    return row


def per_call(fn: Callable[..., Any], args: tuple[Any, ...], n: int) -> float:
    """Microseconds per call of ``fn(*args)``, over ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn(*args)
    return (time.perf_counter() - start) / n * 1e6


def calls() -> None:
    """onnxruntime's compute_data_quant_params and quantize_nparray against a memo hit, by channel size."""
    from onnxruntime.quantization import quant_utils  # the module whose names the memo swaps

    rng = np.random.default_rng(0)
    int8 = TensorProto.INT8
    limits = _ort_memo.LARGEST_PARAMS_DATA, _ort_memo.LARGEST_INTEGERS_DATA
    _ort_memo.LARGEST_PARAMS_DATA = _ort_memo.LARGEST_INTEGERS_DATA = 2**30  # time hits past the limits too
    print("floats  bytes   scale: onnxruntime / hit us   integers: onnxruntime / hit us")
    try:
        with indexed_quantizer():
            for size in (64, 384, 1536, 2048, 4096, 8192, 16384):
                data = rng.normal(size=size).astype(np.float32)
                zero_point, scale = quant_utils.compute_data_quant_params(data, int8, True)
                # per channel onnxruntime passes numpy scalars
                q_args = (int8, data, scale.reshape(1)[0], zero_point.reshape(1)[0])
                n = 20000 if size <= 2048 else 4000
                own = per_call(_ort_memo.original.compute_data_quant_params, (data, int8, True), n)
                hit = per_call(quant_utils.compute_data_quant_params, (data, int8, True), n)
                own_q = per_call(_ort_memo.original.quantize_nparray, q_args, n)
                hit_q = per_call(quant_utils.quantize_nparray, q_args, n)
                print(f"{size:>6} {4 * size:>6}   {own:>10.1f} / {hit:<10.1f}     {own_q:>12.1f} / {hit_q:<10.1f}")
    finally:
        _ort_memo.LARGEST_PARAMS_DATA, _ort_memo.LARGEST_INTEGERS_DATA = limits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["synthetic", "minilm"], default="synthetic")
    parser.add_argument("--count", type=int, default=10, help="candidates quantized (default 10)")
    parser.add_argument("--calls", action="store_true", help="time single calls of the memoized functions")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; onnxruntime {onnxruntime.__version__}")
    if args.calls:
        calls()
        return
    row = measure(args.model, args.count)
    median = row["median_s"]
    print(f"{row['model']}: {row['nodes']} quantizable nodes, {row['calls']} candidates, median wall s per call")
    print("weights       plain  indexed: model's 1st   2nd (memo fills)   later (memo kept)   plain/later")
    for kind in ("per-tensor", "per-channel"):
        plain, first, second, kept = (median[f"{kind} {label}"] for label in LABELS)
        print(f"{kind:<12} {plain:>6.3f}   {first:>16.3f}   {second:>16.3f}   {kept:>17.3f}   {plain / kept:>10.1f}x")
    print(f"same bytes, all four every time: {row['bytes_equal']}")


if __name__ == "__main__":
    main()
