"""MediaPipe's float face-landmark TFLite model, converted with from_tflite: quantize, debug, fix, measure.

Needs: pip install tensorflow tf2onnx && pip install --no-deps mediapipe==0.10.14 (only its .tflite files are used)
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

import quantdebug as qd
from quantdebug.frontends import as_seed_dataset, from_tflite
from quantdebug.runtime import make_session

FACE = (262.0, 235.0, 300.0)  # centre x, centre y and side of the face crop in the photo (pixels)
EYE_CORNERS = (33, 263)  # outer eye corners in MediaPipe's 468-point face mesh
SUSPECT_THRESHOLD = 0.7
FIRST_LAYERS = 1


def meta(model: Any, key: str) -> str:
    """What the frontend recorded about the conversion (batch, verification)."""
    return {p.key: p.value for p in model.metadata_props}[f"quantdebug.{key}"]


def model_path() -> Path:
    """face_landmark.tflite inside the mediapipe wheel, found without importing mediapipe."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("mediapipe is not installed: pip install --no-deps mediapipe==0.10.14")
    return Path(next(iter(spec.submodule_search_locations))) / "modules" / "face_landmark" / "face_landmark.tflite"


def face_crops(n: int, seed: int) -> np.ndarray:
    """``n`` jittered 192x192 face crops of Grace Hopper's portrait (shipped with matplotlib), NHWC in [0, 1]."""
    import matplotlib

    photo = Image.open(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")).convert("RGB")
    rng = np.random.default_rng(seed)
    out = np.empty((n, 192, 192, 3), np.float32)
    cx0, cy0, side0 = FACE
    for i in range(n):
        cx, cy = cx0 + rng.uniform(-20, 20), cy0 + rng.uniform(-20, 20)
        side = side0 * rng.uniform(0.85, 1.15)
        img = photo.rotate(rng.uniform(-15, 15), center=(cx, cy), resample=Image.BILINEAR)
        img = img.crop((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)).resize((192, 192), Image.BILINEAR)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
        out[i] = np.asarray(img, np.float32) / 255.0
    return out


def landmarks_of(model: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(landmarks [n, 468, 2] in crop pixels, face-presence probability [n])."""
    session = make_session(model, what="example model")
    name = session.get_inputs()[0].name
    marks, scores = [], []
    for i in range(len(x)):
        mesh, flag = session.run(None, {name: x[i : i + 1]})
        marks.append(mesh.reshape(468, 3)[:, :2])
        scores.append(1.0 / (1.0 + np.exp(-float(flag.reshape(-1)[0]))))
    return np.stack(marks), np.array(scores)


def quality(marks: np.ndarray, scores: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Landmark error against the float model, in % of the eye-corner distance (float: 0), and face score."""
    eyes = np.linalg.norm(ref[:, EYE_CORNERS[0]] - ref[:, EYE_CORNERS[1]], axis=1)
    error = np.linalg.norm(marks - ref, axis=2).mean(axis=1) / eyes
    return {
        "landmark_error": float(error.mean()),
        "worst_error": float(error.max()),
        "face_score": float(scores.mean()),
    }


def main(calibration: int = 32, debug: int = 8, evaluate: int = 32, echo: Any = print) -> dict[str, Any]:
    times: dict[str, float] = {}
    t = time.perf_counter()
    onnx_model = from_tflite(model_path(), samples=[face_crops(1, seed=0)])  # verified against the interpreter
    times["convert"] = time.perf_counter() - t
    echo(f"face_landmark.tflite converted: {meta(onnx_model, 'verification')}")

    t = time.perf_counter()
    debugger = qd.QuantizationDebugger(
        onnx_model,
        as_seed_dataset(face_crops(calibration, seed=1)),  # an [N, 192, 192, 3] array: N samples of batch 1
        debug_dataset=as_seed_dataset(face_crops(debug, seed=2)),
        quant_config=qd.QuantConfig(),
        debug_options=qd.DebugOptions(progress=False),
    )
    int8 = debugger.get_nondebug_quantized_model()
    debugger.run()
    times["calibrate+debug"] = time.perf_counter() - t
    stats = debugger.statistics()
    suspects = stats.suspects(SUSPECT_THRESHOLD, first=FIRST_LAYERS)
    worst = sorted(stats.layers, key=lambda r: r.rmse_over_scale, reverse=True)[:3]
    debugger.options = qd.DebugOptions(denylisted_nodes=[r.tensor_name for r in suspects], progress=False)
    fixed = debugger.get_nondebug_quantized_model()

    x = face_crops(evaluate, seed=3)
    ref, ref_scores = landmarks_of(debugger.float_model, x)
    results = {
        "float": quality(ref, ref_scores, ref),
        "int8": quality(*landmarks_of(int8, x), ref),
        "fixed": quality(*landmarks_of(fixed, x), ref),
    }
    echo(
        f"  {len(stats.layers)} quantized layers debugged; worst rmse/scale: "
        + ", ".join(f"{r.node_name} {r.rmse_over_scale:.2f}" for r in worst)
    )
    echo(f"  suspects (rmse/scale > {SUSPECT_THRESHOLD} + first {FIRST_LAYERS}): {len(suspects)} kept in float")
    echo(f"  quality on {evaluate} face crops   landmark error vs float (% eye distance): mean / worst   face score")
    labels = {"float": "float", "int8": "int8 (per-tensor)", "fixed": f"fixed ({len(suspects)} float)"}
    for name, q in results.items():
        echo(f"  {labels[name]:22s}  {q['landmark_error']:8.2%} / {q['worst_error']:7.2%}   {q['face_score']:.3f}")
    return {"quality": results, "layers": len(stats.layers), "suspects": len(suspects), "seconds": times}


if __name__ == "__main__":
    main()
    sys.exit(0)
