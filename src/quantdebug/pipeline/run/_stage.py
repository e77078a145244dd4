"""The run stage's entry: a plan and a debug graph to the job executors ship, the run (here or on an
executor) that keeps what it measured when it is interrupted, and DebugRun, which holds one plan's."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import onnx

from quantdebug.config import DebugOptions
from quantdebug.data import Dataset
from quantdebug.errors import RunInterrupted
from quantdebug.pipeline.plan import Plan
from quantdebug.pipeline.run._debug_model import DebugGraph, build_debug_model
from quantdebug.pipeline.run._probe import TensorProbe
from quantdebug.pipeline.run._run import DebugJob, DebugLoop, RunState, skip
from quantdebug.support import progress_bar

if TYPE_CHECKING:  # executors build on this package: the protocol is only a type here
    from quantdebug.executors import Executor


def debug_job(plan: Plan, graph: DebugGraph, options: DebugOptions, float_model: onnx.ModelProto) -> DebugJob:
    """What a process needs to run ``graph``: its models as bytes and each unit's custom-metric parameters
    (scale, zero point, and the shift between the plan's zero point and the one onnxruntime runs)."""
    init = {i.name: i for i in plan.optimized.graph.initializer}
    params = []
    for unit in graph.units:
        row = plan.info[unit.output]
        zp = unit.qparams.zero_point
        runtime_zp = int(onnx.numpy_helper.to_array(init[zp]).reshape(-1)[0]) if zp in init else 0
        params.append((row.scale, row.zero_point, row.zero_point - runtime_zp))
    return DebugJob(
        graph=graph,
        options=options,
        deployed=plan.qdq.SerializeToString() if options.check_fidelity else None,
        float_model=float_model.SerializeToString() if options.model_debug_metrics else None,
        custom_params=params,
    )


def run_debug(
    job: Callable[[], DebugJob],
    dataset: Dataset,
    *,
    executor: Executor | None,
    loop: DebugLoop | None,
    resume: RunState | None,
    on_interrupt: Callable[[RunState | None], None],
) -> tuple[RunState, DebugLoop | None]:
    """The debug run of ``job()`` over ``dataset``: on ``executor``, or here on ``loop`` (built when None)
    after the samples ``resume`` already holds. Returns the state and the loop, kept for later runs.

    When the run is interrupted, ``on_interrupt`` gets what can be kept before RunInterrupted goes up:
    here the state of the samples done (a later run resumes after them); on an executor the merged
    finished shards, or None: they are no prefix of the data to resume from.
    """
    batch_free = all(s.batch_free for s in dataset.specs)
    if executor is not None:
        try:
            return executor.run_debug(job(), dataset, batch_free=batch_free), loop
        except RunInterrupted as exc:
            partial = getattr(exc, "state", None)
            on_interrupt(partial if isinstance(partial, RunState) and partial.samples else None)
            raise
    if loop is None:
        loop = job().loop()
    state = resume if resume is not None else RunState.empty(len(loop.graph.units), loop.options)
    feeds = skip(iter(dataset), state.samples)
    try:
        with progress_bar("debugging", loop.options.progress) as advance:
            loop.process(feeds, state, batch_free=batch_free, advance=advance)
    except (KeyboardInterrupt, Exception) as exc:
        on_interrupt(state)
        raise RunInterrupted(
            f"the debug run stopped after {state.samples} samples ({type(exc).__name__}: {exc}); the statistics "
            "of those samples are available, and debugger.run(resume=True) continues after them"
        ) from exc
    return state, loop


class DebugRun:
    """One plan's debug graph (built on first use), sessions, tensor probe and the state of its last run:
    what a debugger keeps between runs until its plan changes."""

    def __init__(self, plan: Plan, float_model: onnx.ModelProto, options: DebugOptions, dataset: Dataset) -> None:
        self.plan, self.float_model, self.options, self.dataset = plan, float_model, options, dataset
        whole_model = options.verify_mode == "whole_model"
        self.probe = TensorProbe(
            plan, float_model, dataset, whole_model=whole_model, level=options.graph_optimization_level
        )
        self._graph: DebugGraph | None = None
        self.loop: DebugLoop | None = None  # the debug sessions, kept for later runs on the same plan
        self.state: RunState | None = None  # the last run's, for resume

    def graph(self) -> DebugGraph:
        if self._graph is None:
            self._graph = build_debug_model(
                self.plan.optimized,
                self.float_model,
                self.plan.units,
                whole_model=self.options.verify_mode == "whole_model",
                raw=self.options.has_raw_tensor_metrics,
            )
        return self._graph

    def job(self) -> DebugJob:
        return debug_job(self.plan, self.graph(), self.options, self.float_model)

    def run(self, *, resume: bool, executor: Executor | None, on_partial: Callable[[RunState], None]) -> RunState:
        """``run_debug`` on this plan; ``on_partial`` sees the statistics an interrupted run keeps."""

        def keep(part: RunState | None) -> None:  # an executor's shards are no prefix: resume starts over
            self.state = part if executor is None else None
            if part is not None and part.samples:
                on_partial(part)

        resumed = self.state if resume and executor is None else None
        self.state, self.loop = run_debug(
            self.job, self.dataset, executor=executor, loop=self.loop, resume=resumed, on_interrupt=keep
        )
        return self.state
