"""The debug pipeline, one subpackage per stage in the order data flows:

``prepare`` (load, external data, pre-process) -> ``transform`` (function-preserving weight
transforms) -> ``calibrate`` (ranges, one streaming pass) -> ``plan`` (precisions, quantize,
map float nodes to quantized units) -> ``run`` (debug graph, loop, accumulate) -> ``results``
(layer rows, statistics, coverage).
"""
