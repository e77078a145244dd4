"""The debug pipeline, one subpackage per stage in the order data flows, each with one entry function:

``prepare`` (load, external data, pre-process: ``prepared_model`` -> PreparedModel) -> ``transform``
(function-preserving weight transforms: ``transform_float``) -> ``calibrate`` (ranges, one streaming pass:
``calibrate_model`` -> Calibration) -> ``plan`` (precisions, quantize, map float nodes to quantized
units: ``build_plan`` -> Plan) -> ``run`` (debug graph, loop, accumulate: ``debug_job``,
``run_debug`` -> RunState) -> ``results`` (``layer_rows`` -> LayerRow, Statistics, coverage).

``quantdebug.pipeline.types`` declares the types that pass between the stages in one place.
"""
