"""Indexed stand-ins for the linear scans of onnxruntime's QDQ quantizer, for the span of one call.

onnxruntime's ``ONNXModel`` finds an initializer by scanning every initializer and rewires a tensor
by scanning every node, once per quantized tensor: quadratic in the model's size, and most of a
quantize on an 860-node model. ``indexed_quantizer`` swaps those methods, while it is open and only
on its own thread, for ones that answer from a tensor->consumers and a name->initializer index kept
in step with every mutation the quantizer makes. The answers are the ones the scans give; the swap
happens only for the onnxruntime sources it was checked against (``EXPECTED_SOURCES``), since a
change anywhere in the quantizer could bring a mutation the indexes do not see.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
from onnxruntime.quantization import onnx_model as ort_onnx_model
from onnxruntime.quantization import quant_utils

from quantdebug.pipeline.plan import _ort_memo

_log = logging.getLogger(__name__)

ONNXModel = ort_onnx_model.ONNXModel

# The quantizer's files whose behaviour the indexes rely on: the methods swapped (onnx_model,
# quant_utils.find_by_name) and every QDQ-path caller that could mutate nodes or initializers
# without going through them (the quantizer, its base, the operator classes, quantize_static).
# The memos of _ort_memo rely on the same files: the functions they stand in for (quant_utils)
# and their callers (qdq_quantizer, quantize_static).
SOURCE_FILES = (
    "onnx_model.py",
    "quant_utils.py",
    "base_quantizer.py",
    "qdq_quantizer.py",
    "quantize.py",
    "registry.py",
    "tensor_quant_overrides.py",
    "operators/*.py",
)

# sha256 of SOURCE_FILES (see ``source_digest``) for each onnxruntime release the indexes were checked
# against: tests/pipeline/plan/test_fast_quantize.py compares the indexed and the plain quantizer
# byte for byte, and runs the indexes against full scans on every lookup.
EXPECTED_SOURCES: Mapping[str, str] = {
    "1.32.0": "263a8b1937b443cdd0cb6caa9a1afc3ddd011e952c631cc97752735913d101ae",
}


@functools.cache
def source_digest() -> str | None:
    """sha256 of onnxruntime's quantizer sources in SOURCE_FILES; None when they cannot be read."""
    root = Path(quant_utils.__file__).parent
    digest = hashlib.sha256()
    try:
        for pattern in SOURCE_FILES:
            for path in sorted(root.glob(pattern)):
                digest.update(path.relative_to(root).as_posix().encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    except OSError:
        return None
    return digest.hexdigest()


def support_problem(expected: Mapping[str, str] = EXPECTED_SOURCES) -> str | None:
    """Why the indexes cannot stand in for this onnxruntime's scans; None when they can."""
    version = onnxruntime.__version__
    if version not in expected:
        return f"onnxruntime {version} is not one the indexes were checked against ({', '.join(sorted(expected))})"
    found = source_digest()
    if found is None:
        return "onnxruntime's quantizer sources cannot be read to check them"
    if found != expected[version]:
        return f"onnxruntime {version}'s quantizer sources differ from the ones checked (sha256 {found[:12]})"
    return None


class IndexMismatchError(RuntimeError):
    """An index answered differently from onnxruntime's own scan (raised only with ``check=True``)."""


_FLOAT8 = onnx.TensorProto.FLOAT8E4M3FN


class _Index:
    """Edges and initializers of one ModelProto, as onnxruntime's scans would find them now.

    ``readers`` and ``writers`` map a tensor to the positions in ``graph.node`` of the nodes that
    read it (once per input slot, as ``input_name_to_nodes`` lists them) and that write it;
    ``initializers`` maps a name to the first initializer of that name (as ``find_by_name`` returns
    it). The edges are rebuilt from the graph when a mutation moves nodes.
    """

    def __init__(self, model: onnx.ModelProto, check: bool) -> None:
        self.model = model
        self.graph = model.graph
        self.check = check
        self._edges: tuple[dict[str, list[int]], dict[str, list[int]]] | None = None
        self._initializers: dict[str, onnx.TensorProto] | None = None
        self._counts: dict[str, int] = {}  # initializers of each name (more than one only in an invalid model)
        self._float8 = 0
        # get_largest_initializer_name_suffix's answers by prefix: onnxruntime asks once per shared bias
        self._suffixes: dict[str, int] = {}
        # live views by id: a Mapping compares by value, so it cannot go in a WeakSet
        self.views: weakref.WeakValueDictionary[int, ConsumerView] = weakref.WeakValueDictionary()

    # -- edges

    def edges(self) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        if self._edges is None:
            readers: dict[str, list[int]] = {}
            writers: dict[str, list[int]] = {}
            for pos, node in enumerate(self.graph.node):
                for name in node.input:
                    if name:
                        readers.setdefault(name, []).append(pos)
                for name in node.output:
                    if name:
                        writers.setdefault(name, []).append(pos)
            self._edges = readers, writers
        return self._edges

    def readers(self) -> dict[str, list[int]]:
        return self.edges()[0]

    def writers(self) -> dict[str, list[int]]:
        return self.edges()[1]

    def before_node_change(self) -> None:
        # a view handed out earlier keeps the answers of its moment, as the dict it stands for does
        if self.views:
            for view in list(self.views.values()):
                view.freeze()

    def nodes_moved(self) -> None:
        self._edges = None

    def node_appended(self) -> None:
        if self._edges is None:
            return
        readers, writers = self._edges
        pos = len(self.graph.node) - 1
        node = self.graph.node[pos]
        for name in node.input:
            if name:
                readers.setdefault(name, []).append(pos)
        for name in node.output:
            if name:
                writers.setdefault(name, []).append(pos)

    @staticmethod
    def move(edges: dict[str, list[int]], old: str, new: str, positions: Sequence[int]) -> None:
        """Record that the nodes at ``positions`` now have ``new`` wherever they had ``old``."""
        moved = set(positions)
        slots = edges.pop(old, [])
        kept = [p for p in slots if p not in moved]
        if kept:
            edges[old] = kept
        edges.setdefault(new, []).extend(p for p in slots if p in moved)

    def verify_positions(self, name: str, positions: Sequence[int], outputs: bool) -> None:
        """Compare the nodes the index has for ``name`` with a full scan (for ``check``)."""
        nodes = self.graph.node
        found = [pos for pos, node in enumerate(nodes) if name in (node.output if outputs else node.input)]
        if sorted(set(positions)) != found:
            what = "writers" if outputs else "readers"
            raise IndexMismatchError(f"{what} of {name!r}: index has nodes {sorted(set(positions))}, scan {found}")

    # -- initializers

    def initializers(self) -> dict[str, onnx.TensorProto]:
        if self._initializers is None:
            found: dict[str, onnx.TensorProto] = {}
            counts: dict[str, int] = {}
            float8 = 0
            for tensor in self.graph.initializer:
                found.setdefault(tensor.name, tensor)
                counts[tensor.name] = counts.get(tensor.name, 0) + 1
                float8 += tensor.data_type == _FLOAT8
            self._initializers, self._counts, self._float8 = found, counts, float8
        return self._initializers

    def initializer(self, name: str) -> onnx.TensorProto | None:
        tensor = self.initializers().get(name)
        if self.check:
            scanned = _ORIGINAL["find_by_name"](name, self.graph.initializer)
            if scanned is not tensor:
                raise IndexMismatchError(f"initializer {name!r}: index and scan found different tensors")
        return tensor

    def has_float8(self) -> bool:
        self.initializers()
        return self._float8 > 0

    def initializer_appended(self) -> None:
        tensor = self.graph.initializer[len(self.graph.initializer) - 1]
        for prefix, largest in self._suffixes.items():
            if tensor.name.startswith(prefix):
                self._suffixes[prefix] = max(largest, _suffix(tensor.name, prefix))
        if self._initializers is None:
            return
        self._initializers.setdefault(tensor.name, tensor)
        self._counts[tensor.name] = self._counts.get(tensor.name, 0) + 1
        self._float8 += tensor.data_type == _FLOAT8

    def initializer_removed(self, name: str, data_type: int) -> None:
        """One initializer called ``name`` left the graph: the next one of that name, if any, is found."""
        self._suffixes.clear()
        if self._initializers is None:
            return
        self._float8 -= data_type == _FLOAT8
        left = self._counts[name] = self._counts.get(name, 1) - 1
        if left <= 0:
            del self._counts[name]
            self._initializers.pop(name, None)
        else:  # names are unique in a valid model: a scan only for one that is not
            self._initializers[name] = next(t for t in self.graph.initializer if t.name == name)

    def initializers_moved(self) -> None:
        self._initializers = None
        self._suffixes.clear()

    def largest_suffix(self, prefix: str) -> int:
        """``ONNXModel.get_largest_initializer_name_suffix``, kept up to date for each prefix asked about."""
        if prefix not in self._suffixes:
            self._suffixes[prefix] = _ORIGINAL["get_largest_initializer_name_suffix"](_Bare(self.model), prefix)
        largest = self._suffixes[prefix]
        if self.check:
            scanned = _ORIGINAL["get_largest_initializer_name_suffix"](_Bare(self.model), prefix)
            if scanned != largest:
                raise IndexMismatchError(f"largest suffix of {prefix!r}: index has {largest}, scan {scanned}")
        return largest  # type: ignore[no-any-return]

    def verify(self) -> None:
        """Compare both indexes, as they stand, with a fresh build (for ``check``)."""
        if self._edges is not None:
            built, self._edges = self._edges, None
            fresh = self.edges()
            for kept, now in zip(built, fresh):
                if {k: sorted(v) for k, v in kept.items() if v} != {k: sorted(v) for k, v in now.items()}:
                    raise IndexMismatchError("the node index drifted from the graph")
        if self._initializers is not None:
            known, counts, float8 = self._initializers, self._counts, self._float8
            self._initializers = None
            fresh_inits = self.initializers()
            if known.keys() != fresh_inits.keys() or any(known[k] is not fresh_inits[k] for k in known):
                raise IndexMismatchError("the initializer index drifted from the graph")
            if counts != self._counts or float8 != self._float8:
                raise IndexMismatchError("the initializer counts drifted from the graph")
        for prefix, largest in self._suffixes.items():
            if largest != _ORIGINAL["get_largest_initializer_name_suffix"](_Bare(self.model), prefix):
                raise IndexMismatchError(f"the largest suffix of {prefix!r} drifted from the graph")


def _suffix(name: str, prefix: str) -> int:
    """The integer after ``prefix`` in ``name`` as onnxruntime reads it (int()), or -1."""
    try:
        return int(name[len(prefix) :])
    except ValueError:
        return -1


class ConsumerView(Mapping[str, list[onnx.NodeProto]]):
    """What ``ONNXModel.input_name_to_nodes`` returns, answered from the index on demand.

    The dict onnxruntime builds is a snapshot: before the graph's nodes change, a live view copies
    itself into one, so a caller that keeps it sees what the dict would show.
    """

    def __init__(self, index: _Index) -> None:
        self._index = index
        self._lists: dict[str, list[onnx.NodeProto]] = {}
        self._frozen: dict[str, list[onnx.NodeProto]] | None = None
        index.views[id(self)] = self

    def freeze(self) -> None:
        if self._frozen is None:
            frozen = _ORIGINAL["input_name_to_nodes"](_Bare(self._index.model))
            frozen.update((name, nodes) for name, nodes in self._lists.items() if name in frozen)
            self._frozen = frozen
            self._index.views.pop(id(self), None)

    def __getitem__(self, name: str) -> list[onnx.NodeProto]:
        if self._frozen is not None:
            return self._frozen[name]
        if name in self._lists:
            return self._lists[name]
        positions = self._index.readers().get(name) if name else None
        if not positions:
            if self._index.check and name:
                self._index.verify_positions(name, (), outputs=False)
            raise KeyError(name)
        if self._index.check:
            self._index.verify_positions(name, positions, outputs=False)
        nodes = self._index.graph.node
        found = self._lists[name] = [nodes[p] for p in sorted(positions)]
        return found

    def __contains__(self, name: object) -> bool:
        if self._frozen is not None:
            return name in self._frozen
        if not isinstance(name, str):
            return False
        try:
            self[name]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        self.freeze()
        assert self._frozen is not None
        return iter(self._frozen)

    def __len__(self) -> int:
        self.freeze()
        assert self._frozen is not None
        return len(self._frozen)


class _Bare:
    """A stand-in ``self`` for onnxruntime's own methods that only read ``self.model``."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model


# -- per-thread activation: the swapped methods consult the indexes only on a thread inside the context


@dataclasses.dataclass
class IndexedRun:
    """What ``indexed_quantizer`` yields: whether the indexes stand in, and the model it kept."""

    active: bool
    capture_to: str | None = None
    # the model onnxruntime would have written to ``capture_to``, kept in memory instead
    model: onnx.ModelProto | None = None


class _State(threading.local):
    depth = 0
    check = False
    run: IndexedRun | None = None

    def __init__(self) -> None:
        self.indexes: dict[int, _Index] = {}


_state = _State()


def _index_of(model: Any) -> _Index | None:
    """The index of an ONNXModel's ModelProto when this thread is inside the context, else None."""
    if not _state.depth:
        return None
    proto = model.model
    index = _state.indexes.get(id(proto))
    if index is None or index.model is not proto:
        index = _state.indexes[id(proto)] = _Index(proto, _state.check)
    return index


def _index_of_initializers(items: object) -> _Index | None:
    if not _state.depth:
        return None
    for index in _state.indexes.values():
        if items is index.graph.initializer:
            return index
    return None


# -- the stand-ins; each falls back to onnxruntime's own method outside the context


def _find_by_name(item_name: str, item_list: Any) -> Any:
    index = _index_of_initializers(item_list)
    if index is None or not isinstance(item_name, str):
        return _ORIGINAL["find_by_name"](item_name, item_list)
    return index.initializer(item_name)


def _get_initializer(self: Any, name: str) -> onnx.TensorProto | None:
    index = _index_of(self)
    if index is None or not isinstance(name, str):
        return _ORIGINAL["get_initializer"](self, name)  # type: ignore[no-any-return]
    return index.initializer(name)


def _add_initializer(self: Any, tensor: onnx.TensorProto) -> None:
    index = _index_of(self)
    count = len(self.model.graph.initializer)
    _ORIGINAL["add_initializer"](self, tensor)  # its find_by_name is the indexed one
    if index is not None and len(self.model.graph.initializer) > count:
        index.initializer_appended()


def _initializer_extend(self: Any, inits: Sequence[onnx.TensorProto]) -> None:
    index = _index_of(self)
    if index is None:
        return _ORIGINAL["initializer_extend"](self, inits)  # type: ignore[no-any-return]
    if len(inits) == 0:
        raise ValueError("Can add an empty list.")
    # onnxruntime re-checks every initializer here; the check only acts on float8 tensors
    if index.has_float8():
        for init in self.initializer():
            self._check_init(init, "gain")
    for init in inits:
        self._check_init(init)
        self.model.graph.initializer.append(init)
        index.initializer_appended()
    return None


def _remove_initializer(self: Any, tensor: onnx.TensorProto) -> None:
    index = _index_of(self)
    name, data_type, count = tensor.name, tensor.data_type, len(self.model.graph.initializer)
    _ORIGINAL["remove_initializer"](self, tensor)
    # it removes the first initializer equal to ``tensor``: one of the same name and type
    if index is not None and len(self.model.graph.initializer) < count:
        index.initializer_removed(name, data_type)


def _get_largest_initializer_name_suffix(self: Any, initializer_name_prefix: str) -> int:
    index = _index_of(self)
    if index is None or not isinstance(initializer_name_prefix, str):
        return _ORIGINAL["get_largest_initializer_name_suffix"](self, initializer_name_prefix)  # type: ignore[no-any-return]
    return index.largest_suffix(initializer_name_prefix)


def _add_node(self: Any, node: onnx.NodeProto) -> None:
    index = _index_of(self)
    if index is not None:
        index.before_node_change()
    _ORIGINAL["add_node"](self, node)
    if index is not None:
        index.node_appended()
        if index.check:
            index.verify()


def _moving(name: str) -> Callable[..., Any]:
    """A stand-in for a method that reorders or drops nodes and initializers: the indexes start over."""

    def moved(self: Any, *args: Any) -> Any:
        index = _index_of(self)
        if index is not None:
            index.before_node_change()
        try:
            return _ORIGINAL[name](self, *args)
        finally:
            if index is not None:
                index.nodes_moved()
                index.initializers_moved()

    moved.__name__ = name
    return moved


def _input_name_to_nodes(self: Any) -> Mapping[str, list[onnx.NodeProto]]:
    index = _index_of(self)
    if index is None:
        return _ORIGINAL["input_name_to_nodes"](self)  # type: ignore[no-any-return]
    return ConsumerView(index)


# protobuf cannot serialize a message of 2 GiB or more: onnx.save_model raises then, so such a model
# takes onnxruntime's own path to that error
_PROTOBUF_LIMIT = 2**31 - 1


def _save_model_to_file(self: Any, output_path: Any, use_external_data_format: bool = False) -> None:
    run = _state.run if _state.depth else None
    if (
        run is None
        or run.capture_to is None
        or use_external_data_format
        or str(output_path) != run.capture_to
        or self.model.ByteSize() > _PROTOBUF_LIMIT
    ):
        return _ORIGINAL["save_model_to_file"](self, output_path, use_external_data_format)  # type: ignore[no-any-return]
    # onnxruntime sorts and checks, then writes; the caller would read the file straight back, so the
    # model itself is kept: parsing what protobuf serializes gives the same message
    self.topological_sort()
    for init in self.model.graph.initializer:
        self._check_init(init, "end")
    run.model = self.model
    return None


def _rewired_outside(name: str) -> Callable[..., None]:
    """A stand-in for ``replace_node_input/output``, static and so blind to which model the node is in."""

    def rewire(node: onnx.NodeProto, old_name: str, new_name: str) -> None:
        # a node rewired from outside the indexed methods: on this thread, every index starts over
        for index in _state.indexes.values():
            index.before_node_change()
        _ORIGINAL[name](node, old_name, new_name)
        for index in _state.indexes.values():
            index.nodes_moved()

    rewire.__name__ = name
    return rewire


def _rewiring(name: str, outputs: bool, by_name: bool) -> Callable[..., None]:
    """A stand-in for ``replace_{input,output}_of_{all_nodes,nodes}``: the nodes come from the index."""

    def rewire(self: Any, old_name: str, new_name: str, *node_names: Any) -> None:
        index = _index_of(self)
        # odd arguments (an empty or a non-str name, on which onnxruntime asserts) take its own path
        if index is None or not old_name or not isinstance(old_name, str) or not isinstance(new_name, str):
            return _ORIGINAL[name](self, old_name, new_name, *node_names)  # type: ignore[no-any-return]
        edges = index.writers() if outputs else index.readers()
        positions = sorted(set(edges.get(old_name, ())))
        if index.check:
            index.verify_positions(old_name, positions, outputs)
        nodes = self.model.graph.node
        if by_name:
            (wanted,) = node_names
            positions = [p for p in positions if nodes[p].name in wanted]
        if not positions or old_name == new_name:  # old == new: every name stays what it was
            return None
        index.before_node_change()
        replace = _ORIGINAL["replace_node_output" if outputs else "replace_node_input"]
        for pos in positions:
            replace(nodes[pos], old_name, new_name)
        index.move(edges, old_name, new_name, positions)
        if index.check:
            index.verify()
        return None

    rewire.__name__ = name
    return rewire


_ONNX_MODEL_METHODS: dict[str, Callable[..., Any]] = {
    "get_initializer": _get_initializer,
    "add_initializer": _add_initializer,
    "initializer_extend": _initializer_extend,
    "remove_initializer": _remove_initializer,
    "get_largest_initializer_name_suffix": _get_largest_initializer_name_suffix,
    "add_node": _add_node,
    "remove_node": _moving("remove_node"),
    "topological_sort": _moving("topological_sort"),
    "clean_initializers": _moving("clean_initializers"),
    "input_name_to_nodes": _input_name_to_nodes,
    "replace_input_of_all_nodes": _rewiring("replace_input_of_all_nodes", outputs=False, by_name=False),
    "replace_input_of_nodes": _rewiring("replace_input_of_nodes", outputs=False, by_name=True),
    "replace_output_of_all_nodes": _rewiring("replace_output_of_all_nodes", outputs=True, by_name=False),
    "replace_output_of_nodes": _rewiring("replace_output_of_nodes", outputs=True, by_name=True),
    "save_model_to_file": _save_model_to_file,
}
_STATIC_METHODS: dict[str, Callable[..., Any]] = {
    "replace_node_input": _rewired_outside("replace_node_input"),
    "replace_node_output": _rewired_outside("replace_node_output"),
}

_ORIGINAL: dict[str, Any] = {name: getattr(ONNXModel, name) for name in (*_ONNX_MODEL_METHODS, *_STATIC_METHODS)}
_ORIGINAL["find_by_name"] = quant_utils.find_by_name
# the class attributes as they were (staticmethod objects included), put back when the last context closes
_SAVED: dict[str, Any] = {name: vars(ONNXModel)[name] for name in (*_ONNX_MODEL_METHODS, *_STATIC_METHODS)}

# Functions the quantizer's modules import by name, swapped wherever a module holds the original:
# find_by_name for the indexes, and the weight and shape-inference functions _ort_memo answers
_FUNCTIONS: dict[str, tuple[Any, Callable[..., Any]]] = {
    "find_by_name": (_ORIGINAL["find_by_name"], _find_by_name),
    **{name: (_ort_memo.ORIGINAL[name], stand_in) for name, stand_in in _ort_memo.STAND_INS.items()},
}

_lock = threading.Lock()
_installed = 0
_patched_functions: list[tuple[Any, str]] = []  # (module, name)


def _install() -> None:
    global _installed
    with _lock:
        if _installed == 0:
            for name, method in _ONNX_MODEL_METHODS.items():
                setattr(ONNXModel, name, method)
            for name, function in _STATIC_METHODS.items():
                setattr(ONNXModel, name, staticmethod(function))
            _patched_functions.clear()
            for module_name, loaded in list(sys.modules.items()):
                module: Any = loaded
                if module_name.startswith("onnxruntime.quantization") and module is not None:
                    for name, (original, stand_in) in _FUNCTIONS.items():
                        if getattr(module, name, None) is original:
                            setattr(module, name, stand_in)
                            _patched_functions.append((module, name))
        _installed += 1


def _uninstall() -> None:
    global _installed
    with _lock:
        _installed -= 1
        if _installed == 0:
            for name, attribute in _SAVED.items():
                setattr(ONNXModel, name, attribute)
            for module, name in _patched_functions:
                setattr(module, name, _FUNCTIONS[name][0])
            _patched_functions.clear()


@contextlib.contextmanager
def indexed_quantizer(
    *,
    capture_to: str | None = None,
    copied_graph: tuple[onnx.ModelProto, onnx.ModelProto] | None = None,
    check: bool = False,
    expected: Mapping[str, str] = EXPECTED_SOURCES,
) -> Iterator[IndexedRun]:
    """While open, onnxruntime's quantizer on this thread answers its scans from indexes.

    The run it yields says whether it does: not, and nothing is swapped, when this onnxruntime's
    sources are not the ones checked (``support_problem`` says why). With ``capture_to`` the model
    onnxruntime would save to that path (without external data) is kept in ``run.model`` instead of
    written. With ``check`` every indexed answer is also computed by onnxruntime's own scan and a
    difference raises ``IndexMismatchError`` (for tests). Weight quantization and, for the models
    ``copied_graph`` declares (see ``_ort_memo.memoizing``), shape inference answer from memos too.
    """
    problem = support_problem(expected)
    if problem is not None:
        _log.debug("quantizing without indexes: %s", problem)
        yield IndexedRun(active=False)
        return
    run = IndexedRun(active=True, capture_to=capture_to)
    _install()
    _state.depth += 1
    outer = _state.check, _state.run
    _state.check, _state.run = check or outer[0], run
    try:
        with _ort_memo.memoizing(copied_graph):
            yield run
        if check:
            for index in _state.indexes.values():
                index.verify()
    finally:
        _state.check, _state.run = outer
        _state.depth -= 1
        if not _state.depth:
            _state.indexes.clear()
        _uninstall()
