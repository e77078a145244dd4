"""The indexed quantizer writes, byte for byte, the model onnxruntime's plain ``quantize_static`` writes.

``quantize_with_ranges`` runs onnxruntime's quantizer with its scans answered from indexes
(``indexed_quantizer``); ``indexed=False`` runs it untouched, and is the reference here. Every
indexed run is also made with ``check=True``, so each lookup is compared with onnxruntime's own
full scan as it happens, not only the final bytes, and made again from the memos the first runs
filled (test_ort_memo.py tests those on their own). Models: tests/models.py and tests/fix_models.py,
among them shared initializers and tensors with several readers (``shared_tensors``) and a random
stack of a few hundred nodes (``many_nodes``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnxruntime.quantization import onnx_model, qdq_quantizer, quant_utils
from tests import fix_models, hostile, models
from tests.helpers import session

import quantdebug as qd
from quantdebug.pipeline.plan import _ort_memo, default_op_types, quantize_with_ranges
from quantdebug.pipeline.plan._ort_index import (
    IndexMismatchError,
    indexed_quantizer,
    source_digest,
    support_problem,
)
from quantdebug.pipeline.prepare import prepared_model
from quantdebug.support import external

ONNXModel = onnx_model.ONNXModel


def _calibration(model: onnx.ModelProto, rng: np.random.Generator) -> qd.Calibration:
    return qd.calibrate(model, [models.input_feed(model, rng) for _ in range(4)], progress=False)


def _quantized(model: onnx.ModelProto | Path, calibration: qd.Calibration, config: qd.QuantConfig) -> tuple:
    """The plain and the indexed (checked against full scans) QDQ models of ``model`` for ``config``.

    The indexed one is made three times, as fix makes its candidates (_ort_memo): the first keeps
    the shape-inferred model, the second also the weights' answers, the third takes both from the
    memos; none may differ by a byte from the last.
    """
    prepared = prepared_model(model, config)
    plan = prepared.plan(config, prepared.precisions(config))
    ranges = calibration.ranges(config)
    plain = quantize_with_ranges(prepared.model, ranges, config, plan, indexed=False)
    with indexed_quantizer(check=True) as run:
        earlier = [quantize_with_ranges(prepared.model, ranges, config, plan) for _ in range(2)]
        fast = quantize_with_ranges(prepared.model, ranges, config, plan)
    assert run.active, support_problem()
    for model_made in earlier:
        _assert_same_bytes(model_made, fast)
    return plain, fast


def _assert_same_bytes(plain: onnx.ModelProto, fast: onnx.ModelProto) -> None:
    want, got = plain.SerializeToString(deterministic=True), fast.SerializeToString(deterministic=True)
    if got != want:  # name the first node or initializer that differs, not two blobs
        for field in ("node", "initializer", "value_info", "output"):
            for a, b in zip(getattr(plain.graph, field), getattr(fast.graph, field), strict=False):
                assert a == b, f"first differing {field}: plain {a.name!r}, indexed {b.name!r}"
            assert len(getattr(plain.graph, field)) == len(getattr(fast.graph, field)), f"{field} counts differ"
        assert got == want


WEIGHTED = ("Conv", "MatMul", "Gemm")


def _nodes(model: onnx.ModelProto, ops: tuple[str, ...] = ()) -> list[str]:
    """Nodes of ``model`` as pre-processed, which onnxruntime quantizes (of the op types ``ops``)."""
    chosen = set(ops or default_op_types())
    return [n.name for n in prepared_model(model).model.graph.node if n.op_type in chosen]


def _spread(names: list[str], k: int) -> list[str]:
    """``k`` of ``names``: first, last and evenly between (each node once)."""
    if len(names) <= k:
        return names
    return list(dict.fromkeys(names[round(i * (len(names) - 1) / (k - 1))] for i in range(k)))


ConfigFor = Callable[[onnx.ModelProto], qd.QuantConfig]

CONFIGS: dict[str, ConfigFor] = {
    "default": lambda m: qd.QuantConfig(),
    "float_nodes": lambda m: qd.QuantConfig(node_precision={n: "float" for n in _spread(_nodes(m), 3)}),
    "int16_nodes": lambda m: qd.QuantConfig(node_precision={n: "int16" for n in _spread(_nodes(m), 3)}),
    "int16_activations": lambda m: qd.QuantConfig(activation_type="int16"),
    "per_channel": lambda m: qd.QuantConfig(per_channel=True),
    "per_channel_nodes": lambda m: qd.QuantConfig(per_channel_nodes=_spread(_nodes(m, WEIGHTED), 2)),
    "op_types": lambda m: qd.QuantConfig(op_types_to_quantize=("Conv", "MatMul", "Gemm", "Relu", "Transpose")),
    "symmetric": lambda m: qd.QuantConfig(symmetric_activations=True, symmetric_weights=False),
    "uint8": lambda m: qd.QuantConfig(activation_type="uint8", weight_type="uint8"),
    # onnxruntime's extra options that take its other rewiring paths
    "dedicated_pairs": lambda m: qd.QuantConfig(extra_options={"DedicatedQDQPair": True}),
    "weight_qdq_pairs": lambda m: qd.QuantConfig(
        extra_options={"AddQDQPairToWeight": True, "QDQKeepRemovableActivations": True}
    ),
    "no_output_qdq": lambda m: qd.QuantConfig(extra_options={"OpTypesToExcludeOutputQuantization": ["Conv", "Gemm"]}),
}

ModelFor = Callable[[np.random.Generator], onnx.ModelProto]

# every config on these: Conv/Gemm/MatMul with biases, shared initializers, Transpose/Reshape/Concat,
# Softmax and Clip/Relu (the ranges onnxruntime adjusts), a graph output also read inside the graph
MAIN_MODELS: dict[str, ModelFor] = {
    "all_ops": models.all_ops,
    "shared_tensors": models.shared_tensors,
    "many_nodes": models.many_nodes,
    "mask_and_spike": fix_models.mask_and_spike,
}
# the default, float and int16 nodes on the rest
OTHER_MODELS: dict[str, ModelFor] = {
    name: models.ALL_MODELS[name]
    for name in ("conv_relu", "depthwise", "matmul_gemm", "add_mul_concat", "sigmoid_softmax", "mobilenetv3_block")
}
OTHER_MODELS |= {
    name: models.ALL_MODELS[name] for name in ("reshape_mixes_batch", "multi_io", "attention_mask_sentinel")
}
OTHER_MODELS["badly_scaled_pair"] = fix_models.badly_scaled_pair


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
@pytest.mark.parametrize("model_name", sorted(MAIN_MODELS))
def test_indexed_quantizer_writes_the_plain_quantizers_bytes(
    model_name: str, config_name: str, rng: np.random.Generator
) -> None:
    model = MAIN_MODELS[model_name](rng)
    plain, fast = _quantized(model, _calibration(model, rng), CONFIGS[config_name](model))
    _assert_same_bytes(plain, fast)


@pytest.mark.parametrize("config_name", ["default", "float_nodes", "int16_nodes"])
@pytest.mark.parametrize("model_name", sorted(OTHER_MODELS))
def test_indexed_quantizer_on_other_models(model_name: str, config_name: str, rng: np.random.Generator) -> None:
    model = OTHER_MODELS[model_name](rng)
    plain, fast = _quantized(model, _calibration(model, rng), CONFIGS[config_name](model))
    _assert_same_bytes(plain, fast)


def test_unnamed_nodes(rng: np.random.Generator) -> None:
    """Nodes without names: onnxruntime's by-name rewiring (a shared bias) cannot tell them apart."""
    model = models.unnamed_nodes(rng)
    calibration = _calibration(model, rng)
    for config in (qd.QuantConfig(), qd.QuantConfig(per_channel=True), qd.QuantConfig(activation_type="uint8")):
        _assert_same_bytes(*_quantized(model, calibration, config))


