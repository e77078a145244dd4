"""The types that pass between the pipeline's stages, in the order data flows (ai-edge-quantizer's
``qtyping``): each stage's entry function takes the previous stage's type and returns its own.

=========== ======================================= =============================================
stage       entry                                   hands on
=========== ======================================= =============================================
prepare     ``prepare.prepared_model``              ``PreparedModel`` (pre-processed float model)
transform   ``transform.transform_float``           the float model with weights transformed, and records
calibrate   ``calibrate.calibrate_model``           ``Calibration`` (mergeable, serializable)
plan        ``PreparedModel.quantized_plan`` /      ``Plan`` (QDQ model, optimized model, ``Unit``
            ``plan.build_plan``                     per verified layer, ``RowInfo`` per output)
run         ``run.debug_job`` + ``run.run_debug``   ``DebugJob`` (what executors ship), ``RunState``
results     ``results.layer_rows``                  ``LayerRow`` per unit, then ``Statistics``
=========== ======================================= =============================================

The classes live with the stage that makes them; this module declares them in one place for the
packages on top (fix, report, executors, the debugger). No stage imports it.
"""

from quantdebug.pipeline.calibrate import Calibration
from quantdebug.pipeline.plan import Plan, PlannedPrecision, QParams, RowInfo, Skipped, Unit
from quantdebug.pipeline.prepare import ModelSource, PreparedModel, Preprocessed
from quantdebug.pipeline.results import LayerRow, Statistics
from quantdebug.pipeline.run import DebugGraph, DebugJob, RunState

__all__ = [
    "Calibration",
    "DebugGraph",
    "DebugJob",
    "LayerRow",
    "ModelSource",
    "Plan",
    "PlannedPrecision",
    "PreparedModel",
    "Preprocessed",
    "QParams",
    "RowInfo",
    "RunState",
    "Skipped",
    "Statistics",
    "Unit",
]
