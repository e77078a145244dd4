"""The pipeline's shared pieces: one tensor walk, one Ray Dataset rule, the prepared-model cache, threads."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import external_data_helper, helper, numpy_helper
from tests import models
from tests.helpers import dataset

import quantdebug as qd
from quantdebug import runtime
from quantdebug.data import Dataset, input_specs, is_ray_dataset
from quantdebug.executors import ray_dataset_of
from quantdebug.pipeline.calibrate import model_fingerprint
from quantdebug.pipeline.prepare import prepared_model
from quantdebug.support.external import all_tensors

# -- one walk over every tensor ------------------------------------------------------------------


def _tensor_rich_model(rng: np.random.Generator) -> onnx.ModelProto:
    """Initializers and Constant values in the main graph, in both If branches (nested), and in a function."""

    def const(name: str, out: str) -> onnx.NodeProto:
        value = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), name)
        return helper.make_node("Constant", [], [out], value=value)

    def branch(tag: str) -> onnx.GraphProto:
        inner = helper.make_graph(
            [const(f"{tag}_deep", "d")], f"{tag}_inner", [], [helper.make_tensor_value_info("d", 1, [3])]
        )
        nodes = [
            const(f"{tag}_c", f"{tag}_a"),
            helper.make_node("If", ["cond"], [f"{tag}_b"], then_branch=inner, else_branch=inner),
            helper.make_node("Add", [f"{tag}_a", f"{tag}_w"], [f"{tag}_out"]),
        ]
        init = [numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), f"{tag}_w")]
        return helper.make_graph(nodes, tag, [], [helper.make_tensor_value_info(f"{tag}_out", 1, [3])], init)

    function = helper.make_function(
        "local",
        "scaled",
        ["x"],
        ["y"],
        [const("f_c", "k"), helper.make_node("Mul", ["x", "k"], ["y"])],
        [helper.make_opsetid("", 17)],
    )
    graph = helper.make_graph(
        [
            const("main_c", "m"),
            helper.make_node("If", ["cond"], ["y"], then_branch=branch("then"), else_branch=branch("else")),
            helper.make_node("scaled", ["m"], ["z"], domain="local"),
        ],
        "main",
        [helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", 1, [3]), helper.make_tensor_value_info("z", 1, [3])],
        [numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "main_w")],
    )
    return helper.make_model(
        graph, functions=[function], opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    )


def test_all_tensors_walks_what_onnx_walks(rng: np.random.Generator) -> None:
    model = _tensor_rich_model(rng)
    ours = [t.SerializeToString() for t in all_tensors(model)]
    theirs = [t.SerializeToString() for t in external_data_helper._get_all_tensors(model)]  # the reference
    assert ours == theirs
    names = {t.name for t in all_tensors(model)}
    assert {"main_w", "main_c", "then_w", "then_c", "then_deep", "else_deep", "f_c"} <= names


# -- one rule for a Ray Dataset -------------------------------------------------------------------


class _RayShaped:
    """Shaped like a ray.data.Dataset (its type's module and the two methods both paths read)."""

    def __init__(self, rows: list[dict[str, np.ndarray]]) -> None:
        self.rows = rows

    def iter_rows(self) -> list[dict[str, np.ndarray]]:
        return list(self.rows)

    def split(self, n: int) -> list[_RayShaped]:
        return [_RayShaped(self.rows[i::n]) for i in range(n)]


class _Other(_RayShaped):
    """The same methods, but from another library: not a Ray Dataset."""


_RayShaped.__module__ = "ray.data.dataset"


def test_a_source_one_path_takes_as_ray_the_other_takes_too(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    feeds = [models.input_feed(model, rng) for _ in range(3)]
    ray_like = _RayShaped(feeds)
    specs = input_specs(model)
    for source, is_ray in ((ray_like, True), (_Other(feeds), False), (feeds, False), (dataset(feeds), False)):
        assert is_ray_dataset(source) is is_ray
        assert (ray_dataset_of(source) is source) is is_ray  # the executor's split
        factory = Dataset(source, specs).factory if not isinstance(source, _Other) else None
        if is_ray:  # Dataset reads the rows; the executor finds the same dataset behind them
            assert ray_dataset_of(factory) is source
            read = [{k: v.tolist() for k, v in f.items()} for f in Dataset(source, specs)]
            assert read == [{k: v.tolist() for k, v in f.items()} for f in feeds]
        elif factory is not None:
            assert ray_dataset_of(factory) is None


# -- the prepared-model cache ----------------------------------------------------------------------


def _age(path: Path, seconds: float) -> None:
    then = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(then, then))


def _with_weights(model: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto:
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    for init in changed.graph.initializer:
        array = numpy_helper.to_array(init)
        init.CopyFrom(numpy_helper.from_array(rng.standard_normal(array.shape).astype(array.dtype), init.name))
    return changed


def test_an_unchanged_file_is_prepared_once_and_a_changed_one_again(rng: np.random.Generator, tmp_path: Path) -> None:
    model = models.conv_relu(rng)
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    _age(path, 60)
    first = prepared_model(path)
    assert prepared_model(path) is first
    assert prepared_model(str(path)) is first
    changed = _with_weights(model, rng)
    onnx.save(changed, str(path))
    assert path.stat().st_size == len(model.SerializeToString())  # same size: only the time tells
    _age(path, 30)
    second = prepared_model(path)
    assert second is not first
    assert second.fingerprint == model_fingerprint(changed)
    assert second.fingerprint != first.fingerprint


def test_a_file_rewritten_within_one_clock_tick_is_not_trusted(rng: np.random.Generator, tmp_path: Path) -> None:
    # written just now: its digest is not remembered, so an in-place rewrite that keeps both size
    # and time (as a coarse file-system clock can) is still seen
    model = models.conv_relu(rng)
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    stamp = path.stat().st_mtime_ns
    first = prepared_model(path)
    changed = _with_weights(model, rng)
    onnx.save(changed, str(path))
    os.utime(path, ns=(stamp, stamp))
    second = prepared_model(path)
    assert second.fingerprint == model_fingerprint(changed) != first.fingerprint


def test_threads_preparing_one_model_share_one_prepared_model(rng: np.random.Generator, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(models.mobilenetv3_block(rng), str(path))
    _age(path, 60)
    got: list[object] = []
    workers = [threading.Thread(target=lambda: got.append(prepared_model(path))) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(got) == 4 and all(g is got[0] for g in got)


# -- thread counts are parameters ------------------------------------------------------------------


def test_thread_counts_reach_sessions_as_parameters(rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTDEBUG_THREADS", "7")  # the old channel: no longer read
    model = models.conv_relu(rng)
    assert runtime.make_session(model).get_session_options().intra_op_num_threads == 0
    assert runtime.make_session(model, threads=3).get_session_options().intra_op_num_threads == 3
    feeds = [models.input_feed(model, rng) for _ in range(2)]
    debugger = qd.QuantizationDebugger(model, dataset(feeds))
    loop = debugger._job().loop(threads=2)  # what a worker with two CPUs builds
    assert loop.session.get_session_options().intra_op_num_threads == 2
    debugger.options = qd.DebugOptions(intra_op_num_threads=1)  # the user's count wins
    assert debugger._job().loop(threads=2).session.get_session_options().intra_op_num_threads == 1
