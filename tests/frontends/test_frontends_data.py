"""as_seed_dataset over arrays, lists, callables, DataLoaders and tf.data; the NHWC/NCHW layout hint."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import quantdebug as qd
from quantdebug.frontends import adapt_dataset, as_seed_dataset, check_layout, first_sample, layout_hint


def test_array_becomes_samples_of_batch_one(rng: np.random.Generator) -> None:
    x = rng.normal(size=(5, 3, 4, 4)).astype(np.float32)
    ds = as_seed_dataset(x)
    first, second = list(ds()), list(ds())  # re-iterable
    assert len(first) == len(second) == 5
    for i, sample in enumerate(first):
        assert isinstance(sample, list) and len(sample) == 1
        np.testing.assert_array_equal(sample[0], x[i : i + 1])
    assert len(list(as_seed_dataset(x, max_samples=2)())) == 2


def test_list_of_batches_is_split_and_labels_dropped(rng: np.random.Generator) -> None:
    xs = [rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=(2, 2)).astype(np.float32)]
    ys = [np.arange(3), np.arange(2)]
    samples = list(as_seed_dataset(list(zip(xs, ys)))())  # (x, y) batches: x only
    assert len(samples) == 5
    np.testing.assert_array_equal(samples[3][0], xs[1][:1])
    assert all(s[0].shape == (1, 2) for s in samples)
    # nested inputs: ((x1, x2), y) is two model inputs
    two = list(as_seed_dataset([((xs[0], xs[0] * 2), ys[0])])())
    assert len(two) == 3 and len(two[0]) == 2
    np.testing.assert_array_equal(two[1][1], 2 * xs[0][1:2])
    # drop_labels=False: the tuple is the inputs
    both = list(as_seed_dataset([(xs[0], xs[0])], drop_labels=False)())
    assert len(both) == 3 and len(both[0]) == 2


def test_dict_batches_are_split_by_name(rng: np.random.Generator) -> None:
    batch = {"ids": np.arange(6).reshape(3, 2), "mask": np.ones((3, 2), np.int64)}
    samples = list(as_seed_dataset([batch])())
    assert len(samples) == 3 and set(samples[0]) == {"ids", "mask"}
    np.testing.assert_array_equal(samples[2]["ids"], [[4, 5]])


def test_callable_is_seed_style_and_not_split(rng: np.random.Generator) -> None:
    x = rng.normal(size=(4, 2)).astype(np.float32)

    def gen() -> Iterator[list[np.ndarray]]:
        yield [x]  # one sample, even though its first axis is 4

    samples = list(as_seed_dataset(gen)())
    assert len(samples) == 1 and samples[0][0].shape == (4, 2)


def test_one_shot_and_unusable_sources_are_refused() -> None:
    with pytest.raises(qd.DatasetError, match="one-shot"):
        as_seed_dataset(iter([np.zeros((1, 2))]))
    with pytest.raises(qd.DatasetError):
        as_seed_dataset(42)
    with pytest.raises(qd.DatasetError, match="batch sizes"):
        list(as_seed_dataset([[(np.zeros((2, 1)), np.zeros((3, 1)))]], drop_labels=True)())
    with pytest.raises(qd.DatasetError, match="batch axis"):
        list(as_seed_dataset([np.float32(1.0)])())


def test_torch_dataloader_of_x_y_pairs(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(rng.normal(size=(10, 3)).astype(np.float32))
    y = torch.arange(10)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    ds = as_seed_dataset(loader)
    samples = list(ds())
    assert len(samples) == 10 and len(list(ds())) == 10
    assert all(isinstance(s[0], np.ndarray) and s[0].shape == (1, 3) for s in samples)
    np.testing.assert_array_equal(samples[9][0], x[9:10].numpy())


def test_tf_data_dataset_batches(rng: np.random.Generator) -> None:
    tf = pytest.importorskip("tensorflow")
    x = rng.normal(size=(7, 2, 2)).astype(np.float32)
    ds = as_seed_dataset(tf.data.Dataset.from_tensor_slices((x, np.arange(7))).batch(3))
    samples = list(ds())
    assert len(samples) == 7 and len(list(ds())) == 7
    np.testing.assert_allclose(samples[6][0], x[6:7])


def test_seed_dataset_feeds_the_debugger(rng: np.random.Generator) -> None:
    w = onnx.numpy_helper.from_array(rng.normal(size=(3, 2)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = as_seed_dataset(rng.normal(size=(12, 3)))  # float64: the debugger casts within the kind
    debugger = qd.QuantizationDebugger(model, data, debug_options=qd.DebugOptions(progress=False))
    debugger.run()
    assert debugger.samples_seen == 12


def test_layout_hint_recognises_nhwc_for_nchw_and_back() -> None:
    hint = layout_hint([1, 224, 224, 3], [1, 3, 224, 224])
    assert "NHWC" in hint and "np.transpose(x, (0, 3, 1, 2))" in hint
    assert "np.transpose(x, (0, 2, 3, 1))" in layout_hint([1, 3, 192, 192], ["batch", 192, 192, 3])
    assert "np.transpose(x, (2, 0, 1))" in layout_hint([32, 32, 3], [3, 32, 32])
    assert layout_hint([1, 3, 224, 224], [1, 3, 224, 224]) == ""
    assert layout_hint([1, 5, 224, 224], [1, 3, 224, 224]) == ""  # not a layout problem
    assert layout_hint([1, 3], [1, 4]) == ""


def test_check_layout_raises_dataset_error() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["image"], ["y"])],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    model = helper.make_model(graph)
    with pytest.raises(qd.DatasetError, match=r"input 'image'.*NHWC.*np\.transpose\(x, \(0, 3, 1, 2\)\)"):
        check_layout(model, np.zeros((1, 8, 8, 3), np.float32))
    check_layout(model, [np.zeros((1, 3, 8, 8), np.float32)])


def test_adapt_dataset_and_first_sample_keep_quantdebug_meaning_of_lists(rng: np.random.Generator) -> None:
    x = rng.normal(size=(4, 2)).astype(np.float32)
    samples = [[x[:1], x[1:2]], [x[2:3], x[3:4]]]  # a list of two-input samples: left as it is
    assert adapt_dataset(samples) is samples
    first = first_sample(samples)
    assert isinstance(first, list) and len(first) == 2
    np.testing.assert_array_equal(first[1], x[1:2])
    adapted = adapt_dataset(x)  # an array: rows become samples
    assert callable(adapted) and len(list(adapted())) == 4  # type: ignore[operator]
    assert [a.shape for a in first_sample(x)] == [(1, 2)]  # type: ignore[union-attr]
    assert set(first_sample(lambda: iter([{"a": x[:1]}])) or {}) == {"a"}
    assert first_sample([]) is None
    assert first_sample(iter([x])) is None  # never consumes a one-shot iterator
