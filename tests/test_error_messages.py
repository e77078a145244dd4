"""Errors that blame the right thing (issue 16): typos named all at once, the user's eval function blamed
for its own exceptions, layout mix-ups answered with the transpose that fixes them, casts noted."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from tests import models
from tests.helpers import dataset

import quantdebug as qd
from quantdebug.frontends import as_seed_dataset


def _tensors_named_like_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every node's output tensor renamed to the node's name, as TFLite conversions do."""
    renamed = {n.output[0]: n.name for n in model.graph.node if n.output[0] not in {o.name for o in model.graph.output}}
    for node in model.graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
        node.output[:] = [renamed.get(o, o) for o in node.output]
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    return model


def test_denylist_typos_are_all_named_once_with_unique_suggestions(rng: np.random.Generator) -> None:
    model = _tensors_named_like_nodes(models.conv_relu(rng))
    feeds = [models.input_feed(model, rng) for _ in range(2)]
    calibration = qd.calibrate(model, dataset(feeds))
    with pytest.raises(qd.ConfigError) as one:
        qd.quantize(model, calibration, denylisted_nodes=["conv9"])
    message = str(one.value)
    assert "'conv9'" in message and "did you mean" in message
    for name in ("conv1", "conv2", "conv3"):  # a node and its tensor share the name: suggested once
        assert message.count(f"'{name}'") <= 1, message
    with pytest.raises(qd.ConfigError) as several:
        qd.quantize(model, calibration, denylisted_nodes=["conv9", "relu1", "relu7", "conv8"])
    message = str(several.value)
    assert "3 names match no node or tensor" in message, message
    for typo in ("'conv9'", "'relu7'", "'conv8'"):
        assert typo in message, message
    assert "'relu1' (" not in message  # a valid name is not reported
    with pytest.raises(qd.ConfigError) as far:  # nothing close: no suggestion, and no stray ';'
        qd.quantize(model, calibration, denylisted_nodes=["zzzzzzzzzz"])
    assert str(far.value).startswith("denylisted_nodes: no node or tensor named 'zzzzzzzzzz' (")
    with pytest.raises(qd.ConfigError, match=r"'relux'.*'conv0'"):
        qd.quantize(model, calibration, qd.QuantConfig(node_precision={"relux": "int16", "conv0": "float"}))


def test_an_exception_in_the_eval_function_names_the_function_and_the_candidate(rng: np.random.Generator) -> None:
    model, _ = models.wide_range_node(rng)
    feeds = [models.input_feed(model, rng) for _ in range(4)]
    calls = {"n": 0}

    def evaluate(candidate: object) -> float:
        calls["n"] += 1
        if calls["n"] == 2:  # the float baseline works; the first quantized candidate does not
            raise KeyError("logits")
        return 1.0

    with pytest.raises(qd.EvalFunctionError) as info:
        qd.fix(model, dataset(feeds), eval_fn=evaluate, target=0.5)
    message = str(info.value)
    assert "the eval function raised KeyError: 'logits'" in message
    assert "evaluation 2" in message and "'int8' (all int8)" in message
    assert isinstance(info.value.__cause__, KeyError), "the user's exception and traceback are chained"
    assert info.value.__cause__.__traceback__ is not None


def test_input_name_mismatch_prints_no_empty_list(rng: np.random.Generator) -> None:
    model = models.multi_io(rng)
    feed = models.input_feed(model, rng)
    only_image = {"image": feed["image"]}
    with pytest.raises(qd.DatasetError) as info:
        qd.calibrate(model, dataset([only_image]))
    assert "missing ['features']" in str(info.value) and "unknown" not in str(info.value)
    with pytest.raises(qd.DatasetError) as info:
        qd.calibrate(model, dataset([{**feed, "extra": feed["image"]}]))
    assert "unknown ['extra']" in str(info.value) and "missing" not in str(info.value)


@pytest.mark.parametrize("form", ["callable", "list", "array"])
def test_nhwc_data_for_an_nchw_model_gets_the_transpose(rng: np.random.Generator, form: str) -> None:
    model = models.conv_relu(rng)  # input [N, 3, 16, 16]
    nhwc = rng.standard_normal((4, 16, 16, 3)).astype(np.float32)
    samples = [nhwc[i : i + 1] for i in range(4)]
    data: object = {"callable": lambda: iter(samples), "list": samples, "array": nhwc}[form]
    with pytest.raises(qd.DatasetError) as info:
        qd.calibrate(model, data if form != "array" else as_seed_dataset(nhwc))
    message = str(info.value)
    assert "NHWC" in message and "np.transpose(x, (0, 3, 1, 2))" in message, message
    # the hint is right: the transposed data calibrates
    fixed = [np.transpose(x, (0, 3, 1, 2)) for x in samples]
    assert qd.calibrate(model, fixed).num_samples == 4


def test_nchw_data_for_an_nhwc_model_gets_the_transpose_back(rng: np.random.Generator) -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 8, 8, 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 8, 8, 3])
    model = onnx.helper.make_model(
        onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"], name="relu")], "nhwc", [x], [y]),
        opset_imports=[onnx.helper.make_opsetid("", 17)],
    )
    nchw = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32)]
    with pytest.raises(qd.DatasetError, match=r"channels-first \(NCHW\).*np\.transpose\(x, \(0, 2, 3, 1\)\)"):
        qd.calibrate(model, dataset([{"x": a} for a in nchw]))


def test_float64_data_is_cast_with_one_note(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    feeds = [{"input": rng.standard_normal((1, 3, 16, 16))} for _ in range(3)]  # float64
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calibration = qd.calibrate(model, dataset(feeds))
    notes = [w for w in caught if "cast to the model's float32" in str(w.message)]
    assert len(notes) == 1, [str(w.message) for w in caught]
    assert "float64" in str(notes[0].message) and "'input'" in str(notes[0].message)
    # cast means cast: the ranges are those of the float32 data
    as32 = [{"input": f["input"].astype(np.float32)} for f in feeds]
    want = qd.calibrate(model, dataset(as32))
    assert set(calibration.stats) == set(want.stats)
    for name in want.stats:
        assert calibration.tensor_range(name, "minmax") == want.tensor_range(name, "minmax"), name
