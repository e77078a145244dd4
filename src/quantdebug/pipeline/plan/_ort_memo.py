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
import math
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
# tracemalloc), so many tiny answers are bounded too. MiniLM's per-channel weights take ~40 MB.
ENTRY_BYTES = 800
# Above these many bytes of weight data, a hit (hashing the data mostly) costs about what onnxruntime's
# own computation does: ~35 us for a scale (a min and a max after Python), ~12-16 us for integers (a
# few vectorized passes), against a hit's ~25 us at 16 KiB and ~13 us at 4 KiB (2-core AMD EPYC,
# benchmarks/memo_cost.py --calls), so larger arrays are not memoized.
LARGEST_PARAMS_DATA = 16 * 2**10
LARGEST_INTEGERS_DATA = 4 * 2**10
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
ORIGINAL: dict[str, Any] = {name: getattr(quant_utils, name) for name in _NAMES}
# the same functions, which the stand-ins call through here (tests spy on it to count real computations)
original = types.SimpleNamespace(**ORIGINAL)


class _Unkeyable(Exception):
    """An argument the memo does not key (an unusual type or layout)."""


# -- keys


def _digest(array: np.ndarray) -> bytes:
    # blake2b, not OpenSSL's sha256: sha256 alone is faster with SHA extensions, but measured on an AMD
    # EPYC it slowed the numpy work after it by more than it saved (13 us on a 384-float channel)
    return hashlib.blake2b(array.data, digest_size=16).digest()


