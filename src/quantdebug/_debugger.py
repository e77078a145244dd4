"""QuantizationDebugger: TensorFlow Lite's quantization debugger workflow for ONNX models.

A thin front over the pipeline (``quantdebug.pipeline``): it keeps one plan and the state of the
last run, and hands every measurement to the stage that owns its data.
"""

from __future__ import annotations

import itertools
import os
import warnings
from typing import IO, Any

import numpy as np
import onnx

from quantdebug._api import debug_inputs
from quantdebug._api import fix as _fix
from quantdebug.config import DEFAULT_METRICS, DebugOptions, QuantConfig
from quantdebug.errors import ConfigError, QuantDebugError
from quantdebug.executors import Executor
from quantdebug.fix import (
    CULPRIT_SAMPLES,
    SwitchRunner,
    layer_evidence,
    measure_culprits,
    sensitivity_table,
    stored_culprits,
)
from quantdebug.pipeline.calibrate import Calibration
from quantdebug.pipeline.plan import Plan, build_plan, default_op_types, topo_index
from quantdebug.pipeline.prepare import ModelSource
from quantdebug.pipeline.results import (
    LayerRow,
    Statistics,
    layer_rows,
    model_statistics,
    node_coverage,
    provenance,
    weight_statistics,
    with_impact,
    worst_tensors,
)
from quantdebug.pipeline.run import DebugGraph, DebugJob, DebugRun, RunState
from quantdebug.support import external


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
        inputs = debug_inputs(
            float_model,
            representative_dataset,
            debug_dataset,
            quant_config,
            debug_options,
            calibration,
            quantized_model,
        )
        self.quant_config, self._options, self.calibration = inputs.quant_config, inputs.options, inputs.calibration
        self._prepared, self._external = inputs.prepared, inputs.external
        self._rep, self._debug = inputs.rep, inputs.debug
        self._pre, self.float_model = self._prepared.pre, self._prepared.model
        self._tensor_idx = topo_index(self.float_model)
        self._plan: Plan | None = None
        self.model_statistics: dict[str, float] = {}
        self.fidelity: float | None = None
        self.samples_seen = 0
        self._debug_fingerprint = ""
        self._replan()

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

    def precisions(self) -> dict[str, str]:
        """The precision every pre-processed node gets under the current config and options."""
        rows = {u.float_tensor: u.twin for u in self._plan.units} if self._plan is not None else {}
        opts = self._options
        return self._prepared.precisions(self.quant_config, opts.denylisted_nodes, opts.denylisted_ops, rows)

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
            self._precisions = self.precisions()
            self._plan = self._prepared.quantized_plan(self.calibration, self.quant_config, self._precisions, self._rep)
        if old is not None:  # a model over 2 GB: the old plan's quantized weights are gigabytes on disk
            for model in (old.qdq, old.optimized):
                external.release(model, keep=self.float_model)
        self._run = DebugRun(self._plan, self.float_model, self._options, self._debug)
        self._rows: list[LayerRow] | None = None
        self._culprits: dict[str, Any] | None = None  # the last culprits() measurement, for this plan
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
        return self._run.graph()

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
        return self._run.job()

    @property
    def _state(self) -> RunState | None:
        return self._run.state

    def run(self, *, resume: bool = False, executor: Executor | None = None) -> None:
        """Run the debug model over the debug dataset and accumulate every layer's statistics.

        If the run is interrupted (Ctrl-C or an error in the data), the statistics of the samples
        done so far stay available and ``run(resume=True)`` continues after them. ``executor``
        (for example ``qd.RayExecutor()``) spreads the samples over workers; the merged
        statistics equal a single-process run's. An interrupted run on an executor keeps the
        statistics of the work that had finished; it does not resume (``resume`` starts over).
        """
        if not self._graph().units:
            raise QuantDebugError(
                "nothing to verify: no quantized layer runs in this model (all left in float or unmapped); "
                "see debugger.coverage()"
            )

        state = self._run.run(resume=resume, executor=executor, on_partial=self._finish)
        self._finish(state)
        if self._options.impact and self._culprits is None:
            self.culprits()
        self._rows = with_impact(self._rows, self._culprits)

    def _finish(self, state: RunState) -> None:
        assert self._plan is not None
        rows = layer_rows(self._plan, self._graph(), state, self._pre.covers, self._tensor_idx)
        self._rows = with_impact(rows, self._culprits)
        self.model_statistics = model_statistics(state)
        self.samples_seen = state.samples
        self.fidelity = state.fidelity
        self._debug_fingerprint = state.fingerprint()

    # -- fixing -------------------------------------------------------------------------------
    def fix(self, eval_fn: Any = None, **kwargs: Any) -> Any:
        """``qd.fix`` on this debugger's model, debug data, config and Calibration (no re-calibration)."""
        if self.calibration is None:
            raise ConfigError(
                "fix re-quantizes the model, which needs a calibration; "
                "this debugger was given a model quantized elsewhere"
            )
        return _fix(
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
        from quantdebug.report import CulpritFrame  # start-up time: pandas loads when asked for

        assert self._plan is not None
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise ConfigError(f"samples must be a positive integer; got {samples!r}")
        if not self._plan.units:
            raise QuantDebugError("no quantized layer to rank: see debugger.coverage()")
        feeds = list(itertools.islice(iter(self._debug), samples))
        self._culprits = measure_culprits(
            self.float_model,
            self._plan,
            feeds,
            calibration=self.calibration,
            evidence=layer_evidence(self.float_model, self._plan, feeds),
            weight_records=self.weight_statistics(),
            precisions=self._precisions if self._external is None else None,
        )
        self._rows = with_impact(self._rows, self._culprits)
        return CulpritFrame.from_measurement(self._culprits)

    # -- drill-down ---------------------------------------------------------------------------
    def weight_statistics(self) -> list[dict[str, Any]]:
        """Per quantized weight and bias: scale, max abs error, SQNR, spread of per-channel ranges."""
        assert self._plan is not None
        return weight_statistics(self.float_model, self._plan.qdq)

    def layer_tensors(self, name: str, sample_index: int = 0) -> dict[str, np.ndarray]:
        """Float tensor, quantized tensor (dequantized) and their difference for one layer and sample."""
        return self._run.probe.layer_tensors(name, sample_index)

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

    def _table(self) -> Statistics:
        return Statistics(self._require_rows(), self._metric_columns())

    def histograms(self, top: int = 6, samples: int = 4, bins: int = 64) -> dict[str, dict[str, list[float]]]:
        """Float and quantized value histograms of the ``top`` worst tensors, from a bounded pass.

        Only the first ``samples`` debug samples are read, and only these tensors are fetched.
        """
        return self._run.probe.histograms(worst_tensors(self._require_rows(), top), samples, bins)

    def plot(self) -> list[Any]:
        """The tutorial's Step 3 plots (range and rmse/scale per layer) as matplotlib figures."""
        from quantdebug.report import plot_statistics  # import cycle: report imports the pipeline's results

        return plot_statistics(self._table())

    def statistics(self, histograms: int = 0) -> Statistics:
        """The results of the last run as a saveable Statistics object.

        ``histograms=N`` adds float-vs-quantized histograms of the N worst tensors (a short second
        pass over a few samples) for the HTML report.
        """
        extras: dict[str, Any] = {}
        if self._culprits is not None:
            extras["culprits"] = stored_culprits(self._culprits)
        if histograms:
            extras["histograms"] = self.histograms(top=histograms)
        rows, opts, user = self._require_rows(), self._options, self._prepared.user_model
        made = provenance(self._prepared.fingerprint, self.quant_config, opts, self._debug_fingerprint, user.graph.name)
        return Statistics(
            layers=rows, metric_names=self._metric_columns(), verify_mode=opts.verify_mode,
            model_statistics=dict(self.model_statistics), coverage=self.coverage(), provenance=made, extras=extras,
        )  # fmt: skip

    @property
    def layer_statistics(self) -> dict[str, dict[str, float]]:
        """{tensor_name: {metric: value}} for every verified tensor, in graph order (as TFLite's)."""
        return {r.tensor_name: dict(r.metrics) for r in self._require_rows()}

    def layer_statistics_dump(self, file: IO[str]) -> None:
        """Write the statistics as CSV with TFLite's column order, then ``node_name``."""
        self._table().dump_csv(file)

    def layer_statistics_csv(self) -> str:
        """The CSV of ``layer_statistics_dump`` as a string."""
        return self._table().csv_text()

    def layer_statistics_frame(self) -> Any:
        """A pandas DataFrame: the CSV columns plus 'precision', 'range' and 'rmse/scale'."""
        return self._table().frame()

    def coverage(self) -> list[dict[str, str]]:
        """Every node of the model with its status and the reason for it."""
        assert self._plan is not None
        op_types = set(self.quant_config.op_types_to_quantize or default_op_types())
        return node_coverage(self.float_model, self._plan, self._pre, self._precisions, op_types)


__all__ = ["LayerRow", "QuantizationDebugger"]
