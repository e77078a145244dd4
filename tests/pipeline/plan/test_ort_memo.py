"""The memos of onnxruntime's weight quantization and shape inference (_ort_memo) on the real quantizer.

That a memoized quantize writes the plain quantizer's bytes, on 16 models and 12 configs and on a
second call answered from the memos, is in test_fast_quantize.py. Here: the memos are hit, the bytes
stay the same when answers are dropped, an answer is the caller's to change, the swap is undone and
stays on its thread, and arguments the memo does not key take onnxruntime's own path.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnxruntime.quantization import qdq_quantizer, quant_utils
from tests import models
from tests.helpers import spy

import quantdebug as qd
from quantdebug.pipeline.plan import _ort_memo, quantize_with_ranges
from quantdebug.pipeline.plan._ort_index import indexed_quantizer
from quantdebug.pipeline.prepare import prepared_model

INT8, UINT8 = onnx.TensorProto.INT8, onnx.TensorProto.UINT8
INT16, UINT16 = onnx.TensorProto.INT16, onnx.TensorProto.UINT16
# the module, which onnxruntime.quantization's own ``quantize`` function hides
ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")
NAMES = ("compute_data_quant_params", "quantize_nparray", "save_and_reload_model_with_shape_infer")


@pytest.fixture(autouse=True)
def cold_memos() -> Iterator[None]:
    _ort_memo.clear()
    yield
    _ort_memo.clear()


def _spies(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """The calls that reach onnxruntime's own functions, by name."""
    return {name: spy(monkeypatch, _ort_memo.original, name) for name in NAMES}


