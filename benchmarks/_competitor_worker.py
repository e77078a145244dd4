"""One competing quantizer on one model, run inside the competitors' own environment.

Not a quantdebug module: it runs under ``benchmarks/.venv-competitors`` (AMD Quark, NNCF) or
``benchmarks/.venv-aimet`` (AIMET-ONNX), which ``benchmarks/setup_competitors.sh`` creates, and it
imports nothing of quantdebug. ``benchmarks/competitors.py`` calls it once per tool with the
benchmark's own float model and data, then scores the model it writes with the benchmark's own
``eval_fn`` in quantdebug's environment, so every row is measured by the same code on the same
onnxruntime. Settings shared by every tool: int8 activations (asymmetric, MinMax) and int8 weights
(symmetric, per-tensor), QDQ.

    python _competitor_worker.py --tool quark_adaround --model float.onnx --data data.npz \
        --out model.onnx --result result.json

``data.npz`` holds ``calib/<input>`` and ``eval/<input>`` (samples along the first axis, each
sample keeping its own batch axis of 1) and, for the tools that validate themselves
(``nncf_accuracy_control``), ``reference`` with the metric named by ``--metric``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

ADAROUND_ITERATIONS = 100  # what the issue measured Quark and AIMET with; their defaults (1000, 10000) cost 10-100x


def samples(data: Any, split: str, names: list[str]) -> list[dict[str, np.ndarray]]:
    stacked = {n: data[f"{split}/{n}"] for n in names}
    count = len(next(iter(stacked.values())))
    return [{n: stacked[n][i] for n in names} for i in range(count)]


class Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds (Quark uses it too)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self.it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.it, None)

    def rewind(self) -> None:
        self.it = iter(self.feeds)

    def reset(self) -> None:
        self.rewind()

    def __len__(self) -> int:
        return len(self.feeds)


def metric_fn(metric: str) -> Callable[[list[list[np.ndarray]], np.ndarray], float]:
    """The benchmark's metric over the first output, against the float model's reference for those samples."""

    def top1_agreement(outputs: list[list[np.ndarray]], reference: np.ndarray) -> float:
        got = np.concatenate([o[0] for o in outputs]).argmax(-1)
        return float(np.mean(got == reference))

    def mask_f1(outputs: list[list[np.ndarray]], reference: np.ndarray) -> float:
        got = np.stack([o[0] for o in outputs]) > 0.3
        want = reference.astype(bool)
        tp, fp, fn = np.sum(want & got), np.sum(~want & got), np.sum(want & ~got)
        return float(2 * tp / max(2 * tp + fp + fn, 1))

    def cosine(outputs: list[list[np.ndarray]], reference: np.ndarray) -> float:
        emb = np.concatenate([o[0] for o in outputs]).astype(np.float64)
        ref = reference.astype(np.float64)
        cos = np.sum(emb * ref, 1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1))
        return float(np.mean(cos))

    return {"top1_agreement": top1_agreement, "mask_f1": mask_f1, "cosine": cosine}[metric]


# -- AMD Quark ------------------------------------------------------------------------------------
def quark(tool: str, model: str, calib: list[dict[str, np.ndarray]], out: str) -> dict[str, Any]:
    from quark.onnx import AdaQuantConfig, AdaRoundConfig, CLEConfig, ModelQuantizer, QConfig
    from quark.onnx.quantization.config.spec import CalibMethod, Int8Spec, QLayerConfig

    activation = Int8Spec(symmetric=False, calibration_method=CalibMethod.MinMax)
    weight = Int8Spec(symmetric=True, calibration_method=CalibMethod.MinMax)
    algos = {
        "quark_minmax": [],
        "quark_cle": [CLEConfig()],
        "quark_adaround": [AdaRoundConfig(num_iterations=ADAROUND_ITERATIONS, batch_size=1)],
        "quark_adaquant": [AdaQuantConfig(num_iterations=ADAROUND_ITERATIONS, batch_size=1)],
    }[tool]
    config = QConfig(global_config=QLayerConfig(activation=activation, weight=weight), algo_config=algos)
    ModelQuantizer(config).quantize_model(model, out, Reader(calib))
    names = [type(a).__name__ for a in algos]
    return {"settings": f"QConfig A8 (asym, MinMax) W8 (sym, per-tensor), algorithms {names}"}


# -- NNCF -----------------------------------------------------------------------------------------
def nncf_tool(
    tool: str, model: str, calib: list[dict[str, np.ndarray]], evals: list[dict[str, np.ndarray]], args: Any, data: Any
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    proto = onnx.load(model)
    per_tensor = AdvancedQuantizationParameters(weights_quantization_params=QuantizationParameters(per_channel=False))
    calib_ds = nncf.Dataset(calib)
    if tool == "nncf_quantize":
        q = nncf.quantize(
            proto, calib_ds, subset_size=len(calib), fast_bias_correction=True, advanced_parameters=per_tensor
        )
        return q, {"settings": "nncf.quantize per-tensor weights, fast bias correction"}
    score, reference = metric_fn(args.metric), data["reference"]
    calls = [0]

    def validate(candidate: onnx.ModelProto, items: Any) -> float:
        # NNCF validates on subsets too: each item carries its index, so the reference rows match
        calls[0] += 1
        session = ort.InferenceSession(candidate.SerializeToString(), providers=["CPUExecutionProvider"])
        items = list(items)
        return score([session.run(None, feed) for feed, _ in items], reference[[i for _, i in items]])

    q = nncf.quantize_with_accuracy_control(
        proto,
        calib_ds,
        nncf.Dataset(list(zip(evals, range(len(evals)))), lambda item: item[0]),
        validate,
        max_drop=args.max_drop,
        subset_size=len(calib),
        fast_bias_correction=True,
        advanced_quantization_parameters=per_tensor,
    )
    return q, {"settings": f"quantize_with_accuracy_control max_drop {args.max_drop}", "evaluations": calls[0]}


# -- AIMET-ONNX -----------------------------------------------------------------------------------
def aimet(tool: str, model: str, calib: list[dict[str, np.ndarray]], out: str) -> dict[str, Any]:
    from aimet_onnx.quantsim import QuantizationSimModel

    proto = onnx.load(model)
    if tool == "aimet_cle":
        from aimet_onnx.cross_layer_equalization import equalize_model

        equalize_model(proto)
    # AIMET's default configuration quantizes weights per channel; the benchmark compares per-tensor
    config = {
        "defaults": {
            "ops": {"is_output_quantized": "True"},
            "params": {"is_quantized": "True", "is_symmetric": "True"},
            "per_channel_quantization": "False",
        },
        "params": {"bias": {"is_quantized": "False"}},
        "op_type": {},
        "supergroups": [],
        "model_input": {"is_input_quantized": "True"},
        "model_output": {},
    }
    config_path = os.path.abspath(out) + ".aimet_config.json"
    with open(config_path, "w") as f:
        json.dump(config, f)
    sim = QuantizationSimModel(proto, param_type="int8", activation_type="int8", config_file=config_path)

    if tool == "aimet_adaround":
        from aimet_onnx import apply_adaround

        apply_adaround(sim, calib, num_iterations=ADAROUND_ITERATIONS)
    sim.compute_encodings(calib)
    qdq = sim.to_onnx_qdq()
    onnx.save(qdq, out)
    return {"settings": f"QuantizationSimModel int8/int8, {tool}"}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tool", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--metric", default="top1_agreement")
    p.add_argument("--max-drop", type=float, default=0.05)
    args = p.parse_args()
    data = np.load(args.data, allow_pickle=False)
    names = [i.name for i in onnx.load(args.model, load_external_data=False).graph.input]
    calib, evals = samples(data, "calib", names), samples(data, "eval", names)
    t0, c0 = time.perf_counter(), time.process_time()
    info: dict[str, Any]
    if args.tool.startswith("quark_"):
        info = quark(args.tool, args.model, calib, args.out)
    elif args.tool.startswith("nncf_"):
        quantized, info = nncf_tool(args.tool, args.model, calib, evals, args, data)
        onnx.save(quantized, args.out)
    elif args.tool.startswith("aimet_"):
        info = aimet(args.tool, args.model, calib, args.out)
    else:
        raise SystemExit(f"unknown tool {args.tool!r}")
    info.update(wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.result)))
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(tmp, args.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
