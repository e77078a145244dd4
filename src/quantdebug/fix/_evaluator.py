"""The evaluator: a candidate becomes a quantized model and a quality, within the budget, recorded in the trace.

Everything the search runs goes through here: quantizing a candidate as ``qd.quantize`` would for
its config (at opset 21, on a copy made on first use, only when it has 16-bit nodes), the user's
``eval_fn`` (or the default output agreement), the ``max_evals`` budget, and the cheap measurements
that spend no evaluation (the ranking, the int16 evidence). The strategy never sees a session.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from quantdebug.config import QuantConfig
from quantdebug.errors import ConfigError, EvalFunctionError, ModelError
from quantdebug.executors import Executor, LocalExecutor
from quantdebug.fix._int16 import int16_gain_db
from quantdebug.fix._options import FixOptions
from quantdebug.fix._ranking import rank_suspects
from quantdebug.fix._result import Candidate, TraceEntry
from quantdebug.fix._switch import output_sqnr
from quantdebug.fix._trace import FLOAT_KEY, Trace
from quantdebug.fix.levers import LeverContext
from quantdebug.pipeline.calibrate import Calibration
from quantdebug.pipeline.plan import Plan, build_plan

# PreparedModel has no public home yet: pipeline.prepare cannot import it at package level without
# an import cycle with pipeline.plan (see the report); the pipeline refactor gives it one
from quantdebug.pipeline.prepare import ModelSource, PreparedModel, needs_16bit
from quantdebug.runtime import make_session
from quantdebug.support.external import release

DEFAULT_SQNR_TARGET = 30.0  # dB of output agreement with the float model, when no eval_fn is given
DEFAULT_RELATIVE_DROP = 0.01  # with an eval_fn and no target: within 1% of the float model's quality


class BudgetSpent(Exception):
    """``max_evals`` evaluations are done; the search returns the best it has."""


def default_budget(quantized_nodes: int) -> int:
    return 2 * math.ceil(math.log2(max(quantized_nodes, 2))) + 10


class OutputAgreement:
    """The default quality: worst output SQNR (dB) against the float model on the debug samples."""

    def __init__(self, float_model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
        self.feeds = [dict(f) for f in feeds]
        session = make_session(float_model, what="float model")
        self.reference = self._outputs(session)

    def _outputs(self, session: ort.InferenceSession) -> list[np.ndarray]:
        names = [o.name for o in session.get_outputs()]
        per: list[list[np.ndarray]] = [[] for _ in names]
        for feed in self.feeds:
            for i, v in enumerate(session.run(names, feed)):
                per[i].append(np.asarray(v).reshape(-1))
        return [np.concatenate(p) for p in per]

    def __call__(self, session: ort.InferenceSession) -> float:
        return output_sqnr(self.reference, self._outputs(session))


class Evaluator:
    """Turns candidates into qualities for one search; counts, caches (from a resumed trace) and records them.

    ``prepared`` is the model as ``qd.quantize`` prepares it for the base config; ``source`` the
    float model it was prepared from, prepared again at opset 21 when the first 16-bit candidate
    comes (seconds, or gigabytes for a model over 2 GB, so only then).
    """

    def __init__(
        self,
        prepared: PreparedModel,
        calibration: Calibration,
        feeds: Sequence[Mapping[str, np.ndarray]],
        eval_fn: Callable[[ort.InferenceSession], float] | None,
        options: FixOptions,
        *,
        source: ModelSource | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.prepared = prepared
        self.source = source
        self.wide: PreparedModel | None = prepared if needs_16bit(options.config) else None
        self.calibration = calibration
        self.options = options
        self.base = options.config
        self.feeds = list(feeds)
        if not self.feeds:
            raise ConfigError("fix needs at least one debug sample")
        self.default_quality = eval_fn is None
        self.eval_fn = eval_fn or OutputAgreement(prepared.model, self.feeds)
        self.higher = True if eval_fn is None else options.higher_is_better
        self.executor: Executor = executor if executor is not None else LocalExecutor()
        self.echo: Callable[[str], None] | None = print if options.verbose else None
        self.trace = Trace(options)
        self.evaluations = 0
        self.models: dict[str, onnx.ModelProto] = {}
        self.failures: list[str] = []
        self.precisions0 = prepared.precisions(self.base)
        self.quantized_nodes = sum(1 for p in self.precisions0.values() if p != "float")
        self.max_evals = options.max_evals if options.max_evals is not None else default_budget(self.quantized_nodes)

    # -- the goal -----------------------------------------------------------------------------
    @property
    def target(self) -> float:
        return self.trace.target

    def set_target(self, float_q: float) -> None:
        o = self.options
        if o.target is not None:
            target = o.target
        elif o.max_drop is not None:
            target = float_q - o.max_drop if self.higher else float_q + o.max_drop
        elif self.default_quality:
            target = DEFAULT_SQNR_TARGET
        else:
            drop = DEFAULT_RELATIVE_DROP * abs(float_q)
            target = float_q - drop if self.higher else float_q + drop
        self.trace.target = target

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher else a < b

    def meets(self, quality: float) -> bool:
        if math.isnan(quality):
            return False
        return quality >= self.target if self.higher else quality <= self.target

    @property
    def remaining(self) -> int:
        return self.max_evals - self.evaluations

    # -- candidates to models -----------------------------------------------------------------
    def prepared_for(self, config: QuantConfig) -> PreparedModel:
        """The prepared model ``qd.quantize`` would quantize for ``config``: opset 21 only for 16 bits."""
        if needs_16bit(config) and self.wide_available():
            assert self.wide is not None
            return self.wide
        return self.prepared

    def wide_available(self) -> bool:
        """Prepare the opset 21 copy on first use; a model that cannot be converted warns once and says False."""
        if self.wide is None and self.source is not None:
            try:
                self.wide = PreparedModel(self.source, self.base.replace(activation_type="int16"))
            except ModelError as exc:
                warnings.warn(f"int16 is not available as a lever: {exc}", stacklevel=2)
            self.source = None
        return self.wide is not None

    def model_for(self, candidate: Candidate) -> onnx.ModelProto:
        key = candidate.key()
        if key not in self.models:
            config = candidate.config(self.base)
            prepared = self.prepared_for(config)
            kept = [p.model for p in (self.prepared, self.wide) if p is not None]
            for old in self.models.values():  # the weights of a model over 2 GB: gigabytes on disk each
                release(old, keep=kept)
            self.models = {key: prepared.quantize(self.calibration, config, prepared.precisions(config))}
        return self.models[key]

    def plan_for(self, candidate: Candidate) -> Plan:
        """The plan (units, float-to-quantized map) of the model ``candidate`` gives."""
        return build_plan(self.prepared.model, self.model_for(candidate), None)

    def context(self, plan: Plan) -> LeverContext:
        return LeverContext(
            float_model=self.prepared.model,
            plan=plan,
            calibration=self.calibration,
            base=self.base,
            feeds=self.feeds,
            wide_available=self.wide_available,
        )

    # -- evaluations --------------------------------------------------------------------------
    def _quality(self, model: onnx.ModelProto | None, key: str, what: str) -> tuple[float, bool]:
        """Quality of a model; evaluations replayed from a resumed trace count as they did the first time.

        ``what`` names the candidate in the error raised when the user's eval function fails on it.
        """
        if self.evaluations >= self.max_evals:
            raise BudgetSpent
        self.evaluations += 1
        cached = self.trace.cached(key)
        if cached is not None:
            return cached, True
        assert model is not None
        try:
            session = make_session(model, what="candidate model")
        except ModelError as exc:
            # onnxruntime's quantizer can write a model its runtime refuses for some mixes of
            # precisions; such a candidate fails, and the search goes on
            self.failures.append(f"{key}: {exc}")
            return (-math.inf if self.higher else math.inf), False
        if self.default_quality:
            return float(self.eval_fn(session)), False
        try:
            return float(self.eval_fn(session)), False
        except Exception as exc:  # the user's code: say so, name the candidate, keep its traceback chained
            raise EvalFunctionError(
                f"the eval function raised {type(exc).__name__}: {exc} (evaluation {self.evaluations}, "
                f"on candidate {what}); its traceback is chained to this error (on the command line: --debug)"
            ) from exc

    def evaluate_float(self) -> float:
        """The float baseline: the first evaluation of every search."""
        model = self.prepared.model
        quality, cached = self._quality(model, FLOAT_KEY, "'float' (the float model)")
        size = len(model.SerializeToString())
        self.trace.entries.append(TraceEntry("float", Candidate(), quality, 0, size, True, cached))
        return quality

    def evaluate(self, candidate: Candidate, step: str) -> float:
        key = candidate.key()
        model = None if self.trace.cached(key) is not None else self.model_for(candidate)
        quality, cached = self._quality(model, key, f"{step!r} ({'; '.join(candidate.describe()) or 'all int8'})")
        size = len(model.SerializeToString()) if model is not None else 0
        self.trace.append(TraceEntry(step, candidate, quality, candidate.non_int8, size, self.meets(quality), cached))
        self.say(
            f"  [{self.evaluations:>2}/{self.max_evals}] {step}: quality {quality:.4g}"
            + (" (from the resumed trace)" if cached else "")
        )
        return quality

    def say(self, line: str) -> None:
        if self.echo is not None:
            self.echo(line)

    # -- measurements that spend no evaluation ------------------------------------------------
    def rank(self, plan: Plan) -> list[str]:
        """Quantized nodes, most harmful first (``_ranking``); the rows are kept in the trace."""
        feeds = self.feeds[: self.options.sensitivity_samples]
        ranked, self.trace.ranking = rank_suspects(self.prepared.model, plan, feeds, self.executor, self.precisions0)
        return ranked

    def int16_gain_db(self, start: Candidate, ranked: Sequence[str]) -> float:
        """What 16 bits on every ranked node gain over ``start`` in output SQNR (``_int16``); kept in the trace."""
        feeds = self.feeds[: self.options.sensitivity_samples]
        gain = int16_gain_db(self.prepared.model, self.model_for, start, ranked, feeds)
        self.trace.int16_gain_db = gain
        self.say(f"  int16 on all {len(ranked)} suspects: output SQNR {gain:+.3g} dB")
        return gain
