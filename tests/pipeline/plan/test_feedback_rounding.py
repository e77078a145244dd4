"""The error-feedback rounding (GPTQ's lazy batches) in its block-as-rows layout gives the same bits as
the textbook (group, out, K) form written out below, column by column, on every kind of layer shape."""

from __future__ import annotations

import numpy as np
import pytest

from quantdebug.pipeline.plan import _adaround


def _textbook(target: _adaround.Target, upper: np.ndarray, aim: np.ndarray) -> np.ndarray:
    """GPTQ's lazy batches over columns of the (group, out, K) weights, as Frantar et al. write them."""
    lo, hi, free, frac = _adaround._candidates(target)
    k = upper.shape[-1]
    scale = np.broadcast_to(target.scale, lo.shape)
    zp = np.broadcast_to(target.zero_point, lo.shape)
    work = aim.copy()
    up = np.zeros(lo.shape, bool)
    block = _adaround.FEEDBACK_BLOCK
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        errors = np.empty((*lo.shape[:2], b1 - b0))
        for j in range(b0, b1):
            chosen = np.clip(np.round(work[:, :, j] / scale[:, :, j] + zp[:, :, j]), lo[:, :, j], hi[:, :, j])
            up[:, :, j] = chosen > lo[:, :, j]
            error = (work[:, :, j] - (chosen - zp[:, :, j]) * scale[:, :, j]) / upper[:, j, j][:, None]
            errors[:, :, j - b0] = error
            work[:, :, j + 1 : b1] -= error[:, :, None] * upper[:, j, j + 1 : b1][:, None, :]
        if b1 < k:
            work[:, :, b1:] -= np.matmul(errors, upper[:, b0:b1, b1:])
    return np.where(free, up, frac >= 0.5).astype(np.float64)


@pytest.mark.parametrize(("groups", "out", "k", "per_channel", "asymmetric"), [
    (1, 40, 300, True, False),  # three lazy blocks, the last one short
    (1, 300, 129, False, False),  # one column past a block
    (6, 1, 25, True, False),  # a depthwise 5x5 conv: one output per group
    (3, 5, 150, False, True),  # a grouped conv on uint8-style zero points
    (1, 7, 128, True, True),  # exactly one block
])  # fmt: skip
def test_feedback_rounding_matches_the_textbook_form(
    rng: np.random.Generator, groups: int, out: int, k: int, per_channel: bool, asymmetric: bool
) -> None:
    w = rng.standard_normal((groups, out, k)) * rng.uniform(0.01, 0.2, (groups, out, 1))
    if per_channel:
        scale = np.abs(w).max(axis=2, keepdims=True) / 127
    else:
        scale = np.full((1, 1, 1), np.abs(w).max() / 127)
    zp = np.round(rng.uniform(-20, 20, scale.shape)) if asymmetric else np.zeros_like(scale)
    q = np.clip(np.round(w / scale + zp), -128, 127)
    x = rng.standard_normal((3 * k, k)) * rng.uniform(0.1, 3.0, k)  # inputs of unequal scales: a real G
    target = _adaround.Target(
        node="layer", op_type="MatMul", x_name="x", weight=w, q=q.astype(np.int8), scale=scale, zero_point=zp,
        qmin=-128, qmax=127, q_init="q", q_dtype=np.dtype(np.int8), q_layout=lambda a: a,
        float_bias=None, bias_init=None, bias_scale=None,
    )  # fmt: skip
    target.G = np.stack([x.T @ x * rng.uniform(0.5, 2.0) for _ in range(groups)])
    target.count = 3 * k
    aim = w + 0.002 * rng.standard_normal(w.shape)
    got = _adaround.feedback_rounding(target, aim=aim)
    assert target.factor is not None
    expected = _textbook(target, target.factor[1], aim)
    np.testing.assert_array_equal(got, expected)
    free = _adaround._candidates(target)[2]
    assert 0 < got[free].mean() < 1  # both ways taken: the test sees real roundings
