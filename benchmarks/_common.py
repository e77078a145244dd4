"""Shared pieces of the benchmark harness: models, datasets, memory probes, timing helpers.

Nothing here imports TensorFlow at module level: the harness runs (with the TensorFlow
comparisons skipped) in any environment where quantdebug itself is importable.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = Path(os.environ.get("QD_BENCH_CACHE", HERE / ".cache"))

MNV3_SEED = 0  # Keras weights of MobileNetV3-Small: tf.keras.utils.set_random_seed(MNV3_SEED)
CAL_SEED = 1  # representative (calibration) samples
DEBUG_SEED = 2  # debug samples
IMAGE_SHAPE = (1, 224, 224, 3)  # MobileNetV3-Small, NHWC as Keras and tf2onnx give it
TINY_SHAPE = (1, 3, 32, 32)


# -- datasets ---------------------------------------------------------------------------------
def image_dataset(n: int, seed: int, shape: tuple[int, ...] = IMAGE_SHAPE) -> Callable[[], Iterator[list[np.ndarray]]]:
    """``n`` uniform [0, 255) float32 images, generated sample by sample (nothing held in memory).

    Sample ``i`` is the same for every tool and every run: its generator is seeded with (seed, i).
    """

    def samples() -> Iterator[list[np.ndarray]]:
        for i in range(n):
            rng = np.random.default_rng([seed, i])
            yield [rng.uniform(0.0, 255.0, shape).astype(np.float32)]

    return samples


def ocr_dataset(n: int, seed: int) -> Callable[[], Any]:
    from quantdebug import demo

    return demo.ocr_dataset(n, seed=seed)


def dataset_for(model: str, n: int, seed: int) -> Callable[[], Any]:
    if model == "ocr":
        return ocr_dataset(n, seed)
    if model == "tiny":
        return image_dataset(n, seed, TINY_SHAPE)
    return image_dataset(n, seed)


# -- models -----------------------------------------------------------------------------------
def mnv3_paths() -> dict[str, Path]:
    return {
        "weights": CACHE / f"mnv3s_seed{MNV3_SEED}.weights.h5",
        "onnx": CACHE / f"mnv3s_seed{MNV3_SEED}.onnx",
    }


def build_keras_mnv3(load_weights: bool = True) -> Any:
    """The Keras MobileNetV3-Small of the benchmark, with its fixed random weights."""
    import tensorflow as tf

    paths = mnv3_paths()
    tf.keras.utils.set_random_seed(MNV3_SEED)
    model = tf.keras.applications.MobileNetV3Small(weights=None, input_shape=IMAGE_SHAPE[1:])
    if load_weights and paths["weights"].is_file():
        model.load_weights(str(paths["weights"]))
    return model


def prepare_mnv3() -> dict[str, str]:
    """Build the Keras model once, save its weights, convert it with tf2onnx; cached in CACHE."""
    import logging

    paths = mnv3_paths()
    CACHE.mkdir(parents=True, exist_ok=True)
    if paths["weights"].is_file() and paths["onnx"].is_file():
        return {k: str(v) for k, v in paths.items()}
    import onnx
    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.CRITICAL)  # its transpose optimizer logs a traceback
    model = build_keras_mnv3(load_weights=False)
    model.save_weights(str(paths["weights"]))
    spec = (tf.TensorSpec((None, *IMAGE_SHAPE[1:]), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    onnx.save(proto, str(paths["onnx"]))
    return {k: str(v) for k, v in paths.items()}


def tiny_model(path: Path, blocks: int = 12, channels: int = 16) -> Path:
    """A small residual CNN in ONNX (about 6 nodes a block), for --quick runs without TensorFlow."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def weight(name: str, shape: tuple[int, ...], fan_in: int) -> str:
        inits.append(
            numpy_helper.from_array((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32), name)
        )
        return name

    def conv(name: str, x: str, cin: int, cout: int, k: int = 3) -> str:
        w = weight(f"{name}.weight", (cout, cin, k, k), cin * k * k)
        b = weight(f"{name}.bias", (cout,), cout)
        nodes.append(helper.make_node("Conv", [x, w, b], [f"{name}_out"], name=name, pads=[k // 2] * 4))
        return f"{name}_out"

    x = conv("stem", "input", 3, channels)
    nodes.append(helper.make_node("Relu", [x], ["stem_relu_out"], name="stem_relu"))
    x = "stem_relu_out"
    for i in range(blocks):
        y = conv(f"b{i}_c1", x, channels, channels)
        nodes.append(helper.make_node("Relu", [y], [f"b{i}_r1_out"], name=f"b{i}_r1"))
        y = conv(f"b{i}_c2", f"b{i}_r1_out", channels, channels)
        nodes.append(helper.make_node("Add", [x, y], [f"b{i}_add_out"], name=f"b{i}_add"))
        nodes.append(helper.make_node("Relu", [f"b{i}_add_out"], [f"b{i}_r2_out"], name=f"b{i}_r2"))
        x = f"b{i}_r2_out"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap_out"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap_out"], ["flat_out"], name="flat"))
    w = weight("fc.weight", (channels, 10), channels)
    b = weight("fc.bias", (10,), 10)
    nodes.append(helper.make_node("Gemm", ["flat_out", w, b], ["output"], name="fc"))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *TINY_SHAPE[1:]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def model_path(model: str) -> Path:
    """The float ONNX model the quantdebug side reads."""
    if model == "mnv3":
        return mnv3_paths()["onnx"]
    if model == "tiny":
        path = CACHE / "tiny.onnx"
        return path if path.is_file() else tiny_model(path)
    if model == "ocr":
        path = CACHE / "ppocrv4_rec_opset13.onnx"
        if not path.is_file():
            from quantdebug import demo

            CACHE.mkdir(parents=True, exist_ok=True)
            demo.save_rec_model(path)
        return path
    raise ValueError(f"unknown model {model!r}")


# -- memory -----------------------------------------------------------------------------------
class PeakRss:
    """Peak resident memory per phase of this process (Linux: VmHWM, reset through clear_refs).

    ``phase(name)`` records the peak since the previous call and resets it, so each phase's peak
    is its own. Without a resettable high-water mark, every phase reports the process peak so far.
    """

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self.resettable = self._reset()

    @staticmethod
    def _hwm_mb() -> float:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return True
        except OSError:
            return False

    def phase(self, name: str) -> float:
        peak = self._hwm_mb()
        self.peaks[name] = round(peak, 1)
        if self.resettable:
            self._reset()
        return peak

    @property
    def process_peak(self) -> float:
        return max(self.peaks.values()) if self.peaks else self._hwm_mb()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def loadavg() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=1, default=float))
