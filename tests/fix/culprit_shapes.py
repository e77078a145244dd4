"""The four failure shapes that rmse/scale misses, built in code, with data that shows them.

Each builder returns ``(model, dataset, culprit_node, reason)``: the dataset is a list of feeds
(batch 2 per sample, so the switchable graph runs them one by one, as the reference does) and
``culprit_node`` is the layer that breaks the model, for the ``reason`` the debugger should give.
Most end in a *decoy*: a MatMul whose per-tensor weight has one entry 10 times the others, so its
own error in quantization steps (rmse/scale) is large while its effect on the output is small.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from tests.models import _GraphBuilder, attention_mask_sentinel, input_feed

Shape = tuple[onnx.ModelProto, list[dict[str, np.ndarray]], str, str]
BATCH = 2


def _decoy(g: _GraphBuilder, x: str, n_in: int, n_out: int, name: str = "decoy") -> str:
    w = g.rng.normal(0.0, 1.0 / np.sqrt(n_in), size=(n_in, n_out)).astype(np.float32)
    w[0, 0] = 10.0 * float(np.max(np.abs(w)))
    return g.node("MatMul", [x, g.const(f"{name}.weight", w)], name, out="output")


def log_after_wide_matmul(rng: np.random.Generator, samples: int = 8) -> Shape:
    """A mel filterbank (MatMul) and an Add whose outputs reach ~1e10, feeding a float Log.

    int8 gives the Add's output a step of ~4e7, so every band below it becomes 0 and its Log -inf.
    """
    g = _GraphBuilder(rng, "log_after_wide_matmul", 17)
    x = g.input("power", ["N", 32])
    bank = rng.uniform(0.5, 1.5, size=(32, 8)).astype(np.float32) * np.logspace(0, 5, 8, dtype=np.float32)
    mel = g.node("MatMul", [x, g.const("mel.weight", bank)], "mel")
    mel = g.node("Add", [mel, g.const("mel_eps.value", np.array(1.0, np.float32))], "mel_eps")
    log = g.node("Log", [mel], "log")
    model = g.build([_decoy(g, log, 8, 4)])
    data = [{"power": (10.0 ** rng.uniform(0, 4, size=(BATCH, 32))).astype(np.float32)} for _ in range(samples)]
    return model, data, "mel_eps", "float_consumer"


def stft_magnitude(rng: np.random.Generator, samples: int = 8) -> Shape:
    """Conv (real and imaginary DFT bases), Pow, Add, Sqrt: the magnitude of a short-time Fourier transform.

    A tone far above the noise floor sets the Add's (power's) int8 step; the quiet bins round to 0
    and the Sqrt turns a small absolute error into a large relative one.
    """
    g = _GraphBuilder(rng, "stft_magnitude", 17)
    win, bins = 32, 16
    t = np.arange(win)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * t / win)
    k = np.arange(bins)[:, None]
    re = (np.cos(2 * np.pi * k * t / win) * hann).astype(np.float32).reshape(bins, 1, 1, win)
    im = (-np.sin(2 * np.pi * k * t / win) * hann).astype(np.float32).reshape(bins, 1, 1, win)
    x = g.input("audio", ["N", 1, 1, 256])
    conv = {"kernel_shape": [1, win], "strides": [1, win // 2]}
    r = g.node("Conv", [x, g.const("stft_re.weight", re)], "stft_re", **conv)
    i = g.node("Conv", [x, g.const("stft_im.weight", im)], "stft_im", **conv)
    two = g.const("square.exponent", np.array(2.0, np.float32))
    power = g.node("Add", [g.node("Pow", [r, two], "re_sq"), g.node("Pow", [i, "square.exponent"], "im_sq")], "power")
    mag = g.node("Sqrt", [power], "magnitude")
    model = g.build([g.node("Reshape", [mag, g.const("flat.shape", np.array([0, -1], np.int64))], "flat", "output")])
    tone = np.sin(2 * np.pi * 4 * np.arange(256) / win).astype(np.float32)
    data = [{"audio": (tone + 0.05 * rng.normal(size=(BATCH, 1, 1, 256))).astype(np.float32)} for _ in range(samples)]
    return model, data, "power", "float_consumer"


def softmax_mask(rng: np.random.Generator, samples: int = 8) -> Shape:
    """Attention whose Softmax input carries a -3.4e38 causal mask (tests/models.py)."""
    model = attention_mask_sentinel(rng)
    data = [input_feed(model, rng, batch=BATCH) for _ in range(samples)]
    return model, data, "mask_add", "sentinel"


def depthwise_spread(rng: np.random.Generator, samples: int = 8) -> Shape:
    """A depthwise Conv whose channel 0 has weights 1000x the others'; a float Div undoes it afterwards.

    One per-tensor weight scale for all channels rounds the weights of channels 1..7 to 0.
    """
    g = _GraphBuilder(rng, "depthwise_spread", 17)
    c = 8
    x = g.input("input", ["N", c, 8, 8])
    w = rng.normal(0.0, 1.0 / 3.0, size=(c, 1, 3, 3)).astype(np.float32)
    w[0] *= 1000.0
    y = g.node("Conv", [x, g.const("dw.weight", w)], "dw", kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=c)
    scale = np.ones((1, c, 1, 1), np.float32)
    scale[0, 0] = 1000.0
    y = g.node("Div", [y, g.const("undo.divisor", scale)], "undo")
    y = g.conv(y, "pointwise", c, c, k=1)
    y = g.node("Reshape", [y, g.const("flat.shape", np.array([0, -1], np.int64))], "flat")
    model = g.build([_decoy(g, y, c * 64, 4)])
    data = [{"input": rng.normal(size=(BATCH, c, 8, 8)).astype(np.float32)} for _ in range(samples)]
    return model, data, "dw", "channel_spread"


SHAPES: dict[str, Callable[[np.random.Generator], Shape]] = {
    "log_after_wide_matmul": log_after_wide_matmul,
    "stft_magnitude": stft_magnitude,
    "softmax_mask": softmax_mask,
    "depthwise_spread": depthwise_spread,
}
