"""QuantizationDebugger: TensorFlow Lite's quantization debugger workflow for ONNX models."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import warnings
from typing import IO, Any

import numpy as np
import onnx

from quantdebug.config import DEFAULT_METRICS, DebugOptions, QuantConfig
from quantdebug.data import Dataset, as_dataset
from quantdebug.errors import ConfigError, ModelError, QuantDebugError, RunInterrupted, suggest
from quantdebug.fix import CULPRIT_SAMPLES, stored_culprits
from quantdebug.pipeline.calibrate import Calibration, calibrate_model
from quantdebug.pipeline.plan import Plan, build_plan, default_op_types, topo_index
from quantdebug.pipeline.prepare import ModelSource, PreparedModel, load_model, prepared_model
from quantdebug.pipeline.results import LayerRow, Statistics, node_coverage
from quantdebug.pipeline.run import ROWS_INPUT, DebugGraph, DebugJob, DebugLoop, RunState, build_debug_model, skip
from quantdebug.support import external, progress_bar


class QuantizationDebugger:
    """Quantize an ONNX model, compare every quantized layer with its float twin, and fix it.

    ``float_model`` is a path, bytes or ``onnx.ModelProto``. Datasets are callables that return
    a fresh iterable of samples (a list of arrays, one per model input, or a dict by input name),
    as in TensorFlow Lite's ``representative_dataset``.
    """

    def __init__(
        self,
        float_model: ModelSource | None = None,
        representative_dataset: object | None = None,
        *,
        debug_dataset: object | None = None,
        quant_config: QuantConfig | None = None,
        debug_options: DebugOptions | None = None,
        calibration: Calibration | None = None,
        quantized_model: ModelSource | None = None,
    ) -> None:
        if float_model is None:
            raise ConfigError("float_model is required: a path, bytes or onnx.ModelProto of the float model")
        from quantdebug._api import from_framework

        float_model, (representative_dataset, debug_dataset) = from_framework(  # type: ignore[assignment]
            float_model, representative_dataset, debug_dataset
        )
        self.quant_config = quant_config or QuantConfig()
        if not isinstance(self.quant_config, QuantConfig):
            raise ConfigError(f"quant_config must be a qd.QuantConfig; got {type(self.quant_config).__name__}")
        self._options = debug_options or DebugOptions()
        if not isinstance(self._options, DebugOptions):
            raise ConfigError(f"debug_options must be a qd.DebugOptions; got {type(self._options).__name__}")
        self._external: onnx.ModelProto | None = None
        if quantized_model is not None:
            self._external = load_model(quantized_model, what="quantized model")
            self._prepared = _prepare_for_external(float_model, self._external)
        else:
            self._prepared = prepared_model(float_model, self.quant_config)
        self._pre = self._prepared.pre
        self.float_model: onnx.ModelProto = self._prepared.model
        self._fingerprint = self._prepared.fingerprint
        self._rep = (
            as_dataset(representative_dataset, self.float_model, what="representative_dataset")
            if representative_dataset is not None
            else None
        )
        debug_source = debug_dataset if debug_dataset is not None else representative_dataset
        if debug_source is None:
            raise ConfigError("debug_dataset is required (or a representative_dataset to use for both)")
        self._debug = as_dataset(debug_source, self.float_model, what="debug_dataset")
        self.calibration: Calibration | None = None
        if calibration is not None:
            calibration.check_model(self._fingerprint, self._prepared.user_model)
            self.calibration = calibration
        elif self._external is None:
            if self._rep is None:
                raise ConfigError("representative_dataset is required to calibrate (or pass calibration=...)")
            self.calibration = self._calibrate(self._rep)
        self._tensor_idx = topo_index(self.float_model)
        self._plan: Plan | None = None
        self._debug_graph: DebugGraph | None = None
        self._raw_graph: DebugGraph | None = None
        self._loop: DebugLoop | None = None  # the debug sessions, kept for later runs on the same plan
        self._rows: list[LayerRow] | None = None
        self._culprits: dict[str, Any] | None = None  # the last culprits() measurement, for this plan
        self._state: RunState | None = None
        self.model_statistics: dict[str, float] = {}
        self.fidelity: float | None = None
        self.samples_seen = 0
        self._debug_fingerprint = ""
        self._replan()

    # -- calibration and planning ------------------------------------------------------------
    def _calibrate(self, dataset: Dataset) -> Calibration:
        with progress_bar("calibrating", self._options_progress()) as advance:
            return calibrate_model(self.float_model, dataset, fingerprint=self._fingerprint, progress=advance)

    def _options_progress(self) -> bool | None:
        opts = getattr(self, "_options", None)
        return opts.progress if opts is not None else None

    @property
    def options(self) -> DebugOptions:
        return self._options

    @options.setter
    def options(self, value: DebugOptions) -> None:
        """New options re-quantize from the stored calibration; the dataset is not read again."""
        if not isinstance(value, DebugOptions):
            raise ConfigError(f"options must be a qd.DebugOptions; got {type(value).__name__}")
        self._options = value
        self._replan()

    def _row_tensor_map(self) -> dict[str, tuple[str, ...]]:
        plan = self._plan
        if plan is None:
            return {}
        return {u.float_tensor: u.twin for u in plan.units}

    def precisions(self) -> dict[str, str]:
        """The precision every pre-processed node gets under the current config and options."""
        return self._prepared.precisions(
            self.quant_config, self._options.denylisted_nodes, self._options.denylisted_ops, self._row_tensor_map()
        )

    def _replan(self) -> None:
        old = self._plan
        if self._external is not None:
            if self._options.denylisted_nodes or self._options.denylisted_ops:
                raise ConfigError(
                    "denylists re-quantize the model, but this debugger was given a model quantized elsewhere; "
                    "pass a representative_dataset instead of quantized_model to let quantdebug quantize it"
                )
            self._plan = build_plan(self.float_model, self._external, None)
            self._precisions = {n.name: "external" for n in self.float_model.graph.node}
        else:
            assert self.calibration is not None
            precisions = self.precisions()
            qdq = self._prepared.quantize(self.calibration, self.quant_config, precisions, self._rep)
            intended = {n for n, p in precisions.items() if p != "float"}
            self._plan = build_plan(self.float_model, qdq, intended)
            self._precisions = precisions
        if old is not None:  # a model over 2 GB: the old plan's quantized weights are gigabytes on disk
            for model in (old.qdq, old.optimized):
                external.release(model, keep=self.float_model)
        self._debug_graph = None
        self._raw_graph = None
        self._loop = None
        self._rows = None
        self._culprits = None
        self._state = None
        self.model_statistics = {}
        if not self._plan.units:
            warnings.warn(
                "no quantized layer can be verified: every layer is left in float or none could be mapped; "
                "see debugger.coverage() for each node's reason",
                stacklevel=3,
            )

    # -- models -------------------------------------------------------------------------------
    def get_nondebug_quantized_model(self) -> onnx.ModelProto:
        """The quantized QDQ model, with denylisted nodes in float; runs in onnxruntime.

        Raises ``ModelTooLargeError`` when the model is over protobuf's 2 GB limit: use
        ``save_nondebug_quantized_model`` then.
        """
        assert self._plan is not None
        return external.as_proto(self._plan.qdq, "quantized model", "save_nondebug_quantized_model")

    def _graph(self) -> DebugGraph:
        assert self._plan is not None
        if self._debug_graph is None:
            self._debug_graph = build_debug_model(
                self._plan.optimized,
                self.float_model,
                self._plan.units,
                whole_model=self._options.verify_mode == "whole_model",
                raw=self._options.has_raw_tensor_metrics,
            )
        return self._debug_graph

    def get_debug_quantized_model(self) -> onnx.ModelProto:
        """The debug model: what onnxruntime runs for the quantized model, plus float twins and statistics.

        Raises ``ModelTooLargeError`` when the model is over protobuf's 2 GB limit: use
        ``save_debug_quantized_model`` then.
        """
        return external.as_proto(self._graph().model, "debug model", "save_debug_quantized_model")

    def save_nondebug_quantized_model(self, path: str | os.PathLike[str]) -> None:
        """Write the quantized QDQ model to ``path`` atomically.

        A model over protobuf's 2 GB limit gets its weights in ``<file name>.data`` next to it.
        """
        assert self._plan is not None
        external.write_model(self._plan.qdq, path)

    def save_debug_quantized_model(self, path: str | os.PathLike[str]) -> None:
        """Write the debug model to ``path`` atomically (weights in ``<file name>.data`` when over 2 GB)."""
        external.write_model(self._graph().model, path)

    @property
    def layer_names(self) -> list[str]:
        """Node names of the verified layers, in graph order."""
        assert self._plan is not None
        return [u.node for u in self._plan.units]

    # -- running ------------------------------------------------------------------------------
    def _job(self) -> DebugJob:
        assert self._plan is not None
        graph = self._graph()
        opts = self._options
        init = {i.name: i for i in self._plan.optimized.graph.initializer}
        params = []
        for unit in graph.units:
            row = self._plan.info[unit.output]
            zp = unit.qparams.zero_point
            runtime_zp = int(onnx.numpy_helper.to_array(init[zp]).reshape(-1)[0]) if zp in init else 0
            params.append((row.scale, row.zero_point, row.zero_point - runtime_zp))
        return DebugJob(
            graph=graph,
            options=opts,
            deployed=self._plan.qdq.SerializeToString() if opts.check_fidelity else None,
            float_model=self.float_model.SerializeToString() if opts.model_debug_metrics else None,
            custom_params=params,
        )

    def run(self, *, resume: bool = False, executor: Any = None) -> None:
        """Run the debug model over the debug dataset and accumulate every layer's statistics.

        If the run is interrupted (Ctrl-C or an error in the data), the statistics of the samples
        done so far stay available and ``run(resume=True)`` continues after them. ``executor``
        (for example ``qd.RayExecutor()``) spreads the samples over workers; the merged
        statistics equal a single-process run's. An interrupted run on an executor keeps the
        statistics of the work that had finished; it does not resume (``resume`` starts over).
        """
        assert self._plan is not None
        graph = self._graph()
        if not graph.units:
            raise QuantDebugError(
                "nothing to verify: no quantized layer runs in this model (all left in float or unmapped); "
                "see debugger.coverage()"
            )
        batch_free = all(s.batch_free for s in self._debug.specs)
        if executor is not None:
            job = self._job()
            try:
                state = executor.run_debug(job, self._debug, batch_free=batch_free)
            except RunInterrupted as exc:
                self._state = None  # the finished shards are not a prefix of the data: resume starts over
                if isinstance(exc.state, RunState) and exc.state.samples:
                    self._finish(exc.state)
                raise
            self._state = state
            self._finish(state)
            self._measure_impact()
            return
        if self._loop is None:
            self._loop = self._job().loop()
        loop = self._loop
        state = self._state if resume and self._state is not None else RunState.empty(len(graph.units), self._options)
        feeds = skip(iter(self._debug), state.samples)
        try:
            with progress_bar("debugging", self._options.progress) as advance:
                loop.process(feeds, state, batch_free=batch_free, advance=advance)
        except (KeyboardInterrupt, Exception) as exc:
            self._state = state
            if state.samples:
                self._finish(state)
            raise RunInterrupted(
                f"the debug run stopped after {state.samples} samples ({type(exc).__name__}: {exc}); the statistics "
                "of those samples are available, and debugger.run(resume=True) continues after them"
            ) from exc
        self._state = state
        self._finish(state)
        self._measure_impact()

    def _measure_impact(self) -> None:
        if self._options.impact and self._culprits is None:
            self.culprits()
        self._rows = self._with_impact(self._rows)

    def _with_impact(self, rows: list[LayerRow] | None) -> list[LayerRow] | None:
        if rows is None or self._culprits is None:
            return rows
        impact = {str(c["tensor_name"]): float(c["impact"]) for c in self._culprits["rows"]}
        return [dataclasses.replace(r, impact=impact.get(r.tensor_name, math.nan)) for r in rows]

    def _finish(self, state: RunState) -> None:
        assert self._plan is not None
        graph = self._graph()
        info = self._plan.info
        means = state.layer.means()
        custom_means = state.custom.means() if state.custom is not None else None
        rows = []
        for k, unit in enumerate(graph.units):
            row = info[unit.output]
            metrics = {m: float(means[k, j]) for j, m in enumerate(DEFAULT_METRICS)}
            if custom_means is not None and state.custom is not None:
                metrics.update({m: float(custom_means[k, j]) for j, m in enumerate(state.custom.metrics)})
            rows.append(
                LayerRow(
                    op_name=unit.op_type,
                    tensor_idx=self._tensor_idx.get(unit.float_tensor, -1),
                    tensor_name=unit.float_tensor,
                    node_name=unit.node,
                    scale=row.scale,
                    zero_point=row.zero_point,
                    precision=row.precision,
                    qmin=row.qmin,
                    qmax=row.qmax,
                    covers=tuple(u for n in unit.twin for u in self._pre.covers.get(n, ())),
                    metrics=metrics,
                )
            )
        self._rows = self._with_impact(rows)
        count = state.model_count
        self.model_statistics = {k: v / count for k, v in state.model_sums.items()} if count else {}
        self.samples_seen = state.samples
        self.fidelity = state.fidelity
        self._debug_fingerprint = state.fingerprint()

    # -- fixing -------------------------------------------------------------------------------
    def fix(self, eval_fn: Any = None, **kwargs: Any) -> Any:
        """``qd.fix`` on this debugger's model, debug data, config and Calibration (no re-calibration)."""
        from quantdebug._api import fix

        if self.calibration is None:
            raise ConfigError(
                "fix re-quantizes the model, which needs a calibration; "
                "this debugger was given a model quantized elsewhere"
            )
        return fix(
            self._prepared.user_model,
            calibration=self.calibration,
            debug_dataset=self._debug,
            quant_config=self.quant_config,
            eval_fn=eval_fn,
            **kwargs,
        )

    def sensitivity(self, samples: int = 4) -> list[dict[str, Any]]:
        """Per quantized node: output SQNR (dB) when it alone is quantized, and when it alone stays float,
        separately for its activation and its weights, measured on one switchable graph; and its
        rmse/scale in both verify modes on the same samples (what ``fix`` ranks suspects by)."""
        from quantdebug.fix import SwitchRunner, layer_evidence, sensitivity_table

        assert self._plan is not None
        feeds = list(itertools.islice(iter(self._debug), samples))
        evidence = layer_evidence(self.float_model, self._plan, feeds)
        return sensitivity_table(SwitchRunner(self.float_model, self._plan, feeds), evidence)

    def culprits(self, samples: int = CULPRIT_SAMPLES) -> Any:
        """The quantized layers ranked by ``impact``, their share of the output quantization noise.

        A pandas DataFrame (``CulpritFrame``) with node_name, op_name, tensor_name, impact (0 to 1:
        the larger of the noise the layer makes when quantized alone and the noise leaving it alone in
        float removes), both output SQNRs, both verify modes' rmse/scale, reason (one of
        ``qd.fix.REASONS``) and suggested_change (the call that applies the lever ``fix`` would try);
        ``frame.attrs["suggested_denylist"]`` holds the fewest top culprits whose removal takes most
        of the output noise. Measured on the switchable graph over the first ``samples`` debug
        samples, 2L + 1 runs for L layers; afterwards the statistics' ``impact`` column is filled in.
        """
        from quantdebug.fix import layer_evidence, measure_culprits
        from quantdebug.report import CulpritFrame  # pandas: loaded when asked for, not at import

        assert self._plan is not None
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise ConfigError(f"samples must be a positive integer; got {samples!r}")
        if not self._plan.units:
            raise QuantDebugError("no quantized layer to rank: see debugger.coverage()")
        feeds = list(itertools.islice(iter(self._debug), samples))
        evidence = layer_evidence(self.float_model, self._plan, feeds)
        self._culprits = measure_culprits(
            self.float_model,
            self._plan,
            feeds,
            calibration=self.calibration,
            evidence=evidence,
            weight_records=self.weight_statistics(),
            precisions=self._precisions if self._external is None else None,
        )
        self._rows = self._with_impact(self._rows)
        return CulpritFrame.from_measurement(self._culprits)

    # -- drill-down ---------------------------------------------------------------------------
    def weight_statistics(self) -> list[dict[str, Any]]:
        """Per quantized weight and bias: scale, max abs error, SQNR, spread of per-channel ranges."""
        from quantdebug.pipeline.results import weight_statistics

        assert self._plan is not None
        return weight_statistics(self.float_model, self._plan.qdq)

    def _unit_named(self, name: str) -> Any:
        assert self._plan is not None
        for unit in self._plan.units:
            if name in (unit.node, unit.float_tensor):
                return unit
        names = [u.node for u in self._plan.units] + [u.float_tensor for u in self._plan.units]
        raise ConfigError(f"no verified layer named {name!r};{suggest(name, names) or ''} see debugger.layer_names")

    def layer_tensors(self, name: str, sample_index: int = 0) -> dict[str, np.ndarray]:
        """Float tensor, quantized tensor (dequantized) and their difference for one layer and sample."""
        unit = self._unit_named(name)
        if sample_index < 0:
            raise ConfigError(f"sample_index must be >= 0; got {sample_index}")
        found, seen = self._tensors_for([unit.float_tensor], range(sample_index, sample_index + 1))
        if not found:
            raise ConfigError(f"sample_index {sample_index} is past the end of the debug dataset ({seen} samples)")
        f, q = found[0][unit.float_tensor]
        return {"float": f, "quantized": q, "diff": q - f}

    def _tensors_for(
        self, names: list[str], indices: range
    ) -> tuple[list[dict[str, tuple[np.ndarray, np.ndarray]]], int]:
        """(float, dequantized) tensors of ``names`` for the debug samples in ``indices``, in one pass over
        the dataset that stops after the last of them; also how many samples were read."""
        from quantdebug.runtime import make_session

        assert self._plan is not None
        units = [self._unit_named(n) for n in names]
        if self._raw_graph is None:
            self._raw_graph = build_debug_model(
                self._plan.optimized,
                self.float_model,
                self._plan.units,
                whole_model=self._options.verify_mode == "whole_model",
                raw=True,
            )
            self._raw_session = make_session(
                self._raw_graph.model, level=self._options.graph_optimization_level, what="debug model"
            )
        graph = self._raw_graph
        fetch = []
        for unit in units:
            _, deq_name, ref_name = graph.raw_outputs[graph.units.index(unit)]
            fetch += [ref_name, deq_name]
        found: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []
        seen = 0
        for index, feed in enumerate(itertools.islice(self._debug, indices.stop)):
            seen = index + 1
            if index in indices:
                full = dict(feed)
                full[ROWS_INPUT] = np.array([1, -1], dtype=np.int64)
                values = self._raw_session.run(fetch, full)
                found.append({u.float_tensor: (values[2 * k], values[2 * k + 1]) for k, u in enumerate(units)})
        return found, seen

    # -- results ------------------------------------------------------------------------------
    def _require_rows(self) -> list[LayerRow]:
        if self._rows is None:
            raise QuantDebugError("no statistics yet: call debugger.run() first")
        return self._rows

    @property
    def layer_rows(self) -> list[LayerRow]:
        return list(self._require_rows())

    def _metric_columns(self) -> list[str]:
        opts = self._options
        return list(DEFAULT_METRICS) + list(opts.layer_debug_metrics) + list(opts.layer_direct_compare_metrics)

    def histograms(self, top: int = 6, samples: int = 4, bins: int = 64) -> dict[str, dict[str, list[float]]]:
        """Float and quantized value histograms of the ``top`` worst tensors, from a bounded pass.

        Only the first ``samples`` debug samples are read, and only these tensors are fetched.
        """
        rows = sorted(
            (r for r in self._require_rows() if r.rmse_over_scale == r.rmse_over_scale),
            key=lambda r: -r.rmse_over_scale,
        )[:top]
        collected: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {r.tensor_name: ([], []) for r in rows}
        found, _ = self._tensors_for([r.tensor_name for r in rows], range(samples))  # fewer if the data ends
        for tensors in found:
            for name, (f, q) in tensors.items():
                collected[name][0].append(f.reshape(-1))
                collected[name][1].append(q.reshape(-1))
        out: dict[str, dict[str, list[float]]] = {}
        for name, (fs, qs) in collected.items():
            if not fs:
                continue
            f, q = np.concatenate(fs), np.concatenate(qs)
            finite = np.concatenate([f[np.isfinite(f)], q[np.isfinite(q)]])
            if finite.size == 0:
                continue
            lo, hi = float(finite.min()), float(finite.max())
            edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
            out[name] = {
                "edges": edges.tolist(),
                "float": np.histogram(f, edges)[0].astype(float).tolist(),
                "quantized": np.histogram(q, edges)[0].astype(float).tolist(),
            }
        return out

    def plot(self) -> list[Any]:
        """The tutorial's Step 3 plots (range and rmse/scale per layer) as matplotlib figures."""
        from quantdebug.report import plot_statistics

        return plot_statistics(Statistics(self._require_rows(), self._metric_columns()))

    def statistics(self, histograms: int = 0) -> Statistics:
        """The results of the last run as a saveable Statistics object.

        ``histograms=N`` adds float-vs-quantized histograms of the N worst tensors (a short second
        pass over a few samples) for the HTML report.
        """
        from quantdebug.pipeline.results import provenance

        extras: dict[str, Any] = {}
        if self._culprits is not None:
            extras["culprits"] = stored_culprits(self._culprits)
        if histograms:
            extras["histograms"] = self.histograms(top=histograms)
        return Statistics(
            layers=self._require_rows(),
            metric_names=self._metric_columns(),
            verify_mode=self._options.verify_mode,
            model_statistics=dict(self.model_statistics),
            coverage=self.coverage(),
            provenance=provenance(
                self._prepared.fingerprint,
                self.quant_config,
                self._options,
                self._debug_fingerprint,
                graph_name=self._prepared.user_model.graph.name,
            ),
            extras=extras,
        )

    @property
    def layer_statistics(self) -> dict[str, dict[str, float]]:
        """{tensor_name: {metric: value}} for every verified tensor, in graph order (as TFLite's)."""
        return {r.tensor_name: dict(r.metrics) for r in self._require_rows()}

    def layer_statistics_dump(self, file: IO[str]) -> None:
        """Write the statistics as CSV with TFLite's column order, then ``node_name``."""
        Statistics(self._require_rows(), self._metric_columns()).dump_csv(file)

    def layer_statistics_csv(self) -> str:
        """The CSV of ``layer_statistics_dump`` as a string."""
        return Statistics(self._require_rows(), self._metric_columns()).csv_text()

    def layer_statistics_frame(self) -> Any:
        """A pandas DataFrame: the CSV columns plus 'precision', 'range' and 'rmse/scale'."""
        return Statistics(self._require_rows(), self._metric_columns()).frame()

    def coverage(self) -> list[dict[str, str]]:
        """Every node of the model with its status and the reason for it."""
        assert self._plan is not None
        op_types = set(self.quant_config.op_types_to_quantize or default_op_types())
        return node_coverage(self.float_model, self._plan, self._pre, self._precisions, op_types)


def _prepare_for_external(float_model: ModelSource, quantized: onnx.ModelProto) -> PreparedModel:
    """Pick the pre-processing of the float model whose names match the given quantized model best.

    Other tools quantize either the raw export or an onnxruntime-optimized copy of it; both are
    tried, and the one under which more quantized units map back to float twins is kept.
    """
    if not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in quantized.graph.node):
        raise ModelError(
            "the quantized model has no QuantizeLinear/DequantizeLinear nodes: only QDQ-format models can be "
            "debugged (quantize with quant_format=QuantFormat.QDQ)"
        )
    best: tuple[int, PreparedModel] | None = None
    for optimize in (False, True):
        prepared = PreparedModel(float_model, optimize=optimize)
        plan = build_plan(prepared.model, quantized, None)
        if best is None or len(plan.units) > best[0]:
            best = (len(plan.units), prepared)
    assert best is not None
    return best[1]


__all__ = ["LayerRow", "ModelError", "QuantizationDebugger"]
