"""``qd.fix``: read the data, calibrate when needed, run the strategy over an evaluator, assemble the result."""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from quantdebug.config import QuantConfig
from quantdebug.data import Dataset, as_dataset
from quantdebug.errors import ConfigError
from quantdebug.executors import Executor
from quantdebug.fix._evaluator import Evaluator
from quantdebug.fix._options import FixOptions
from quantdebug.fix._prune import checked_live_changes
from quantdebug.fix._result import Candidate, FixInterrupted, FixResult
from quantdebug.fix._settings import ort_settings
from quantdebug.fix._strategy import Best, search
from quantdebug.fix.levers import DEFAULT_LEVERS
from quantdebug.frontends import from_framework
from quantdebug.pipeline.calibrate import Calibration, calibrate_model
from quantdebug.pipeline.plan import build_plan, limited
from quantdebug.pipeline.prepare import ModelSource, PreparedModel, prepared_model

EvalFn = Callable[[ort.InferenceSession], float]
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(FixOptions)}


def fix(
    float_model: ModelSource,
    representative_dataset: object | None = None,
    *,
    quant_config: QuantConfig | None = None,
    calibration: Calibration | None = None,
    debug_dataset: object | None = None,
    eval_fn: EvalFn | None = None,
    higher_is_better: bool = True,
    target: float | None = None,
    max_drop: float | None = None,
    levers: Sequence[str] = DEFAULT_LEVERS,
    max_evals: int | None = None,
    trace_path: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    max_samples: int = 32,
    sensitivity_samples: int = 4,
    verbose: bool = False,
    executor: Executor | None = None,
    options: FixOptions | None = None,
) -> FixResult:
    """Find the fewest named changes (weight levers, clamp, per-channel, calibration, int16, float) that meet a target.

    ``eval_fn(session) -> float`` measures a candidate on the user's own data; without it the
    quality is the worst output SQNR (dB) against the float model on the debug dataset and the
    default target is 30 dB. ``target`` is absolute; ``max_drop`` is relative to the float model.
    Every ``eval_fn`` call, baselines included, counts toward ``max_evals`` (default
    ``2*ceil(log2(L)) + 10`` for L quantized nodes). The trace is saved to ``trace_path`` after
    every evaluation, and ``resume=trace_path`` continues an interrupted search. ``executor``
    (for example ``qd.RayExecutor()``) runs the calibration pass and the sensitivity runs on workers;
    the search, its evaluations and its trace are the same as in one process.

    ``options=qd.FixOptions(...)`` holds the same knobs (from ``quant_config`` to ``verbose``) in
    one object; a keyword given besides it must agree with it.
    """
    given = {
        "quant_config": quant_config,
        "higher_is_better": higher_is_better,
        "target": target,
        "max_drop": max_drop,
        "levers": tuple(levers) if not isinstance(levers, str) else levers,
        "max_evals": max_evals,
        "trace_path": trace_path,
        "resume": resume,
        "max_samples": max_samples,
        "sensitivity_samples": sensitivity_samples,
        "verbose": verbose,
    }
    options = merged_options(options, given)
    float_model, (representative_dataset, debug_dataset) = from_framework(  # type: ignore[assignment]
        float_model, representative_dataset, debug_dataset
    )
    config = options.config
    # candidates are quantized as qd.quantize would for their config: at the base opset, and at
    # opset 21 (which 16-bit QDQ needs) only when they have 16-bit nodes (the evaluator's copy).
    # The prepared model is qd.calibrate's and qd.quantize's own, from their cache: pre-processing the
    # PP-OCR detector (symbolic shape inference) takes 34 s, and a fix after a calibrate paid it twice
    prepared = prepared_model(float_model, config)
    if calibration is None:
        if representative_dataset is None:
            raise ConfigError("fix needs a representative_dataset to calibrate (or calibration=...)")
        dataset = as_dataset(representative_dataset, prepared.model, what="representative_dataset")
        calibration = calibrate_model(
            prepared.model, dataset, fingerprint=prepared.fingerprint, batch_size=16, executor=executor
        )
    calibration.check_model(prepared.fingerprint, prepared.user_model)
    source = debug_dataset if debug_dataset is not None else representative_dataset
    if source is None:
        raise ConfigError("fix needs a debug_dataset (or a representative_dataset to use for both)")
    dataset = as_dataset(source, prepared.model, what="debug_dataset")
    feeds = list(itertools.islice(iter(dataset), options.max_samples))
    return run_search(prepared, calibration, feeds, eval_fn, options, executor=executor, source=float_model)


