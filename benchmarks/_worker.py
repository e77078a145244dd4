"""One measurement in its own process, so that its peak memory is its own: ``_worker.py TASK JSON_ARGS OUT``.

Tasks (the orchestrator, run.py, decides which run and with what):
  prepare    build the Keras MobileNetV3-Small, save its weights, convert it with tf2onnx (TensorFlow)
  qd_suite   quantdebug timings, interleaved repeats: per-layer run, whole-model run, the float+quantized
             floor, the dataset alone; re-quantizing with a denylist; calibrate+quantize vs quantize
  qd_mem     quantdebug's debug run alone (calibration loaded from qd_suite), for its peak memory
  qd_flow_mem  the debugger's whole flow (calibrate, both modes, re-quantize), for the process's peak
  floor_mem  the float+quantized floor alone, for its peak memory
  tf_suite   TensorFlow Lite's QuantizationDebugger on the same Keras model: run(), selective re-quantization
  qdq_loss   onnxruntime's qdq_loss_debug flow on quantdebug's float and QDQ models
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    CACHE,
    CAL_SEED,
    DEBUG_SEED,
    PeakRss,
    build_keras_mnv3,
    dataset_for,
    image_dataset,
    loadavg,
    median,
    model_path,
    prepare_mnv3,
    timed,
    write_json,
)

warnings.filterwarnings("ignore")
PEAK = PeakRss()


def _artifacts(model: str) -> dict[str, Path]:
    return {
        "calibration": CACHE / f"{model}.calibration.json",
        "float": CACHE / f"{model}.float_preprocessed.onnx",
        "qdq": CACHE / f"{model}.qdq.onnx",
    }


def _batch_observer() -> dict[str, int]:
    """Record the largest batch the debugger ran (quantdebug falls back to one sample per run when
    stacking samples changes the results); observes only, changes nothing."""
    import importlib

    seen = {"max_batch": 0}
    for name in ("quantdebug.pipeline.run._run", "quantdebug._debugger"):  # where the run loop lives, by version
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        original = getattr(module, "batches", None)
        if original is None:
            continue

        def observed(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            for feed, n in _original(*args, **kwargs):
                seen["max_batch"] = max(seen["max_batch"], n)
                yield feed, n

        module.batches = observed  # type: ignore[attr-defined]
    return seen


def _stacked(dataset: Any, batch: int, free_batch: bool) -> Any:
    """Feeds of ``batch`` consecutive samples stacked on axis 0 (one at a time when not free)."""
    pending: list[list[np.ndarray]] = []
    for sample in dataset():
        if batch <= 1 or not free_batch:
            yield sample
            continue
        pending.append(sample)
        if len(pending) == batch:
            yield [np.concatenate(parts, axis=0) for parts in zip(*pending)]
            pending = []
    if pending:
        yield [np.concatenate(parts, axis=0) for parts in zip(*pending)]


def floor_run(float_path: Path, qdq: Any, dataset: Any, batch: int) -> float:
    """Plain onnxruntime: the float model and the quantized model, each once over the samples."""
    import onnxruntime as ort

    t0 = time.perf_counter()
    so = ort.SessionOptions()
    so.log_severity_level = 4
    sessions = [
        ort.InferenceSession(str(float_path), so, providers=["CPUExecutionProvider"]),
        ort.InferenceSession(qdq.SerializeToString(), so, providers=["CPUExecutionProvider"]),
    ]
    names = [i.name for i in sessions[0].get_inputs()]
    free = all(not isinstance(i.shape[0], int) for i in sessions[0].get_inputs())
    for feed in _stacked(dataset, batch, free):
        inputs = dict(zip(names, feed))
        for s in sessions:
            s.run(None, inputs)
    return time.perf_counter() - t0


def data_only(dataset: Any) -> float:
    t0 = time.perf_counter()
    for _ in dataset():
        pass
    return time.perf_counter() - t0


# -- tasks -------------------------------------------------------------------------------------
def task_prepare(args: dict[str, Any]) -> dict[str, Any]:
    return {"paths": prepare_mnv3()}


def task_qd_suite(args: dict[str, Any]) -> dict[str, Any]:
    import onnx

    import quantdebug as qd

    model, n, cal_n, repeats = args["model"], args["n"], args["cal"], args["repeats"]
    deny = args["deny_op"]
    path = model_path(model)
    rep = dataset_for(model, cal_n, CAL_SEED)
    debug = dataset_for(model, n, DEBUG_SEED)
    seen = _batch_observer()
    PEAK.phase("imports")
    out: dict[str, Any] = {"load_before": loadavg()}
    quiet = qd.DebugOptions(progress=False)
    t_construct, dbg = timed(lambda: qd.QuantizationDebugger(str(path), rep, debug_dataset=debug, debug_options=quiet))
    out["construct_s"] = t_construct
    out["layers"] = len(dbg.layer_names)
    out["float_nodes"] = len(dbg.float_model.graph.node)
    out["debug_nodes"] = len(dbg.get_debug_quantized_model().graph.node)
    art = _artifacts(model)
    assert dbg.calibration is not None
    dbg.calibration.save(art["calibration"])
    onnx.save(dbg.float_model, str(art["float"]))
    qdq = dbg.get_nondebug_quantized_model()
    onnx.save(qdq, str(art["qdq"]))
    minimal = bool(args.get("minimal"))  # issue 2 (PP-OCR): the debug run and its floor only
    whole = qd.QuantizationDebugger(
        str(path),
        debug_dataset=debug,
        calibration=dbg.calibration,
        debug_options=quiet.replace(verify_mode="whole_model"),
    )
    batch = quiet.batch_size
    times: dict[str, list[float]] = {
        k: [] for k in ("per_layer", "whole_model", "floor", "floor_b1", "data", "cpu", "floor_cpu")
    }
    for r in range(repeats):
        c0 = time.process_time()
        times["per_layer"].append(timed(dbg.run)[0])
        times["cpu"].append(time.process_time() - c0)
        per_layer_batch = seen["max_batch"]
        seen["max_batch"] = 0
        if not minimal:
            times["whole_model"].append(timed(whole.run)[0])
        c0 = time.process_time()
        times["floor"].append(floor_run(path, qdq, debug, batch))
        times["floor_cpu"].append(time.process_time() - c0)
        if per_layer_batch <= 1 or r == 0:  # the floor at the debugger's own batch when it could not stack
            times["floor_b1"].append(floor_run(path, qdq, debug, 1))
        times["data"].append(data_only(debug))
        gc.collect()
    out["debug_batch"] = per_layer_batch
    out["floor_batch"] = batch
    out["fidelity"] = dbg.fidelity
    out["samples_seen"] = dbg.samples_seen
    # re-quantizing with a new denylist, from the stored calibration
    requant: list[float] = []
    for r in range(0 if minimal else repeats):
        t0 = time.perf_counter()
        dbg.options = quiet.replace(denylisted_ops=[deny] if r % 2 == 0 else [deny, "Relu"])
        dbg.get_nondebug_quantized_model()
        requant.append(time.perf_counter() - t0)
    # issue 3: a full calibrate-and-quantize vs a quantize from the stored Calibration
    full: list[float] = []
    from_cal: list[float] = []
    cfg = qd.QuantConfig()
    for _ in range(0 if minimal else repeats):
        t0 = time.perf_counter()
        cal = qd.calibrate(str(path), rep, cfg, progress=False)
        qd.quantize(str(path), cal, cfg, denylisted_ops=[deny])
        full.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        qd.quantize(str(path), cal, cfg, denylisted_ops=[deny])
        from_cal.append(time.perf_counter() - t0)
    # issue 18: one fix candidate, the model qd.quantize writes from the stored Calibration for a
    # config that differs from the last by a few nodes' precision (as fix's search tries them)
    layers = list(dbg.layer_names)[:12]
    candidate: list[float] = []
    for r in range(repeats):
        chosen = layers[3 * r : 3 * r + 3] or layers[:3]
        t0 = time.perf_counter()
        qd.quantize(str(path), dbg.calibration, qd.QuantConfig(node_precision={n: "float" for n in chosen}))
        candidate.append(time.perf_counter() - t0)
    PEAK.phase("suite")
    out["fix_candidate_s"] = median(candidate)
    out["fix_candidate_times"] = candidate
    out.update({f"{k}_s": median(v) for k, v in times.items()})
    out["run_cpu_s"] = out.pop("cpu_s")
    out["times"] = times
    out.update(
        requant_s=median(requant),
        requant_times=requant,
        calibrate_quantize_s=median(full),
        quantize_from_calibration_s=median(from_cal),
        full_times=full,
        from_cal_times=from_cal,
        load_after=loadavg(),
    )
    return out


def task_qd_mem(args: dict[str, Any]) -> dict[str, Any]:
    import quantdebug as qd

    model, n = args["model"], args["n"]
    path = model_path(model)
    debug = dataset_for(model, n, DEBUG_SEED)
    seen = _batch_observer()
    PEAK.phase("imports")
    cal = qd.Calibration.load(_artifacts(model)["calibration"])
    opts = qd.DebugOptions(progress=False, verify_mode=args.get("mode", "per_layer"))
    t_construct, dbg = timed(
        lambda: qd.QuantizationDebugger(str(path), debug_dataset=debug, calibration=cal, debug_options=opts)
    )
    PEAK.phase("construct")
    t_run, _ = timed(dbg.run)
    PEAK.phase("run")
    return {"construct_s": t_construct, "run_s": t_run, "debug_batch": seen["max_batch"], "load_after": loadavg()}


def task_qd_flow_mem(args: dict[str, Any]) -> dict[str, Any]:
    """The debugger's whole flow in one process, for its peak: prepare and calibrate, run per-layer and
    whole-model, re-quantize with a denylist (what TensorFlow's debugger process does in tf_suite)."""
    import quantdebug as qd

    model, n, cal_n = args["model"], args["n"], args["cal"]
    path = model_path(model)
    rep = dataset_for(model, cal_n, CAL_SEED)
    debug = dataset_for(model, n, DEBUG_SEED)
    PEAK.phase("imports")
    quiet = qd.DebugOptions(progress=False)
    dbg = qd.QuantizationDebugger(str(path), rep, debug_dataset=debug, debug_options=quiet)
    PEAK.phase("construct")
    dbg.run()
    PEAK.phase("run")
    dbg.options = quiet.replace(verify_mode="whole_model")
    dbg.run()
    PEAK.phase("whole_model")
    dbg.options = quiet.replace(denylisted_ops=[args["deny_op"]])
    dbg.get_nondebug_quantized_model()
    PEAK.phase("requant")
    return {"load_after": loadavg()}


def task_floor_mem(args: dict[str, Any]) -> dict[str, Any]:
    import onnx

    model, n = args["model"], args["n"]
    qdq = onnx.load(str(_artifacts(model)["qdq"]))
    PEAK.phase("imports")
    t = floor_run(model_path(model), qdq, dataset_for(model, n, DEBUG_SEED), args.get("batch", 16))
    PEAK.phase("run")
    return {"run_s": t, "load_after": loadavg()}


def task_tf_suite(args: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    n, cal_n, repeats, deny = args["n"], args["cal"], args["repeats"], args["deny_op_tf"]
    keras_model = build_keras_mnv3()
    rep = image_dataset(cal_n, CAL_SEED)
    debug = image_dataset(n, DEBUG_SEED)

    def converter() -> Any:
        conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        return conv

    PEAK.phase("imports")
    out: dict[str, Any] = {"load_before": loadavg(), "tf_version": tf.__version__}
    t_construct, dbg = timed(
        lambda: tf.lite.experimental.QuantizationDebugger(converter=converter(), debug_dataset=debug)
    )
    out["construct_s"] = t_construct
    PEAK.phase("construct")
    runs, cpu = [], []
    for _ in range(repeats):
        c0 = time.process_time()
        runs.append(timed(dbg.run)[0])
        cpu.append(time.process_time() - c0)
    out["layers"] = len(dbg.layer_statistics)
    out["run_cpu_s"] = median(cpu)
    PEAK.phase("run")
    # TensorFlow Lite's own floor: the float and the quantized flatbuffers, each once over the samples
    float_tflite = tf.lite.TFLiteConverter.from_keras_model(keras_model).convert()
    int8_tflite = dbg.get_nondebug_quantized_model()
    floors = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for content in (float_tflite, int8_tflite):
            interp = tf.lite.Interpreter(model_content=content)
            interp.allocate_tensors()
            index = interp.get_input_details()[0]["index"]
            for (x,) in debug():
                interp.set_tensor(index, x)
                interp.invoke()
        floors.append(time.perf_counter() - t0)
    out["tflite_floor_s"] = median(floors)
    PEAK.phase("tflite_floor")
    requant: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=[deny])
        selective = tf.lite.experimental.QuantizationDebugger(
            converter=converter(), debug_dataset=debug, debug_options=opts
        )
        selective.get_nondebug_quantized_model()
        requant.append(time.perf_counter() - t0)
        del selective
        gc.collect()
    PEAK.phase("requant")
    out.update(
        run_s=median(runs), run_times=runs, requant_s=median(requant), requant_times=requant, load_after=loadavg()
    )
    return out


def _available_mb() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("inf")


def task_qdq_loss(args: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    model, n = args["model"], args["n"]
    art = _artifacts(model)
    debug = dataset_for(model, n, DEBUG_SEED)
    tmp = CACHE / "qdq_loss"
    tmp.mkdir(parents=True, exist_ok=True)
    aug_float, aug_qdq = tmp / f"{model}.float.aug.onnx", tmp / f"{model}.qdq.aug.onnx"
    input_name = ort.InferenceSession(str(art["float"]), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self, limit: int | None = None) -> None:
            self.it = iter(debug())
            self.left = limit

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.left is not None:
                if self.left == 0:
                    return None
                self.left -= 1
            sample = next(self.it, None)
            return None if sample is None else {input_name: sample[0]}

    PEAK.phase("imports")
    t0 = time.perf_counter()
    modify_model_output_intermediate_tensors(str(art["float"]), str(aug_float))
    modify_model_output_intermediate_tensors(str(art["qdq"]), str(aug_qdq))
    # everything qdq_loss_debug collects stays in memory: estimate it from one sample first
    per_sample = 0
    for aug in (aug_float, aug_qdq):
        acts = collect_activations(str(aug), Reader(1))
        per_sample += sum(a.nbytes for values in acts.values() for a in values)
        del acts
    need_mb = per_sample * n / 2**20
    out: dict[str, Any] = {"per_sample_mb": per_sample / 2**20, "estimated_activations_mb": need_mb}
    avail = _available_mb()
    if need_mb > 0.6 * avail:
        out["skipped"] = (
            f"qdq_loss_debug keeps every intermediate tensor of both models for every sample: "
            f"{per_sample / 2**20:.0f} MB a sample, about {need_mb / 1024:.1f} GB for {n} samples, "
            f"more than 60% of the {avail / 1024:.1f} GB available"
        )
        return out
    float_acts = collect_activations(str(aug_float), Reader())
    qdq_acts = collect_activations(str(aug_qdq), Reader())
    matching = create_activation_matching(qdq_acts, float_acts)
    errors = compute_activation_error(matching)
    out["run_s"] = time.perf_counter() - t0
    out["tensors_compared"] = len(errors)
    PEAK.phase("run")
    out["load_after"] = loadavg()
    return out


TASKS = {
    "prepare": task_prepare,
    "qd_suite": task_qd_suite,
    "qd_mem": task_qd_mem,
    "qd_flow_mem": task_qd_flow_mem,
    "floor_mem": task_floor_mem,
    "tf_suite": task_tf_suite,
    "qdq_loss": task_qdq_loss,
}


def main() -> None:
    task, args, out_path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    result = TASKS[task](args)
    result["peak_rss_mb"] = dict(PEAK.peaks)
    result["process_peak_mb"] = round(PEAK.process_peak, 1)
    result["peak_resettable"] = PEAK.resettable
    write_json(out_path, result)


if __name__ == "__main__":
    main()