def _add(parts: list[Any], value: object) -> None:
    """Append ``value`` to a flat key, led by its type: the type says how many parts follow, so no two
    argument lists give the same key (and True, 1 and 1.0 stay apart)."""
    kind = type(value)
    if value is None or kind is bool or kind is int:
        parts += (kind, value)
    elif kind is np.ndarray or isinstance(value, np.generic):
        array: np.ndarray = value if kind is np.ndarray else np.asarray(value)  # type: ignore[assignment]
        if array.dtype.kind not in "biuf" or not array.flags.c_contiguous:
            raise _Unkeyable
        # a scale or a zero point is keyed by its bytes, cheaper than a digest and as exact
        content = array.tobytes() if array.nbytes <= 64 else _digest(array)
        # a numpy scalar and a 0-d array promote alike, but the key keeps them apart all the same
        parts += (kind, array.dtype, array.shape, content)
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
    if type(value) is tuple:
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

    def get(self, key: Hashable) -> Any:
        """A copy of the answer kept for ``key``, or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            entry[2] = self._generation
            self._entries.move_to_end(key)
            answer = entry[0]
        return _copied(answer)

    def put(self, key: Hashable, answer: Any) -> None:
        """Keep a copy of ``answer`` (an array or a tuple of them; anything else is not kept) for ``key``."""
        arrays = answer if type(answer) is tuple else (answer,)
        size = ENTRY_BYTES
        for array in arrays:
            if type(array) is not np.ndarray:
                return
            size += array.nbytes
        if size > self.limit:
            return
        kept = _copied(answer)  # the caller may change what it got; the memo keeps its own
        with self._lock:
            if key in self._entries:
                return
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
    key = None
    if _memoizing_weights() and type(quant_type) is int and quant_type in _QUANT_TYPES:
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
        if key is not None:
            hit = weights.get(key)
            if hit is not None:
                return hit  # type: ignore[no-any-return]
    answer = original.compute_data_quant_params(
        data,
        quant_type,
        symmetric,
        reduce_range=reduce_range,
        min_real_range=min_real_range,
        rmin_override=rmin_override,
        rmax_override=rmax_override,
    )
    if key is not None:
        weights.put(key, answer)
    return answer  # type: ignore[no-any-return]


def _quantize_nparray(
    qType: int,  # onnxruntime's parameter names: callers may pass them by keyword
    arr: np.ndarray,
    scale: Any,
    zero_point: Any,
    low: Any = None,
    high: Any = None,
) -> np.ndarray:
    key = None
    if _memoizing_weights() and type(qType) is int and qType in _QUANT_TYPES:
        key = _key("integers", arr, LARGEST_INTEGERS_DATA, qType, scale, zero_point, low, high)
        if key is not None:
            hit = weights.get(key)
            if hit is not None:
                return hit  # type: ignore[no-any-return]
    answer = original.quantize_nparray(qType, arr, scale, zero_point, low, high)
    if key is not None:
        weights.put(key, answer)
    return answer  # type: ignore[no-any-return]


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
    """Nearly all of a model's size, from the initializers' shapes (reading raw_data would copy it)."""

    def itemsize(data_type: int) -> int:
        try:
            return int(onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize)
        except (KeyError, TypeError, ValueError):  # a type numpy has no dtype for: counted as the widest
            return 16

    return sum(math.prod(t.dims) * itemsize(t.data_type) for t in model.graph.initializer)


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
    """Forget every memoized answer and every model seen (for tests and benchmarks that need a cold start)."""
    weights.clear()
    with _models_lock:
        _models.clear()
        _recent.clear()


# -- per-thread activation


@dataclasses.dataclass(frozen=True)
class _Run:
    """One open ``memoizing`` context."""

    copied_graph: tuple[onnx.ModelProto, onnx.ModelProto] | None
    weights: bool  # whether the weight memo answers in it


class _State(threading.local):
    def __init__(self) -> None:
        self.runs: list[_Run] = []  # innermost last


_state = _State()

# ids of the float models recent runs declared, most recent last. Ids only: a reused id can at worst
# turn the weight memo on for a model's first run, which costs time, never bytes.
_recent: collections.OrderedDict[int, None] = collections.OrderedDict()
RECENT_KEPT = 8


def _seen_before(source: onnx.ModelProto) -> bool:
    with _models_lock:
        seen = id(source) in _recent
        _recent[id(source)] = None
        _recent.move_to_end(id(source))
        while len(_recent) > RECENT_KEPT:
            _recent.popitem(last=False)
    return seen


def _memoizing_weights() -> bool:
    return bool(_state.runs) and _state.runs[-1].weights


def _source_of(model: object) -> onnx.ModelProto | None:
    """The float model whose graph ``model`` copies, when a context on this thread declared it."""
    for run in _state.runs:
        if run.copied_graph is not None and run.copied_graph[0] is model:
            return run.copied_graph[1]
    return None


@contextlib.contextmanager
def memoizing(copied_graph: tuple[onnx.ModelProto, onnx.ModelProto] | None = None) -> Iterator[None]:
    """While open, the stand-ins on this thread answer from the memos (they must be installed).

    ``copied_graph`` is (given, source): ``given``, the model that will reach ``quantize_static``,
    has the graph of ``source`` copied unchanged; ``source`` is never changed in place. The
    shape-inferred form of ``given`` is then kept by ``source``'s identity and the rest of ``given``,
    and weights are memoized only from the second run that declares ``source`` on: a miss costs
    more than onnxruntime's own computation (the key, a copy kept), which a model quantized once
    would pay for nothing. Without ``copied_graph`` weights are memoized from the start.
    """
    source_again = copied_graph is None or _seen_before(copied_graph[1])
    _state.runs.append(_Run(copied_graph, weights=source_again))
    weights.new_generation()
    try:
        yield
    finally:
        _state.runs.pop()


# -- what _ort_index swaps in while any of its contexts is open (under its lock), in every
# onnxruntime.quantization module that holds the original by name

STAND_INS: dict[str, Callable[..., Any]] = {
    "compute_data_quant_params": _compute_data_quant_params,
    "quantize_nparray": _quantize_nparray,
    "save_and_reload_model_with_shape_infer": _save_and_reload_model_with_shape_infer,
}