def merged_options(options: FixOptions | None, given: Mapping[str, Any]) -> FixOptions:
    """``options``, or the keywords as FixOptions; a keyword off its default that disagrees with ``options``
    is an error (the value meant is unclear)."""
    if options is None:
        return FixOptions(**given)
    if not isinstance(options, FixOptions):
        raise ConfigError(f"options must be a qd.FixOptions; got {type(options).__name__}")
    for name, value in given.items():
        if _same(value, _DEFAULTS[name]) or _same(value, getattr(options, name)):
            continue
        raise ConfigError(
            f"fix got options=FixOptions({name}={getattr(options, name)!r}) and {name}={value!r}; "
            f"give {name} in one of them (options.replace({name}=...) changes a copy)"
        )
    return options


def _same(a: object, b: object) -> bool:
    if isinstance(a, os.PathLike | str) and isinstance(b, os.PathLike | str):
        return os.fspath(a) == os.fspath(b)
    return a == b


def run_search(
    prepared: PreparedModel,
    calibration: Calibration,
    feeds: Sequence[Mapping[str, np.ndarray]],
    eval_fn: EvalFn | None,
    options: FixOptions,
    *,
    executor: Executor | None = None,
    source: ModelSource | None = None,
) -> FixResult:
    """The search on a prepared model, its calibration and the debug samples; ``source`` (the float
    model ``prepared`` came from) lets 16-bit candidates be prepared at opset 21."""
    evaluator = Evaluator(prepared, calibration, feeds, eval_fn, options, source=source, executor=executor)
    config = options.config
    precisions = prepared.precisions(config)
    plan = build_plan(
        prepared.model,
        prepared.quantize(calibration, config, precisions),
        {n for n, p in precisions.items() if p != "float"},
    )
    try:
        best, float_q, int8_q, message = search(evaluator, plan)
    except KeyboardInterrupt as exc:
        path = evaluator.trace.path
        evaluator.trace.save()
        where = f" saved to {path}; resume with resume={str(path)!r}" if path else ""
        message = f"fix interrupted after {evaluator.evaluations} evaluations; trace{where}"
        raise FixInterrupted(message, evaluator.trace.entries) from exc
    return fix_result(evaluator, best, float_q, int8_q, message)


def fix_result(evaluator: Evaluator, best: Best, float_q: float, int8_q: float, message: str) -> FixResult:
    """The chosen candidate (never worse than int8), without the changes that do nothing, as a FixResult."""
    candidate, quality = best
    if evaluator.better(int8_q, quality) or (quality == int8_q and candidate != Candidate()):
        candidate, quality = Candidate(), int8_q
    met = evaluator.meets(quality)
    if met:
        changed = candidate != Candidate()
        message += "target met" if changed else "the fully quantized model already meets the target"
    else:
        message += (
            f"the target ({evaluator.target:.4g}) could not be met within max_evals={evaluator.max_evals}; "
            "returning the best model found"
        )
    base, trace = evaluator.base, evaluator.trace
    model = evaluator.model_for(candidate)
    candidate, left_out = checked_live_changes(
        candidate, model, base, evaluator.precisions0, evaluator.prepared_for, evaluator.calibration
    )
    config = candidate.config(base)
    prepared = evaluator.prepared_for(config)
    return FixResult(
        candidate=candidate,
        quantized=model,
        config=config,
        float_quality=float_q,
        int8_quality=int8_q,
        fixed_quality=quality,
        target=evaluator.target,
        higher_is_better=evaluator.higher,
        met_target=met,
        evaluations=evaluator.evaluations,
        trace=trace.entries,
        message=message,
        quantized_nodes=evaluator.quantized_nodes,
        ort_settings=ort_settings(prepared, evaluator.calibration, config, model),
        ranking=trace.ranking,
        float_model=float_model_for(prepared, evaluator.calibration, config),
        left_out=left_out,
    )


def float_model_for(prepared: PreparedModel, calibration: Calibration, config: QuantConfig) -> onnx.ModelProto:
    """The float model ``config`` quantizes: the pre-processed one, or as equalize / SmoothQuant rewrote it
    (what a user's own quantizer should start from; the same outputs, other weights)."""
    data = calibration.dataset
    if not (config.equalize_on or config.smooth_quant_on) or data is None:
        return prepared.model
    if not isinstance(data, Dataset):  # as PreparedModel.quantize reads the calibration's samples
        data = as_dataset(data, prepared.model, what="dataset")
    model, _, _ = prepared.transformed(config, data, limited(data, config))
    return model
