"""Property tests of the float-model transforms on random chains: BatchNorm folding, cross-layer
equalization and SmoothQuant keep the float function (1e-5 of the output's scale) over shapes,
groups, activations and opsets 11..21, keep every user node's name, and change only what they
record as applied."""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.pipeline.transform.checks import assert_same_function, const
from tests.random_chains import Chain, random_chains

from quantdebug.pipeline.transform import equalize, fold_batchnorm, smooth_quant

EXAMPLES = int(os.environ.get("QUANTDEBUG_PROPERTY_EXAMPLES", "25"))  # raise it to hunt for bugs locally
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(chain=random_chains(), clip=st.sampled_from(["rewrite", "skip"]))
def test_fold_and_equalize_keep_the_float_function(chain: Chain, clip: str) -> None:
    folded, bns = fold_batchnorm(chain.model)
    assert_same_function(chain.model, folded, chain.feeds)
    out, records = equalize(folded, clip=clip)
    assert_same_function(chain.model, out, chain.feeds)
    user = {n.name for n in chain.model.graph.node}
    assert set(bns) | {n.name for n in out.graph.node} >= user, "a user's node lost its name"
    assert all(n.name in user or n.name.startswith("__qd/") for n in out.graph.node)
    applied = {name for r in records if r["status"] == "applied" for name in r["nodes"]}  # type: ignore[attr-defined]
    for n in folded.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and n.name not in applied:
            after = next(m for m in out.graph.node if m.name == n.name)
            np.testing.assert_array_equal(
                const(out, after.input[1]), const(folded, n.input[1]), err_msg=f"{n.name} is in no applied pair"
            )
    if clip == "skip":
        assert not any(n.op_type == "Min" for n in out.graph.node)


@SETTINGS
@given(chain=random_chains(conv=False), alpha=st.floats(0.0, 1.0))
def test_smooth_quant_keeps_the_float_function(chain: Chain, alpha: float) -> None:
    out, records = smooth_quant(chain.model, chain.feeds, alpha)
    assert_same_function(chain.model, out, chain.feeds)
    assert [n.name for n in out.graph.node] == [n.name for n in chain.model.graph.node], "SmoothQuant adds no node"
    applied = {name for r in records if r["status"] == "applied" for name in r["nodes"]}  # type: ignore[attr-defined]
    for before, after in zip(chain.model.graph.node, out.graph.node):
        if before.name not in applied:
            for a, b in zip(before.input, after.input):
                if a in {t.name for t in chain.model.graph.initializer}:
                    np.testing.assert_array_equal(const(out, b), const(chain.model, a), err_msg=before.name)
