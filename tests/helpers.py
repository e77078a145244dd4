"""Test helpers shared by several test files: datasets from feeds, and the independent per-layer reference."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper, utils
from tests.reference import dequantize_ref, run_all_tensors, tflite_metrics


def dataset(feeds: Sequence[dict[str, np.ndarray]]) -> Callable[[], Iterable[dict[str, np.ndarray]]]:
    """A seed-style dataset over fixed feeds (a fresh iterator on each call)."""
    return lambda: iter([dict(f) for f in feeds])


def spy(monkeypatch: Any, owner: object, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The (args, kwargs) of every call of ``owner.name`` from now on; the real function still runs
    (a spy that counts, not a mock that answers)."""
    real = getattr(owner, name)
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, recorded)
    return calls


def session(model: onnx.ModelProto, level: str = "all") -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[level]
    so.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _init_array(model: onnx.ModelProto, name: str) -> np.ndarray:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    raise KeyError(name)


def raw_tensors(debugger: object, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every integer tensor the units read or write, fetched from the debug model in onnxruntime."""
    debug_model = debugger.get_debug_quantized_model()  # type: ignore[attr-defined]
    plan = debugger._plan  # type: ignore[attr-defined]
    wanted = []
    for unit in plan.units:
        wanted.append(unit.output)
        wanted.extend(b.source for b in unit.boundaries)
    present = {o.name for o in debug_model.graph.output}
    for name in dict.fromkeys(wanted):
        if name not in present:
            debug_model.graph.output.append(helper.make_empty_tensor_value_info(name))
    s = session(debug_model)
    full = dict(feed)
    full["__qd/rows_shape"] = np.array([1, -1], dtype=np.int64)
    names = list(dict.fromkeys(wanted))
    return dict(zip(names, s.run(names, full)))


def reference_pairs(debugger: object, feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, list[dict[str, object]]]:
    """Per layer and sample, computed a second way: the quantized tensor dequantized in numpy from the
    raw integers, and the float twin cut out of the float model with onnx.utils.Extractor and run in
    its own session (per-layer mode), or the float model's own tensor (whole-model mode)."""
    plan = debugger._plan  # type: ignore[attr-defined]
    float_model = debugger.float_model  # type: ignore[attr-defined]
    whole = debugger.options.verify_mode == "whole_model"  # type: ignore[attr-defined]
    optimized = plan.optimized
    extractor = utils.Extractor(float_model)
    out: dict[str, list[dict[str, object]]] = {u.float_tensor: [] for u in plan.units}
    twins = {}
    if not whole:
        for unit in plan.units:
            inputs = [b.float_tensor for b in unit.boundaries]
            twin = extractor.extract_model(inputs, [unit.float_tensor])
            twins[unit.float_tensor] = session(twin, level="disabled")
    for feed in feeds:
        raw = raw_tensors(debugger, feed)
        everything = run_all_tensors(float_model, feed) if whole else {}
        for unit in plan.units:
            q = unit.qparams
            zp = _init_array(optimized, q.zero_point) if q.zero_point else None
            quantized = dequantize_ref(raw[unit.output], _init_array(optimized, q.scale), zp, q.axis)
            if whole:
                reference = everything[unit.float_tensor]
            else:
                twin_feed = {}
                for b in unit.boundaries:
                    if b.qparams is None:
                        twin_feed[b.float_tensor] = raw[b.source]
                    else:
                        bzp = _init_array(optimized, b.qparams.zero_point) if b.qparams.zero_point else None
                        twin_feed[b.float_tensor] = dequantize_ref(
                            raw[b.source], _init_array(optimized, b.qparams.scale), bzp, b.qparams.axis
                        )
                names = [i.name for i in twins[unit.float_tensor].get_inputs()]
                (reference,) = twins[unit.float_tensor].run(None, {n: twin_feed[n] for n in names})
            info = plan.info[unit.output]
            runtime_zp = int(np.asarray(zp).reshape(-1)[0]) if zp is not None else 0
            integers = raw[unit.output].astype(np.int64) - runtime_zp + info.zero_point
            out[unit.float_tensor].append(
                {
                    "quantized": quantized,
                    "float": reference,
                    "int": integers,
                    "scale": info.scale,
                    "zp": info.zero_point,
                }
            )
    return out


def reference_statistics(debugger: object, feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """TFLite's default metrics in numpy float64 over ``reference_pairs``."""
    pairs = reference_pairs(debugger, feeds)
    return {
        name: tflite_metrics(
            [np.asarray(p["quantized"], np.float64) - np.asarray(p["float"], np.float64) for p in samples]
        )
        for name, samples in pairs.items()
    }


def assert_metrics_close(got: dict[str, float], want: dict[str, float], where: str) -> None:
    """Each metric within 0.2% of the reference; the mean error within 0.2% of the error's size.

    A mean error is a sum that cancels: batched runs (another GEMM blocking in onnxruntime) move
    a small mean by more than 0.2% of itself while moving nothing by more than 1e-4 of the rms error.
    """
    rms = float(np.sqrt(want.get("mean_squared_error", 0.0)))
    for metric, value in want.items():
        scale = max(abs(value), rms if metric == "mean_error" else 0.0, 1e-12)
        tol = 1e-9 if metric == "num_elements" else 2e-3 * scale + 1e-7
        assert abs(got[metric] - value) <= tol, f"{where} {metric}: got {got[metric]!r}, reference {value!r}"
