"""The search for the fewest named changes that meet a quality target.

Order: baselines; whole-model levers (clamp sentinels, per-channel weights, outlier-robust
calibration), each kept only if it helps; then suspects ranked by a cheap sensitivity pass are
searched as *sets*: bisection over the ranked list for the shortest prefix that meets the target
(int16 first, so the model stays integer-only when that suffices, float after), then pruning of
nodes that turn out not to be needed. Every evaluation is recorded and saved as it happens.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from quantdebug.config import QuantConfig
from quantdebug.errors import ConfigError, EvalFunctionError, ModelError, QuantDebugError
from quantdebug.executors import LocalExecutor
from quantdebug.fix._evidence import LayerEvidence, layer_evidence
from quantdebug.fix._int16 import first_lever_share, int16_gain_db, lever_order
from quantdebug.fix._levers import clamp_keeps_outputs, outlier_tensors, sentinel_clamps, spread_nodes
from quantdebug.fix._prune import checked_live_changes
from quantdebug.fix._result import Candidate, FixResult, TraceEntry
from quantdebug.fix._settings import ort_settings
from quantdebug.fix._switch import SwitchRunner, build_switch_model, output_sqnr
from quantdebug.fix._trace import TRACE_FORMAT
from quantdebug.pipeline.calibrate import Calibration
from quantdebug.pipeline.plan._plan import Plan, build_plan
from quantdebug.pipeline.prepare._prepared import PreparedModel, needs_16bit
from quantdebug.pipeline.results._weights import weight_statistics
from quantdebug.runtime import make_session
from quantdebug.support import _io
from quantdebug.support import external as _external

LEVERS = ("int16", "float", "per_channel", "calibration", "clamp")
DEFAULT_SQNR_TARGET = 30.0  # dB of output agreement with the float model, when no eval_fn is given
DEFAULT_RELATIVE_DROP = 0.01  # with an eval_fn and no target: within 1% of the float model's quality


class FixInterrupted(QuantDebugError):
    """The search was interrupted; ``trace`` holds every evaluation done so far (resume from it)."""

    def __init__(self, message: str, trace: list[TraceEntry]) -> None:
        super().__init__(message)
        self.trace = trace


class _BudgetSpent(Exception):
    pass


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


Switched = tuple[tuple[int, ...], tuple[int, ...]]  # activation and weight switches left in float


class SwitchScores:
    """Output SQNR of the switchable graph with some activation and weight switches left in float.

    Picklable and cheap to ship: an executor sends it once per worker, and each worker builds one
    SwitchRunner (session and reference outputs) on its first item and reuses it for the rest.
    """

    def __init__(self, float_model: onnx.ModelProto, plan: Plan, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
        model, self.switches = build_switch_model(float_model, plan)  # once: the ranking reads the switches too
        self.float_model = float_model.SerializeToString()
        self.switch_model = model.SerializeToString()
        self.feeds = [dict(f) for f in feeds]
        self._runner: SwitchRunner | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_runner": None}  # sessions are built where the items are scored

    @property
    def runner(self) -> SwitchRunner:
        if self._runner is None:
            built = (onnx.load_model_from_string(self.switch_model), self.switches)
            self._runner = SwitchRunner(onnx.load_model_from_string(self.float_model), None, self.feeds, built=built)
        return self._runner

    def __call__(self, off: Switched) -> float:
        runner = self.runner
        act = np.ones(runner.n_act, np.float32)
        weights = np.ones(runner.n_w, np.float32)
        act[list(off[0])] = 0.0
        weights[list(off[1])] = 0.0
        return runner.score(act, weights)


class Search:
    def __init__(
        self,
        prepared: PreparedModel,
        calibration: Calibration,
        base: QuantConfig,
        feeds: Sequence[Mapping[str, np.ndarray]],
        *,
        eval_fn: Callable[[ort.InferenceSession], float] | None,
        higher_is_better: bool,
        target: float | None,
        max_drop: float | None,
        levers: Sequence[str],
        max_evals: int | None,
        trace_path: str | os.PathLike[str] | None,
        resume: str | os.PathLike[str] | None,
        sensitivity_samples: int,
        echo: Callable[[str], None] | None,
        executor: Any = None,
        wide: Callable[[], PreparedModel] | None = None,
    ) -> None:
        """``prepared``: the model as ``qd.quantize`` prepares it for the base config; ``wide`` makes the
        same model prepared at opset 21, for candidates with 16-bit nodes, when the first is tried.
        Each candidate is quantized from the one ``qd.quantize`` would use for its QuantConfig, so
        the int8 baseline is ``qd.quantize``'s and the returned config reproduces the model exactly."""
        unknown = sorted(set(levers) - set(LEVERS))
        if unknown:
            raise ConfigError(f"unknown levers {unknown}; choose from {list(LEVERS)}")
        if target is not None and max_drop is not None:
            raise ConfigError("give either target or max_drop, not both")
        if max_drop is not None and max_drop < 0:
            raise ConfigError(f"max_drop must be >= 0; got {max_drop}")
        self.prepared = prepared
        self.make_wide = wide
        self.wide: PreparedModel | None = None
        self.calibration = calibration
        self.base = base
        self.feeds = list(feeds)
        if not self.feeds:
            raise ConfigError("fix needs at least one debug sample")
        self.default_quality = eval_fn is None
        self.eval_fn = eval_fn or OutputAgreement(prepared.model, self.feeds)
        self.higher = True if eval_fn is None else higher_is_better
        self.requested_target = target
        self.max_drop = max_drop
        self.levers = tuple(levers)
        self.trace: list[TraceEntry] = []
        self.cache: dict[str, float] = {}
        self.evaluations = 0
        self.trace_path = Path(trace_path) if trace_path is not None else None
        self.sensitivity_samples = sensitivity_samples
        self.echo = echo
        self.executor = executor if executor is not None else LocalExecutor()
        self.models: dict[str, onnx.ModelProto] = {}
        self.failures: list[str] = []
        self.suspects: list[dict[str, Any]] = []  # the ranking and the evidence behind it
        self.int16_gain_db: float | None = None  # what 16 bits on every suspect gain (see _int16)
        if resume is not None:
            self._load_resume(Path(resume))
        self.precisions0 = prepared.precisions(base)
        self.quantized_nodes = sum(1 for p in self.precisions0.values() if p != "float")
        self.max_evals = max_evals if max_evals is not None else default_budget(self.quantized_nodes)
        if self.max_evals < 2:
            raise ConfigError("max_evals must be at least 2 (the float and the fully quantized baselines)")
        self.target = math.nan

    # -- evaluation ---------------------------------------------------------------------------
    def _load_resume(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot resume from {str(path)!r}: {exc}") from exc
        if data.get("format") != TRACE_FORMAT:
            raise ConfigError(f"{str(path)!r} is not a quantdebug fix trace")
        for entry in data.get("trace", []):
            key = "float" if entry["step"] == "float" else Candidate.from_dict(entry["candidate"]).key()
            self.cache[key] = float(entry["quality"])

    def _save_trace(self) -> None:
        if self.trace_path is None:
            return
        data = {
            "format": TRACE_FORMAT,
            "version": 1,
            "target": self.target,
            "trace": [t.to_dict() for t in self.trace],
            "ranking": self.suspects,
            "int16_gain_db": _finite_or_none(self.int16_gain_db),
        }
        _io.write_text(self.trace_path, json.dumps(data, indent=1, default=str))

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher else a < b

    def meets(self, quality: float) -> bool:
        if math.isnan(quality):
            return False
        return quality >= self.target if self.higher else quality <= self.target

    def model_for(self, candidate: Candidate) -> onnx.ModelProto:
        key = candidate.key()
        if key not in self.models:
            config = candidate.config(self.base)
            prepared = self.prepared_for(config)
            kept = [p.model for p in (self.prepared, self.wide) if p is not None]
            for old in self.models.values():  # the weights of a model over 2 GB: gigabytes on disk each
                _external.release(old, keep=kept)
            self.models = {key: prepared.quantize(self.calibration, config, prepared.precisions(config))}
        return self.models[key]

    def prepared_for(self, config: QuantConfig) -> PreparedModel:
        """The prepared model ``qd.quantize`` would quantize for ``config``: opset 21 only for 16 bits."""
        if needs_16bit(config) and self._wide_available():
            assert self.wide is not None
            return self.wide
        return self.prepared

    def _wide_available(self) -> bool:
        """Prepare the opset 21 copy on first use; a model that cannot be converted loses the int16 lever."""
        if self.wide is None and self.make_wide is not None:
            try:
                self.wide = self.make_wide()
            except ModelError as exc:
                warnings.warn(f"int16 is not available as a lever: {exc}", stacklevel=2)
                self.levers = tuple(lever for lever in self.levers if lever != "int16")
            self.make_wide = None
        return self.wide is not None

    def _quality(
        self, session_model: onnx.ModelProto | None, cache_key: str, what: str = "'float' (the float model)"
    ) -> tuple[float, bool]:
        """Quality of a model; evaluations replayed from a resumed trace count as they did the first time.

        ``what`` names the candidate in the error raised when the user's eval function fails on it.
        """
        if self.evaluations >= self.max_evals:
            raise _BudgetSpent
        self.evaluations += 1
        if cache_key in self.cache:
            return self.cache[cache_key], True
        assert session_model is not None
        try:
            session = make_session(session_model, what="candidate model")
        except ModelError as exc:
            # onnxruntime's quantizer can write a model its runtime refuses for some mixes of
            # precisions; such a candidate fails, and the search goes on
            self.failures.append(f"{cache_key}: {exc}")
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

    def evaluate(self, candidate: Candidate, step: str) -> float:
        key = candidate.key()
        model = None if key in self.cache else self.model_for(candidate)
        quality, cached = self._quality(model, key, f"{step!r} ({'; '.join(candidate.describe()) or 'all int8'})")
        size = len(model.SerializeToString()) if model is not None else 0
        entry = TraceEntry(step, candidate, quality, candidate.non_int8, size, self.meets(quality), cached)
        self.trace.append(entry)
        self._save_trace()
        if self.echo is not None:
            note = " (from the resumed trace)" if cached else ""
            self.echo(f"  [{self.evaluations:>2}/{self.max_evals}] {step}: quality {quality:.4g}{note}")
        return quality

    # -- the search ---------------------------------------------------------------------------
    def run(self, initial_plan: Plan) -> FixResult:
        try:
            return self._run(initial_plan)
        except KeyboardInterrupt as exc:
            self._save_trace()
            where = (
                f" saved to {self.trace_path}; resume with resume={str(self.trace_path)!r}" if self.trace_path else ""
            )
            message = f"fix interrupted after {self.evaluations} evaluations; trace{where}"
            raise FixInterrupted(message, self.trace) from exc

    def _run(self, plan: Plan) -> FixResult:
        empty = Candidate()
        float_q, cached = self._quality(self.prepared.model, "float")
        size = len(self.prepared.model.SerializeToString())
        self.trace.append(TraceEntry("float", empty, float_q, 0, size, True, cached))
        self.float_q = float_q
        self._set_target(float_q)
        int8_q = self.evaluate(empty, "int8")
        best = (empty, int8_q)
        message = ""
        try:
            if not self.meets(int8_q):
                best = self._levers(best, plan)
                if not self.meets(best[1]):
                    best = self._precision_search(best, plan)
        except _BudgetSpent:
            message = f"the evaluation budget (max_evals={self.max_evals}) ran out; "
            best = self._best_evaluated(best)  # the search step that ran out held its own best
        return self._result(best, float_q, int8_q, message)

    def _best_evaluated(self, best: tuple[Candidate, float]) -> tuple[Candidate, float]:
        """Among every candidate evaluated: the one meeting the target with the fewest nodes out of
        int8 (fewest in float next, then the best quality), or the best quality if none meets it."""
        seen = [(e.candidate, e.quality) for e in self.trace if e.step != "float" and not math.isnan(e.quality)]
        seen.append(best)
        met = [(c, q) for c, q in seen if self.meets(q)]
        if met:
            sign = -1.0 if self.higher else 1.0
            return min(met, key=lambda cq: (cq[0].non_int8, len(cq[0].float_nodes), sign * cq[1]))
        return max(seen, key=lambda cq: cq[1]) if self.higher else min(seen, key=lambda cq: cq[1])

    def _set_target(self, float_q: float) -> None:
        if self.requested_target is not None:
            self.target = float(self.requested_target)
        elif self.max_drop is not None:
            self.target = float_q - self.max_drop if self.higher else float_q + self.max_drop
        elif self.default_quality:
            self.target = DEFAULT_SQNR_TARGET
        else:
            drop = DEFAULT_RELATIVE_DROP * abs(float_q)
            self.target = float_q - drop if self.higher else float_q + drop

    def _try(self, best: tuple[Candidate, float], candidate: Candidate, step: str) -> tuple[Candidate, float]:
        if candidate == best[0]:
            return best
        quality = self.evaluate(candidate, step)
        return (candidate, quality) if self.better(quality, best[1]) else best

    def _levers(self, best: tuple[Candidate, float], plan: Plan) -> tuple[Candidate, float]:
        tensors = [u.float_tensor for u in plan.units]
        if "clamp" in self.levers:
            clamps = sentinel_clamps(self.calibration, tensors)
            clamps = [c for c in clamps if clamp_keeps_outputs(self.prepared.model, [c], self.feeds[:4])]
            if clamps:
                best = self._try(best, best[0].merged(clamps=tuple(clamps)), f"clamp: {len(clamps)} sentinel tensors")
        if "per_channel" in self.levers and not self.base.per_channel:
            nodes = spread_nodes(weight_statistics(self.prepared.model, plan.qdq))
            if nodes:
                best = self._try(best, best[0].merged(per_channel=tuple(nodes)), f"per_channel: {len(nodes)} nodes")
        if "calibration" in self.levers and not self.meets(best[1]):
            wide = outlier_tensors(self.calibration, tensors)
            if wide:
                calib = tuple((t, "percentile") for t in wide)
                best = self._try(best, best[0].merged(calibration=calib), f"calibration: {len(wide)} tensors")
        return best

    def ranking(self, plan: Plan) -> list[str]:
        """Quantized nodes, most harmful first, from the switchable graph and both verify modes.

        The switchable graph measures each node's share of the output noise two ways. Removal:
        how much of the fully quantized model's noise goes away when the node alone is left in
        float. Addition: how much noise the node makes when it alone is quantized. Removal misses
        harm that several nodes do redundantly (a text detector whose early layers each ruin the
        output: leaving any one in float changes nothing); addition misses harm that only appears
        in combination. Both are put in one unit, the fraction of the all-quantized output noise
        power, and a node ranks by the larger. Measured in groups first (about sqrt(L) groups of
        neighbouring nodes), then node by node: O(sqrt(L)) runs of the switchable graph instead of
        L, which matters on models of hundreds of nodes.

        The debugger's per-layer statistics (both verify modes, on the same few samples) order the
        nodes the switchable graph did not measure one by one, inside each group (the group keeps
        its rank), and break ties between measured nodes: a node whose own error is furthest above
        rounding, or where the accumulated error jumps most, goes first. Measuring the nodes they
        flag one by one as well was tried and measured worse on the real models (FIX_RESULTS.md):
        their output noise share is large, but their effect on a task metric is not.
        """
        feeds = self.feeds[: self.sensitivity_samples]
        try:
            evidence = layer_evidence(self.prepared.model, plan, feeds)
        except QuantDebugError as exc:  # the statistics only order ties: the search goes on without them
            warnings.warn(f"fix ranks without the per-layer statistics: {exc}", stacklevel=2)
            evidence = {}
        scores = SwitchScores(self.prepared.model, plan, feeds)
        switches = scores.switches
        nodes = list(switches.nodes)
        everything = range(len(nodes))
        stat = [evidence[n].score if n in evidence else 0.0 for n in nodes]

        def off(members: Sequence[int]) -> Switched:
            return tuple(members), tuple(switches.weight_switches_of({nodes[k] for k in members}))

        def only(members: Sequence[int]) -> Switched:
            keep = set(members)
            act = [k for k in everything if k not in keep]
            on_w = set(switches.weight_switches_of({nodes[k] for k in keep}))
            return tuple(act), tuple(j for j in range(len(switches.weights)) if j not in on_w)

        size = max(1, math.isqrt(len(nodes)))
        groups = [list(range(i, min(i + size, len(nodes)))) for i in range(0, len(nodes), size)]
        base: float | None = None
        group_share = [math.nan] * len(groups)
        if len(groups) > 2:
            items = [off([]), *(off(g) for g in groups), *(only(g) for g in groups)]
            base, *rest = self.executor.map(scores, items)
            group_share = [noise_share(base, r, a) for r, a in zip(rest[: len(groups)], rest[len(groups) :])]
            order = sorted(range(len(groups)), key=lambda i: -group_share[i])
            units = [k for i in order[: max(2, len(groups) // 4)] for k in groups[i]]
        else:
            order, units = list(range(len(groups))), list(everything)
        items = ([off([])] if base is None else []) + [off([k]) for k in units] + [only([k]) for k in units]
        unit_scores = self.executor.map(scores, items)
        if base is None:
            base, *unit_scores = unit_scores
        removed, added = unit_scores[: len(units)], unit_scores[len(units) :]
        unit_share = {k: noise_share(base, r, a) for k, r, a in zip(units, removed, added)}
        ranked: list[int] = sorted(unit_share, key=lambda k: (-unit_share[k], -stat[k]))
        for i in order:  # the rest, by their group's harm, and by their statistics within a group
            ranked += sorted((k for k in groups[i] if k not in unit_share), key=lambda k: -stat[k])
        group_of = {k: i for i, g in enumerate(groups) for k in g}
        self.suspects = []
        for position, k in enumerate(ranked):
            ev = evidence.get(nodes[k])
            values = {  # None where not measured: the rows go into strict JSON (statistics files)
                "noise_share": unit_share.get(k),
                "group_noise_share": group_share[group_of[k]],
                "per_layer_rmse/scale": ev.per_layer if ev else None,
                "whole_model_rmse/scale": ev.whole_model if ev else None,
                "statistics_score": stat[k],
            }
            finite = {key: v if v is not None and math.isfinite(v) else None for key, v in values.items()}
            self.suspects.append({"rank": position + 1, "node_name": nodes[k], **finite})
        out = list(dict.fromkeys(nodes[k] for k in ranked))
        return [n for n in out if self.precisions0.get(n, "float") != "float"]

    def _precision_search(self, best: tuple[Candidate, float], plan: Plan) -> tuple[Candidate, float]:
        if "int16" not in self.levers and "float" not in self.levers:
            return best  # no precision lever: the ranking would cost its runs for nothing
        start = best[0]
        current_plan = plan
        if start != Candidate():
            current_plan = build_plan(self.prepared.model, self.model_for(start), None)
        ranked = self.ranking(current_plan)
        if not ranked:
            return best
        order = self._lever_order(start, ranked)
        share = first_lever_share(self.max_evals - self.evaluations, order)
        for lever in order:
            if lever == "int16" and "int16" in self.levers:
                self._wide_available()  # drops the lever when the model cannot be prepared at opset 21
            if lever not in self.levers:
                continue
            limit = self.evaluations + share if share is not None and lever == order[0] else None

            def with_prefix(k: int, lever: str = lever) -> Candidate:
                return start.merged(precision=tuple((n, lever) for n in ranked[:k]))

            # galloping: prefixes of 1, 2, 4, ... nodes until one meets the target, then bisection
            # between the last two; cheap when few nodes are to blame, and robust when changing
            # every node at once fails where changing a few succeeds
            qualities: dict[int, float] = {}
            lo, k = 0, 1
            while True:
                if limit is not None and self.evaluations >= limit:
                    break  # the rest of the budget is the other lever's
                k = min(k, len(ranked))
                qualities[k] = self.evaluate(with_prefix(k), f"{lever}: first {k} ranked")
                if self.better(qualities[k], best[1]):
                    best = (with_prefix(k), qualities[k])
                if self.meets(qualities[k]) or k == len(ranked):
                    break
                lo, k = k, 2 * k
            if k not in qualities or not self.meets(qualities[k]):
                continue
            hi = k
            while hi - lo > 1:
                mid = (lo + hi) // 2
                qualities[mid] = self.evaluate(with_prefix(mid), f"{lever}: bisect first {mid}")
                if self.meets(qualities[mid]):
                    hi = mid
                else:
                    lo = mid
            chosen = list(ranked[:hi])
            best = (with_prefix(hi), qualities[hi])
            for node in reversed(list(chosen)):
                if len(chosen) <= 1:
                    break
                trial = [n for n in chosen if n != node]
                candidate = start.merged(precision=tuple((n, lever) for n in trial))
                try:
                    q = self.evaluate(candidate, f"{lever}: prune {node}")
                except _BudgetSpent:
                    break
                if self.meets(q):
                    chosen = trial
                    best = (candidate, q)
            return best
        return best

    def _lever_order(self, start: Candidate, ranked: Sequence[str]) -> tuple[str, ...]:
        """int16 and float in the order the evidence favours (see ``_int16``); recorded in the trace."""
        gain = None
        if "int16" in self.levers and "float" in self.levers and self._wide_available():
            gain = int16_gain_db(
                self.prepared.model, self.model_for, start, ranked, self.feeds[: self.sensitivity_samples]
            )
            self.int16_gain_db = gain
            if self.echo is not None:
                self.echo(f"  int16 on all {len(ranked)} suspects: output SQNR {gain:+.3g} dB")
        return lever_order(self.levers, gain)

    def _result(self, best: tuple[Candidate, float], float_q: float, int8_q: float, message: str) -> FixResult:
        candidate, quality = best
        if self.better(int8_q, quality) or (quality == int8_q and candidate != Candidate()):
            candidate, quality = Candidate(), int8_q
        met = self.meets(quality)
        if met:
            changed = candidate != Candidate()
            message += "target met" if changed else "the fully quantized model already meets the target"
        else:
            message += (
                f"the target ({self.target:.4g}) could not be met within max_evals={self.max_evals}; "
                "returning the best model found"
            )
        model = self.model_for(candidate)
        candidate, left_out = checked_live_changes(
            candidate, model, self.base, self.precisions0, self.prepared_for, self.calibration
        )
        config = candidate.config(self.base)
        prepared = self.prepared_for(config)
        return FixResult(
            candidate=candidate,
            quantized=model,
            config=config,
            float_quality=float_q,
            int8_quality=int8_q,
            fixed_quality=quality,
            target=self.target,
            higher_is_better=self.higher,
            met_target=met,
            evaluations=self.evaluations,
            trace=self.trace,
            message=message,
            quantized_nodes=self.quantized_nodes,
            ort_settings=ort_settings(prepared, self.calibration, config, model),
            ranking=self.suspects,
            float_model=prepared.model,
            left_out=left_out,
        )


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def noise_share(base_db: float, removed_db: float, alone_db: float) -> float:
    """A node's share of the all-quantized output noise, from output SQNRs in dB.

    ``base_db``: everything quantized; ``removed_db``: everything but the node; ``alone_db``: the
    node alone. Noise powers relative to the base are 10**(-dB/10); the share is the larger of
    the part that leaving the node in float removes and the part the node alone makes, in [0, 1].
    """

    def power(db: float) -> float:
        if math.isnan(db):
            return math.nan
        return 0.0 if db == math.inf else math.inf if db == -math.inf else 10.0 ** (-db / 10.0)

    total = power(base_db)
    if not total or math.isnan(total) or math.isinf(total):
        return 0.0
    removed = 1.0 - power(removed_db) / total
    alone = power(alone_db) / total
    shares = [v for v in (removed, alone) if not math.isnan(v)]
    return float(min(1.0, max(0.0, *shares))) if shares else 0.0


def sensitivity_table(
    runner: SwitchRunner, evidence: Mapping[str, LayerEvidence] | None = None
) -> list[dict[str, Any]]:
    """Per quantized node: output SQNR with it quantized alone, and with it alone left in float.

    With ``evidence``, each row also has the node's rmse/scale from both verify modes: the rest of
    what the fix ranking reads.
    """
    n_act, n_w = runner.n_act, runner.n_w
    zeros_a, zeros_w = np.zeros(n_act, np.float32), np.zeros(n_w, np.float32)
    ones_a, ones_w = np.ones(n_act, np.float32), np.ones(n_w, np.float32)
    all_q = runner.score(ones_a, ones_w)
    rows = []
    for k, (node, tensor) in enumerate(zip(runner.switches.nodes, runner.switches.tensors)):
        alone_a = zeros_a.copy()
        alone_a[k] = 1
        float_a = ones_a.copy()
        float_a[k] = 0
        row: dict[str, Any] = {
            "node_name": node,
            "tensor_name": tensor,
            "activation_quantized_alone_sqnr_db": runner.score(alone_a, zeros_w),
            "activation_float_alone_sqnr_db": runner.score(float_a, ones_w),
            "all_quantized_sqnr_db": all_q,
        }
        js = runner.switches.weight_switches_of({node})
        if js:
            alone_w, float_w = zeros_w.copy(), ones_w.copy()
            alone_w[js] = 1
            float_w[js] = 0
            row["weights_quantized_alone_sqnr_db"] = runner.score(zeros_a, alone_w)
            row["weights_float_alone_sqnr_db"] = runner.score(ones_a, float_w)
        else:
            row["weights_quantized_alone_sqnr_db"] = math.nan
            row["weights_float_alone_sqnr_db"] = math.nan
        if evidence is not None:
            ev = evidence.get(node)
            row["per_layer_rmse/scale"] = ev.per_layer if ev is not None else math.nan
            row["whole_model_rmse/scale"] = ev.whole_model if ev is not None else math.nan
        rows.append(row)
    return rows