def _serialized(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


def _quantizer(model: onnx.ModelProto, rng: np.random.Generator) -> Any:
    """quantize(config, indexed) for ``model``, from one calibration."""
    calibration = qd.calibrate(model, [models.input_feed(model, rng) for _ in range(4)], progress=False)

    def quantize(config: qd.QuantConfig, indexed: bool = True) -> bytes:
        prepared = prepared_model(model, config)
        plan = prepared.plan(config, prepared.precisions(config))
        return _serialized(
            quantize_with_ranges(prepared.model, calibration.ranges(config), config, plan, indexed=indexed)
        )

    return quantize


def test_from_a_models_third_quantize_on_nothing_is_computed_again(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first quantize of a float model keeps its shape-inferred form, the second also the weights'
    answers (a model quantized once pays no keys), and the third computes none of them."""
    quantize = _quantizer(models.all_ops(rng), rng)
    config = qd.QuantConfig(per_channel=True)
    plain = quantize(config, indexed=False)
    calls = _spies(monkeypatch)
    counts = []
    for _ in range(3):
        assert quantize(config) == plain
        counts.append({name: len(c) - sum(n[name] for n in counts) for name, c in calls.items()})
        if len(counts) == 1:
            assert len(_ort_memo.weights) == 0
    first, second, third = counts
    # one scale and one set of integers per output channel of every Conv/Gemm/MatMul weight
    assert first["compute_data_quant_params"] > 50 and first["quantize_nparray"] > 50, first
    assert first["save_and_reload_model_with_shape_infer"] == 1
    assert second == {**first, "save_and_reload_model_with_shape_infer": 0}
    assert third == dict.fromkeys(NAMES, 0)
    # another activation config of the same model: its weights and shapes are the ones already known
    other = qd.QuantConfig(per_channel=True, activation_type="uint8", symmetric_activations=True)
    before = {name: len(c) for name, c in calls.items()}
    assert quantize(other) == quantize(other, indexed=False)  # (the plain run's calls go around the spies)
    assert {name: len(c) for name, c in calls.items()} == before


def test_dropped_answers_leave_the_bytes_alone(rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A memo far smaller than the answers one quantize needs, and one shape-inferred model kept for two
    float models: every call drops and refills, and still writes the plain quantizer's bytes."""
    monkeypatch.setattr(_ort_memo.weights, "limit", 40 * _ort_memo.ENTRY_BYTES)
    monkeypatch.setattr(_ort_memo, "MODELS_KEPT", 1)
    quantizers = [_quantizer(models.all_ops(rng), rng), _quantizer(models.shared_tensors(rng), rng)]
    configs = [
        qd.QuantConfig(per_channel=True),
        qd.QuantConfig(),
        qd.QuantConfig(per_channel=True, activation_type="int16"),
    ]
    plain = [[q(c, indexed=False) for c in configs] for q in quantizers]
    calls = _spies(monkeypatch)
    for _ in range(2):
        for quantize, wanted in zip(quantizers, plain, strict=True):
            for config, want in zip(configs, wanted, strict=True):
                assert quantize(config) == want
                assert _ort_memo.weights.nbytes <= _ort_memo.weights.limit
                assert len(_ort_memo._models) <= 1
    # each pass: each of the two float models, as prepared for opset 17 and for opset 21 (16-bit activations),
    # came after another: shape inference ran again, four times a pass
    assert len(calls["save_and_reload_model_with_shape_infer"]) == 8


def test_the_memo_drops_the_least_recently_used_but_not_the_running_calls_own() -> None:
    entry = _ort_memo.ENTRY_BYTES + 8
    memo = _ort_memo._Memo(limit=3 * entry)
    computed: list[str] = []

    def ask(key: str) -> None:
        answer = memo.get(key)
        if answer is None:
            computed.append(key)
            answer = np.full(8, ord(key), dtype=np.int8)
            memo.put(key, answer)
        assert answer.tolist() == [ord(key)] * 8

    for key in "abc":
        ask(key)
    memo.new_generation()  # a new quantize call
    ask("a")  # a hit: "a" is now the most recently used, and this call's
    ask("d")  # drops "b", the least recently used
    ask("e")  # drops "c"
    ask("f")  # everything left is this call's own: "f" is not kept
    assert computed == list("abcdef")
    computed.clear()
    for key in "adef":
        ask(key)
    assert computed == ["f"]
    assert memo.nbytes <= memo.limit and len(memo) == 3


def test_an_answer_is_the_callers_to_change(rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each answer, the computed one and every hit, is changed by its caller; the next hit is unchanged."""
    data = rng.normal(size=96).astype(np.float32)
    model = prepared_model(models.shared_tensors(rng)).model
    work = onnx.ModelProto()
    work.CopyFrom(model)
    want_model = _serialized(_ort_memo.original.save_and_reload_model_with_shape_infer(work))
    want_zero_point, want_scale = _ort_memo.original.compute_data_quant_params(data, INT8, False)
    want_integers = _ort_memo.original.quantize_nparray(INT8, data, want_scale, want_zero_point)
    calls = _spies(monkeypatch)
    for _ in range(3):
        with indexed_quantizer(copied_graph=(work, model)):
            inferred = ort_quantize.save_and_reload_model_with_shape_infer(work)
        with indexed_quantizer():  # weights are memoized from the start where no model was declared
            zero_point, scale = qdq_quantizer.compute_data_quant_params(data, INT8, False)
            integers = quant_utils.quantize_nparray(INT8, data, want_scale, want_zero_point)
        assert (zero_point.tobytes(), scale.tobytes()) == (want_zero_point.tobytes(), want_scale.tobytes())
        assert integers.tobytes() == want_integers.tobytes()
        assert _serialized(inferred) == want_model
        zero_point[...], scale[...], integers[:] = 7, -1.0, 0
        inferred.graph.ClearField("node")
        inferred.metadata_props.add(key="changed", value="by the caller")
    assert {name: len(c) for name, c in calls.items()} == dict.fromkeys(NAMES, 1)  # the others were hits


def _stand_ins_in_place() -> list[str]:
    stand_ins = set(map(id, _ort_memo.STAND_INS.values()))
    return [
        f"{module_name}.{name}"
        for module_name, module in list(sys.modules.items())
        if module_name.startswith("onnxruntime.quantization") and module is not None
        for name in NAMES
        if id(getattr(module, name, None)) in stand_ins
    ]


def test_the_memo_swap_is_undone_and_stays_on_its_thread(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = rng.normal(size=64).astype(np.float32)
    calls = spy(monkeypatch, _ort_memo.original, "compute_data_quant_params")
    elsewhere: list[tuple[np.ndarray, np.ndarray]] = []

    def other_thread() -> None:
        for _ in range(2):
            elsewhere.append(qdq_quantizer.compute_data_quant_params(data, INT8, True))

    assert not _stand_ins_in_place()
    with indexed_quantizer() as run:
        assert run.active
        swapped = _stand_ins_in_place()
        for name in ("qdq_quantizer.compute_data_quant_params", "quant_utils.compute_data_quant_params"):
            assert f"onnxruntime.quantization.{name}" in swapped
        assert "onnxruntime.quantization.quant_utils.quantize_nparray" in swapped
        assert "onnxruntime.quantization.quantize.save_and_reload_model_with_shape_infer" in swapped
        here = [qdq_quantizer.compute_data_quant_params(data, INT8, True) for _ in range(2)]
        assert len(calls) == 1  # the second was a hit
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert len(calls) == 3  # the other thread computed both of its own
    assert not _stand_ins_in_place()
    assert qdq_quantizer.compute_data_quant_params is _ort_memo.ORIGINAL["compute_data_quant_params"]
    for got in [*here, *elsewhere]:
        assert [a.tobytes() for a in got] == [a.tobytes() for a in here[0]]


class _Int(int):
    """An int of a type the memo does not know."""


def test_arguments_the_memo_does_not_key_take_onnxruntimes_own_path(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = rng.normal(size=(64, 8)).astype(np.float32)
    large = rng.normal(size=_ort_memo.LARGEST_PARAMS_DATA // 4 + 1).astype(np.float32)
    params: list[tuple[Any, ...]] = [
        (data[:, 0], INT8, True),  # a column: not contiguous
        (large, INT8, True),  # over the size where a digest pays
        (data[0].astype(np.float64), INT8, True),  # not a float32/float16 weight
        (data[0], np.int32(INT8), True),  # a numpy integer for the type
        (data[0], INT8, "yes"),  # a truthy string for a flag
    ]
    scale, zero_point = np.float32(0.02), np.int8(3)
    integers: list[tuple[Any, ...]] = [
        (INT8, data[:, 1], scale, zero_point),
        (INT8, large, scale, zero_point),
        (onnx.TensorProto.FLOAT8E4M3FN, data[1], np.array(0.5, np.float32), 0),  # float8: onnx's reference
        (INT8, data[1], scale, zero_point, _Int(-5), None),  # an int subclass for a bound
    ]
    calls = _spies(monkeypatch)
    with indexed_quantizer():
        for args in params:
            got = [qdq_quantizer.compute_data_quant_params(*args) for _ in range(2)]
            want = _ort_memo.original.compute_data_quant_params(*args)
            for answer in got:
                assert [a.tobytes() for a in answer] == [a.tobytes() for a in want]
        for args in integers:
            got = [quant_utils.quantize_nparray(*args) for _ in range(2)]
            want = _ort_memo.original.quantize_nparray(*args)
            assert all(a.tobytes() == want.tobytes() and a.dtype == want.dtype for a in got)
    assert len(calls["compute_data_quant_params"]) == 3 * len(params)
    assert len(calls["quantize_nparray"]) == 3 * len(integers)


def test_the_shape_inference_memo_is_keyed_by_the_float_model_and_the_rest_of_the_copy(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = prepared_model(models.shared_tensors(rng)).model

    def copy(source: onnx.ModelProto, meta: str = "onnxruntime.quant") -> onnx.ModelProto:
        work = onnx.ModelProto()
        work.CopyFrom(source)
        work.metadata_props.add(key="onnx.quant.pre_process", value=meta)
        return work

    twin = onnx.ModelProto()
    twin.CopyFrom(model)  # equal, but another object: never assumed to stay equal
    calls = spy(monkeypatch, _ort_memo.original, "save_and_reload_model_with_shape_infer")

    def inferred(work: onnx.ModelProto, source: onnx.ModelProto | None) -> bytes:
        with indexed_quantizer(copied_graph=None if source is None else (work, source)):
            got = _serialized(ort_quantize.save_and_reload_model_with_shape_infer(work))
        want = _serialized(_ort_memo.original.save_and_reload_model_with_shape_infer(work))
        assert got == want
        calls.pop()  # the reference's own call
        return got

    inferred(copy(model), model)
    inferred(copy(model), model)
    assert len(calls) == 1  # a second copy of the same model: a hit
    inferred(copy(model, "something else"), model)
    assert len(calls) == 2  # its metadata differs: a miss
    inferred(copy(twin), twin)
    assert len(calls) == 3  # another float model
    inferred(copy(model), None)
    assert len(calls) == 4  # nobody declared where this one came from
    assert len(_ort_memo._models) == _ort_memo.MODELS_KEPT


@settings(max_examples=60, deadline=None)
@given(
    data=hnp.arrays(
        st.sampled_from([np.float32, np.float16]),
        st.integers(0, 200),
        elements=st.floats(-1e4, 1e4, width=16, allow_nan=False),
    ),
    quant_type=st.sampled_from([INT8, UINT8, INT16, UINT16]),
    symmetric=st.booleans(),
    reduce_range=st.booleans(),
    min_real_range=st.none() | st.sampled_from([0.0, -0.0, 1e-4, 1.0]),
    rmin=st.none() | st.floats(-1e4, 0.0, width=16),
)
def test_memoized_answers_are_onnxruntimes(
    data: np.ndarray,
    quant_type: int,
    symmetric: bool,
    reduce_range: bool,
    min_real_range: float | None,
    rmin: float | None,
) -> None:
    """Asked twice (the second a hit, or a hit of another example's answer), the memo answers what
    onnxruntime computes, to the byte and the dtype; examples that differ in one argument only must
    not share an answer."""
    args = (data, quant_type, symmetric)
    kwargs = {"reduce_range": reduce_range, "min_real_range": min_real_range, "rmin_override": rmin}
    zero_point, scale = _ort_memo.original.compute_data_quant_params(*args, **kwargs)
    integers = _ort_memo.original.quantize_nparray(quant_type, data, scale, zero_point)
    with indexed_quantizer():
        for _ in range(2):
            got_zero_point, got_scale = qdq_quantizer.compute_data_quant_params(*args, **kwargs)
            for got, want in ((got_zero_point, zero_point), (got_scale, scale)):
                assert (got.dtype, got.shape, got.tobytes()) == (want.dtype, want.shape, want.tobytes())
            got = quant_utils.quantize_nparray(quant_type, data, scale, zero_point)
            assert (got.dtype, got.shape, got.tobytes()) == (integers.dtype, integers.shape, integers.tobytes())