def test_large_random_model_with_most_nodes_in_float(rng: np.random.Generator) -> None:
    """Several hundred nodes, half of those onnxruntime quantizes left in float, some raised to 16 bits."""
    model = models.many_nodes(rng, blocks=150)
    assert len(model.graph.node) > 200
    calibration = _calibration(model, rng)
    names = _nodes(model)
    chosen = rng.permutation(len(names))
    floats = [names[i] for i in chosen[: len(names) // 2]]
    wide = [names[i] for i in chosen[len(names) // 2 : len(names) // 2 + 5]]
    config = qd.QuantConfig(
        node_precision={**{n: "float" for n in floats}, **{n: "int16" for n in wide}},
        per_channel_nodes=_spread(_nodes(model, WEIGHTED), 6),
    )
    plain, fast = _quantized(model, calibration, config)
    _assert_same_bytes(plain, fast)
    # and the indexed model is a model onnxruntime runs, giving the plain one's outputs. Without graph
    # optimizations: on some draws onnxruntime's QDQ propagation pushes a QuantizeLinear through a float
    # Reshape between 8- and 16-bit nodes and then refuses its own zero point's type (both models alike)
    feed = models.input_feed(model, rng, batch=2)
    outputs = [session(m, level="disabled").run(None, feed) for m in (fast, plain)]
    for got, want in zip(*outputs, strict=True):
        np.testing.assert_array_equal(got, want)


def test_model_over_the_protobuf_limit(
    rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path for models whose weights stay in external data (the 2 GB limit lowered below a small model's
    weights, as tests/pipeline/prepare/test_robust_models.py does): the same nodes, and the same outputs
    from the weights each quantizer keeps in a data file of its own."""
    model = models.shared_tensors(rng)
    calibration = _calibration(model, rng)
    path = hostile.save_external(model, tmp_path / "ext")
    weights = os.path.getsize(path.parent / "weights.bin")
    monkeypatch.setattr(external, "PROTOBUF_LIMIT", os.path.getsize(path) + weights // 2)
    monkeypatch.setattr(external, "MIN_EXTERNAL_BYTES", 64)
    config = qd.QuantConfig(node_precision={"conv_b": "float"})
    assert external.has_references(prepared_model(path, config).model), "the weights stayed in external data"
    plain, fast = _quantized(path, calibration, config)
    assert [n.SerializeToString() for n in fast.graph.node] == [n.SerializeToString() for n in plain.graph.node]
    feed = models.input_feed(model, rng, batch=2)
    for got, want in zip(session(fast).run(None, feed), session(plain).run(None, feed), strict=True):
        np.testing.assert_array_equal(got, want)


# -- the guard and the swap


def test_this_onnxruntime_is_the_one_the_indexes_were_checked_against() -> None:
    """Fails when onnxruntime changes: check the new quantizer sources (SOURCE_FILES) for mutations of nodes
    or initializers that bypass the swapped methods, run this file, then record ``source_digest()`` for the
    new version in EXPECTED_SOURCES. Until then quantize runs the plain quantizer (slower, same bytes)."""
    assert support_problem() is None, f"{support_problem()}; digest {source_digest()}"


def test_other_sources_fall_back_to_the_plain_quantizer(rng: np.random.Generator) -> None:
    version = onnxruntime.__version__
    assert "is not one the indexes were checked against" in str(support_problem({"0.0.1": "0" * 64}))
    assert "sources differ" in str(support_problem({version: "0" * 64}))
    model = models.shared_tensors(rng)
    calibration = _calibration(model, rng)
    config = qd.QuantConfig(node_precision={"conv_b": "float"})
    prepared = prepared_model(model, config)
    plan = prepared.plan(config, prepared.precisions(config))
    with indexed_quantizer(expected={version: "0" * 64}) as run:
        assert not run.active
        assert vars(ONNXModel)["replace_input_of_all_nodes"] is _PLAIN["replace_input_of_all_nodes"]
        assert qdq_quantizer.find_by_name is quant_utils.find_by_name
        assert qdq_quantizer.compute_data_quant_params is _ort_memo.original.compute_data_quant_params
        assert quant_utils.quantize_nparray is _ort_memo.original.quantize_nparray
        fallback = quantize_with_ranges(prepared.model, calibration.ranges(config), config, plan, indexed=False)
    plain = quantize_with_ranges(prepared.model, calibration.ranges(config), config, plan, indexed=False)
    _assert_same_bytes(plain, fallback)


_PLAIN = dict(vars(ONNXModel))


def test_the_swap_is_undone_and_stays_on_its_thread(rng: np.random.Generator) -> None:
    model = models.shared_tensors(rng)
    elsewhere: dict[str, object] = {}

    def other_thread() -> None:
        # onnxruntime's own dict, not an indexed view, on a thread outside the context
        elsewhere["consumers"] = ONNXModel(model).input_name_to_nodes()
        elsewhere["bias"] = qdq_quantizer.find_by_name("shared_conv.bias", model.graph.initializer)

    with indexed_quantizer() as run:
        assert run.active
        assert vars(ONNXModel)["replace_input_of_all_nodes"] is not _PLAIN["replace_input_of_all_nodes"]
        assert not isinstance(ONNXModel(model).input_name_to_nodes(), dict)  # the indexed view, here
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert type(elsewhere["consumers"]) is dict
    assert len(elsewhere["consumers"]["relu_out"]) == 2  # type: ignore[index]
    assert elsewhere["bias"] is model.graph.initializer[1]
    assert all(vars(ONNXModel)[name] is attribute for name, attribute in _PLAIN.items())
    assert qdq_quantizer.find_by_name is quant_utils.find_by_name
    assert onnx_model.find_by_name is quant_utils.find_by_name


def test_the_indexed_view_answers_like_onnxruntimes_dict(rng: np.random.Generator) -> None:
    model = models.many_nodes(rng)
    want = _PLAIN["input_name_to_nodes"](ONNXModel(model))
    with indexed_quantizer(check=True):
        indexed = ONNXModel(model)
        view = indexed.input_name_to_nodes()
        for name, nodes in want.items():
            assert name in view and view[name] == nodes
        assert "no such tensor" not in view and "" not in view
        assert dict(view) == want
        # a view kept while the graph changes answers as the dict of its moment would
        tensor = max(want, key=lambda t: len(want[t]))
        kept = indexed.input_name_to_nodes()
        indexed.replace_input_of_all_nodes(tensor, "renamed")
        assert kept[tensor] == want[tensor] and "renamed" not in kept
        now = indexed.input_name_to_nodes()
        assert tensor not in now and now["renamed"] == want[tensor]


def test_check_mode_catches_a_mutation_behind_the_indexes_back(rng: np.random.Generator) -> None:
    model = models.shared_tensors(rng)
    with pytest.raises(IndexMismatchError, match=r"readers of 'relu_out'"):
        with indexed_quantizer(check=True):
            indexed = ONNXModel(model)
            assert len(indexed.input_name_to_nodes()["relu_out"]) == 2  # builds the index
            transpose = next(n for n in model.graph.node if n.name == "transpose")
            transpose.input[0] = "input"  # not through ONNXModel: the index still has transpose reading relu_out
            indexed.replace_input_of_all_nodes("relu_out", "relu_dq")
