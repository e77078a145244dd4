"""Memos for the work onnxruntime's quantizer repeats, unchanged, on every candidate of one float model.

fix's candidates differ in activation settings only, yet each ``quantize_static`` call recomputes
every weight's scale, zero point and integers, one call per output channel of a per-channel weight,
and saves and reloads the float model to infer its shapes. While ``indexed_quantizer`` is open on a
thread, the stand-ins here answer those calls from memos: the weight functions by the content of
their arguments, the shape inference by the identity of the float model the given one was copied
from. Each answer is a fresh copy of what onnxruntime computed for the same input, so the model
written is the same, byte for byte. Elsewhere, and on other threads, onnxruntime's own functions run.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import sys
import threading
import types
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import quant_utils

# Bytes of weight answers kept, least recently used dropped first (see ``_Memo``).
MEMO_BYTES = 64 * 2**20
# What an entry costs besides its arrays (key, digest, dict slot, array headers; 560-830 bytes with
# tracemalloc), so many tiny answers are bounded too. MiniLM's per-channel weights take ~44 MB.
ENTRY_BYTES = 800
# Above these many bytes of weight data, hashing it costs more than onnxruntime's own computation
# of the scale (a min and a max after ~35 us of Python) or of the integers (a few vectorized passes
# after ~10 us), so larger arrays are not memoized: see benchmarks/memo_cost.py --calls.
LARGEST_PARAMS_DATA = 16 * 2**10
LARGEST_INTEGERS_DATA = 8 * 2**10
# Shape-inferred float models kept, and their initializers' bytes at most: each is a full copy, and
# holds on to the float model it was made from.
MODELS_KEPT = 2
MODEL_BYTES_KEPT = 2**30

# The integer types onnxruntime quantizes weights to with plain numpy; float8 and 4-bit take other paths.
_QUANT_TYPES = frozenset(
    {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16}
)
_DATA_TYPES = frozenset({np.dtype(np.float32), np.dtype(np.float16)})

_NAMES = ("compute_data_quant_params", "quantize_nparray", "save_and_reload_model_with_shape_infer")
# onnxruntime's functions as imported: what the swap looks for in each module and puts back
_ORIGINAL: dict[str, Any] = {name: getattr(quant_utils, name) for name in _NAMES}
# the same functions, which the stand-ins call through here (tests spy on it to count real computations)
original = types.SimpleNamespace(**_ORIGINAL)


class _Unkeyable(Exception):
    """An argument the memo does not key (an unusual type or layout)."""


# -- keys


def _digest(array: np.ndarray) -> bytes:
    # sha256 rather than blake2b: with the SHA extensions of current x86 and ARM cores, about twice as fast
    return hashlib.sha256(array.data).digest()


def _add(parts: list[Any], value: object) -> None:
    """Append ``value`` to a flat key, led by its type: the type says how many parts follow, so no two
    argument lists give the same key (and True, 1 and 1.0 stay apart)."""
    kind = type(value)
    if kind is np.ndarray or isinstance(value, np.generic):
        array: np.ndarray = value if kind is np.ndarray else np.asarray(value)  # type: ignore[assignment]
        if array.dtype.kind not in "biuf" or not array.flags.c_contiguous:
            raise _Unkeyable
        # a scale or a zero point is keyed by its bytes, cheaper than a digest and as exact
        content = array.tobytes() if array.nbytes <= 64 else _digest(array)
        # a numpy scalar and a 0-d array promote alike, but the key keeps them apart all the same
        parts += (kind, array.dtype, array.shape, content)
    elif value is None or kind is bool or kind is int:
        parts += (kind, value)
    elif kind is float:
        parts += (kind, value.hex())  # type: ignore[attr-defined]  # -0.0 and 0.0 apart, NaN equal to itself
    else:
        raise _Unkeyable


def _key(what: str, data: object, largest: int, *arguments: object) -> tuple[Hashable, ...] | None:
    """The key of a call on the weight ``data`` and ``arguments``; None where the memo should not answer:
    ``data`` is not a contiguous float array of at most ``largest`` bytes, or an argument is unusual."""
    if (
        type(data) is not np.ndarray
        or data.dtype not in _DATA_TYPES
        or data.nbytes > largest
        or not data.flags.c_contiguous
    ):
        return None
    parts: list[Any] = [what]
    try:
        _add(parts, data)
        for value in arguments:
            _add(parts, value)
    except _Unkeyable:
        return None
    return tuple(parts)


# -- the weight memo


def _copied(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(v.copy(order="K") for v in value)
    return value.copy(order="K")


class _Memo:
    """Answers by key within ``limit`` bytes; thread-safe.

    The least recently used answer is dropped first, except that answers used since the latest
    ``new_generation`` (the quantize call in progress) are not dropped for each other: a model whose
    answers pass the limit keeps those that fit, where plain LRU would have each call drop exactly
    what the next one needs first.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # key -> [answer, bytes, generation last used], least recently used first
        self._entries: collections.OrderedDict[Hashable, list[Any]] = collections.OrderedDict()
        self._bytes = 0
        self._generation = 0
        self._lock = threading.Lock()

    def new_generation(self) -> None:
        with self._lock:
            self._generation += 1

    def answer(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """A copy of the answer kept for ``key``, else ``compute()``'s, kept (a copy) when it is arrays."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry[2] = self._generation
                self._entries.move_to_end(key)
                return _copied(entry[0])
        value = compute()
        arrays = value if isinstance(value, tuple) else (value,)
        if not all(type(a) is np.ndarray for a in arrays):
            return value
        size = ENTRY_BYTES + sum(a.nbytes for a in arrays)
        kept = _copied(value)  # the caller may change what it gets; the memo keeps its own
        with self._lock:
            if key in self._entries or size > self.limit:
                return value
            self._entries[key] = [kept, size, self._generation]
            self._bytes += size
            while self._bytes > self.limit:
                oldest, (_, dropped, generation) = next(iter(self._entries.items()))
                if generation == self._generation:  # all in use by this call: the newcomer goes
                    del self._entries[key]
                    self._bytes -= size
                    break
                del self._entries[oldest]
                self._bytes -= dropped
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes


weights = _Memo(MEMO_BYTES)


def _compute_data_quant_params(
    data: np.ndarray,
    quant_type: int,
    symmetric: bool,
    reduce_range: bool = False,
    min_real_range: float | None = None,
    rmin_override: float | None = None,
    rmax_override: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    def compute() -> tuple[np.ndarray, np.ndarray]:
        return original.compute_data_quant_params(  # type: ignore[no-any-return]
            data,
            quant_type,
            symmetric,
            reduce_range=reduce_range,
            min_real_range=min_real_range,
            rmin_override=rmin_override,
            rmax_override=rmax_override,
        )

    if not _inside() or type(quant_type) is not int or quant_type not in _QUANT_TYPES:
        return compute()
    key = _key(
        "params",
        data,
        LARGEST_PARAMS_DATA,
        quant_type,
        symmetric,
        reduce_range,
        min_real_range,
        rmin_override,
        rmax_override,
    )
    return compute() if key is None else weights.answer(key, compute)  # type: ignore[no-any-return]


def _quantize_nparray(
    qType: int,  # onnxruntime's parameter names: callers may pass them by keyword
    arr: np.ndarray,
    scale: Any,
    zero_point: Any,
    low: Any = None,
    high: Any = None,
) -> np.ndarray:
    def compute() -> np.ndarray:
        return original.quantize_nparray(qType, arr, scale, zero_point, low, high)  # type: ignore[no-any-return]

    if not _inside() or type(qType) is not int or qType not in _QUANT_TYPES:
        return compute()
    key = _key("integers", arr, LARGEST_INTEGERS_DATA, qType, scale, zero_point, low, high)
    return compute() if key is None else weights.answer(key, compute)  # type: ignore[no-any-return]


# -- the shape-inferred model


@dataclasses.dataclass
class _Inferred:
    source: onnx.ModelProto  # held, so that its id names no other model while the entry lives
    model: onnx.ModelProto
    nbytes: int


_models: collections.OrderedDict[tuple[int, bytes], _Inferred] = collections.OrderedDict()
_models_lock = threading.Lock()


def _outside_graph(model: onnx.ModelProto) -> bytes:
    """Everything of ``model`` but its graph (opsets, metadata, functions), serialized: a cheap part of the key."""
    shell = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name == "graph":
            continue
        # protobuf 7 dropped ``label``; older releases lack ``is_repeated``
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        if repeated:
            getattr(shell, field.name).extend(value)
        elif field.message_type is not None:
            getattr(shell, field.name).CopyFrom(value)
        else:
            setattr(shell, field.name, value)
    return shell.SerializeToString(deterministic=True)


def _initializer_bytes(model: onnx.ModelProto) -> int:
    # nearly all of a model's size; tensors kept in typed fields rather than raw_data count short
    return sum(len(t.raw_data) for t in model.graph.initializer)


def _save_and_reload_model_with_shape_infer(model: onnx.ModelProto) -> onnx.ModelProto:
    source = _source_of(model)
    if source is None:
        return original.save_and_reload_model_with_shape_infer(model)  # type: ignore[no-any-return]
    key = (id(source), _outside_graph(model))
    fresh = onnx.ModelProto()
    with _models_lock:
        entry = _models.get(key)
        if entry is not None and entry.source is source:
            _models.move_to_end(key)
            fresh.CopyFrom(entry.model)  # onnxruntime rewrites what it gets: a copy each time
            return fresh
    inferred: onnx.ModelProto = original.save_and_reload_model_with_shape_infer(model)
    size = _initializer_bytes(inferred)
    if size <= MODEL_BYTES_KEPT:
        fresh.CopyFrom(inferred)
        with _models_lock:
            _models[key] = _Inferred(source, fresh, size)
            _models.move_to_end(key)
            while len(_models) > MODELS_KEPT or sum(e.nbytes for e in _models.values()) > MODEL_BYTES_KEPT:
                _models.popitem(last=False)
    return inferred


def clear() -> None:
    """Forget every memoized answer (for tests and benchmarks that need a cold start)."""
    weights.clear()
    with _models_lock:
        _models.clear()


# -- per-thread activation


class _State(threading.local):
    def __init__(self) -> None:
        # (given, source) of each open ``memoizing``, innermost last; None where none was declared
        self.copies: list[tuple[onnx.ModelProto, onnx.ModelProto] | None] = []


_state = _State()


def _inside() -> bool:
    return bool(_state.copies)


def _source_of(model: object) -> onnx.ModelProto | None:
    """The float model whose graph ``model`` copies, when a context on this thread declared it."""
    for copy in _state.copies:
        if copy is not None and copy[0] is model:
            return copy[1]
    return None


@contextlib.contextmanager
def memoizing(copied_graph: tuple[onnx.ModelProto, onnx.ModelProto] | None = None) -> Iterator[None]:
    """While open, the stand-ins on this thread answer from the memos (they must be installed).

    ``copied_graph`` is (given, source): ``given``, the model that will reach ``quantize_static``,
    has the graph of ``source`` copied unchanged; ``source`` is never changed in place. The
    shape-inferred form of ``given`` is then kept by ``source``'s identity and the rest of ``given``.
    """
    _state.copies.append(copied_graph)
    weights.new_generation()
    try:
        yield
    finally:
        _state.copies.pop()


# -- the swap, made by _ort_index while any of its contexts is open (under its lock)

_STAND_INS: dict[str, Callable[..., Any]] = {
    "compute_data_quant_params": _compute_data_quant_params,
    "quantize_nparray": _quantize_nparray,
    "save_and_reload_model_with_shape_infer": _save_and_reload_model_with_shape_infer,
}
_patched: list[tuple[Any, str]] = []


def install() -> None:
    """Put the stand-ins in every onnxruntime.quantization module that holds the originals by name."""
    _patched.clear()
    for module_name, loaded in list(sys.modules.items()):
        module: Any = loaded
        if not module_name.startswith("onnxruntime.quantization") or module is None:
            continue
        for name, stand_in in _STAND_INS.items():
            if getattr(module, name, None) is _ORIGINAL[name]:
                setattr(module, name, stand_in)
                _patched.append((module, name))


def uninstall() -> None:
    for module, name in _patched:
        setattr(module, name, _ORIGINAL[name])
    _patched.clear()
