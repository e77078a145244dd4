"""Seed-style datasets (a callable returning a fresh iterable of samples), validated sample by sample.

A sample is a list of arrays (one per model input, in order), a dict {input_name: array}, or a
single array for a one-input model. Every sample is checked against the model's inputs.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper

from quantdebug.errors import DatasetError, mismatch


@dataclasses.dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype[Any]
    shape: tuple[int | str | None, ...] | None  # None: rank unknown; str/None entries are free dims

    def describe(self) -> str:
        if self.shape is None:
            return f"{self.name} ({self.dtype})"
        dims = ", ".join("?" if not isinstance(d, int) else str(d) for d in self.shape)
        return f"{self.name} [{dims}] {self.dtype}"

    @property
    def batch_free(self) -> bool:
        """True when the first dimension is symbolic, so samples may be stacked along it."""
        return bool(self.shape) and not isinstance(self.shape[0], int)  # type: ignore[index]


_TYPE_NAMES = set(onnx.TensorProto.DataType.values())


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    init = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in init:
            continue
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise DatasetError(f"model input {vi.name!r} is not a tensor; only tensor inputs are supported")
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except (KeyError, TypeError, ValueError) as exc:
            kind = onnx.TensorProto.DataType.Name(tt.elem_type) if tt.elem_type in _TYPE_NAMES else tt.elem_type
            raise DatasetError(
                f"model input {vi.name!r} has element type {kind}, which has no numpy equivalent to feed"
            ) from exc
        shape: tuple[int | str | None, ...] | None = None
        if tt.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
        specs.append(InputSpec(vi.name, dtype, shape))
    return specs


def is_ray_dataset(obj: object) -> bool:
    """A ``ray.data.Dataset``: iterable by name only (its ``__iter__`` raises), read with ``iter_rows``.

    The one rule for every path (``Dataset`` here, ``RayExecutor``'s split): duck typing on the type's
    module, so that ``ray.data`` is never imported to ask and every Ray Dataset class passes.
    """
    return type(obj).__module__.startswith("ray.data") and hasattr(obj, "iter_rows") and hasattr(obj, "split")


def _is_one_shot(obj: object) -> bool:
    return isinstance(obj, Iterator)


class Dataset:
    """A re-iterable, validated source of feeds ``{input_name: array}``.

    ``source`` is a callable returning an iterable of samples (the tutorial's
    ``representative_dataset``), or a re-iterable collection such as a list. A one-shot iterator
    or generator object is refused: calibration and debugging each read the data.
    """

    def __init__(self, source: object, specs: list[InputSpec], *, what: str = "dataset") -> None:
        if _is_one_shot(source):
            raise DatasetError(
                f"{what} is a one-shot iterator/generator, but quantdebug reads the data more than once "
                "(calibration, then debugging); pass the generator function itself (without calling it) "
                "or a list of samples"
            )
        if is_ray_dataset(source):  # rows are samples; qd.RayExecutor splits it over its workers
            self._factory: Callable[[], Iterable[Any]] = source.iter_rows  # type: ignore[attr-defined]
        elif callable(source):
            self._factory = source  # type: ignore[assignment]
        elif isinstance(source, cabc.Iterable) and not isinstance(source, str | bytes | Mapping):
            items = source
            self._factory = lambda: items
        else:
            raise DatasetError(
                f"{what} must be a callable returning an iterable of samples, or a list of samples; "
                f"got {type(source).__name__}"
            )
        self.specs = specs
        self.what = what
        self._cast_noted: set[tuple[str, str]] = set()  # (from, to) dtypes already warned about

    @property
    def factory(self) -> Callable[[], Iterable[Any]]:
        """The callable behind the dataset (a ``ShardedDataset``, a Ray Dataset's ``iter_rows``, the
        user's function, or one returning the given collection): what executors split into shards."""
        return self._factory

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield validated feeds, one per sample; errors name the sample index and the input."""
        try:
            iterable = self._factory()
        except Exception as exc:
            raise DatasetError(f"{self.what}: calling the dataset function failed: {exc!r}") from exc
        if _is_one_shot(iterable) and iterable is getattr(self, "_last", None):
            raise DatasetError(f"{self.what}: the dataset function returned an exhausted iterator; return a fresh one")
        self._last = iterable
        try:
            iterator = iter(iterable)
        except TypeError as exc:
            raise DatasetError(
                f"{self.what}: the dataset function returned {type(iterable).__name__}, which is not iterable"
            ) from exc
        index = 0
        while True:
            try:
                sample = next(iterator)
            except StopIteration:
                break
            except DatasetError:
                raise
            except Exception as exc:
                raise DatasetError(f"{self.what}: reading sample {index} raised {exc!r}") from exc
            yield self.feed(sample, index)
            index += 1
        if index == 0:
            raise DatasetError(f"{self.what} is empty: it yielded no samples")

    def feed(self, sample: object, index: int) -> dict[str, np.ndarray]:
        names = [s.name for s in self.specs]
        if isinstance(sample, Mapping):
            unknown = [k for k in sample if k not in names]
            missing = [n for n in names if n not in sample]
            if unknown or missing:
                raise DatasetError(
                    f"{self.what} sample {index}: input names do not match the model "
                    f"({mismatch(unknown, missing)}); the model's inputs are {names}"
                )
            values = [sample[n] for n in names]
        elif isinstance(sample, list | tuple):
            if len(sample) != len(names):
                raise DatasetError(
                    f"{self.what} sample {index} has {len(sample)} array{'s' * (len(sample) != 1)} but the model has "
                    f"{len(names)} input{'s' * (len(names) != 1)} ({', '.join(s.describe() for s in self.specs)})"
                )
            values = list(sample)
        elif len(names) == 1 and hasattr(sample, "__array__"):
            values = [sample]
        else:
            raise DatasetError(
                f"{self.what} sample {index} is a {type(sample).__name__}; a sample is a list of arrays "
                f"(one per input, in order) or a dict {{input_name: array}}"
            )
        return {spec.name: self._check(spec, value, index) for spec, value in zip(self.specs, values)}

    def _check(self, spec: InputSpec, value: object, index: int) -> np.ndarray:
        where = f"{self.what} sample {index}, input {spec.name!r}"
        if hasattr(value, "detach"):  # torch tensors
            value = value.detach().cpu().numpy()  # type: ignore[attr-defined]
        elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # tf tensors
            value = value.numpy()  # type: ignore[attr-defined]
        try:
            array = np.asarray(value)
        except Exception as exc:
            raise DatasetError(f"{where}: cannot be turned into an array ({exc})") from exc
        if array.dtype == object:
            raise DatasetError(f"{where}: holds Python objects, not numbers; expected {spec.dtype}")
        if array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
            raise DatasetError(f"{where}: {_non_finite(array)}; clean the data before quantizing")
        array_dtype = array.dtype
        if array.dtype != spec.dtype:
            same_kind = array.dtype.kind == spec.dtype.kind or (array.dtype.kind in "iu" and spec.dtype.kind in "iu")
            if not same_kind:
                raise DatasetError(
                    f"{where}: dtype {array.dtype} does not match the model's {spec.dtype}; convert the data "
                    f"(for example array.astype(np.{spec.dtype}))"
                )
            array = _cast(array, spec.dtype, where)
            self._note_cast(array_dtype, spec)
        if spec.shape is not None:
            if array.ndim != len(spec.shape):
                raise DatasetError(
                    f"{where}: shape {list(array.shape)} has rank {array.ndim}, but the model expects "
                    f"{spec.describe()}"
                    + (" (add the batch axis: x[None])" if array.ndim + 1 == len(spec.shape) else "")
                )
            for axis, (got, want) in enumerate(zip(array.shape, spec.shape)):
                if isinstance(want, int) and want > 0 and got != want:
                    hint = layout_hint(array.shape, spec.shape)
                    raise DatasetError(
                        f"{where}: shape {list(array.shape)} differs from the model's {spec.describe()} at axis {axis}"
                        + (f"; {hint}" if hint else "")
                    )
        if array.size == 0 and not (spec.shape and any(d == 0 for d in spec.shape)):
            raise DatasetError(
                f"{where}: is empty (shape {list(array.shape)}); every sample needs at least one element per input"
            )
        return np.ascontiguousarray(array)

    def _note_cast(self, got: np.dtype[Any], spec: InputSpec) -> None:
        """Warn once per dataset and dtype pair that samples are cast (float64 data is common and harmless)."""
        key = (str(got), str(spec.dtype))
        if key in self._cast_noted:
            return
        self._cast_noted.add(key)
        warnings.warn(
            f"{self.what}: input {spec.name!r} samples are {got}, cast to the model's {spec.dtype} "
            "(noted once per dataset)",
            stacklevel=4,
        )


# -- layout ---------------------------------------------------------------------------------------
_IMAGE_FOLDERS = " (an image folder on the command line: --layout {})"


def layout_hint(got: Sequence[int], expected: Sequence[int | str | None]) -> str:
    """A hint when ``got`` is ``expected`` in the other image layout (NHWC vs NCHW), else ''.

    Rank-4 shapes with a batch axis and rank-3 shapes without one are recognised; free (symbolic)
    dimensions of ``expected`` match anything.
    """
    got = tuple(int(d) for d in got)
    exp = tuple(expected)
    if len(got) != len(exp) or len(got) not in (3, 4) or _fits(got, exp):
        return ""
    lead = 1 if len(got) == 4 else 0
    to_nchw = (0, 3, 1, 2) if lead else (2, 0, 1)
    to_nhwc = (0, 2, 3, 1) if lead else (1, 2, 0)
    if _fits(tuple(got[i] for i in to_nchw), exp):
        return (
            f"the data looks channels-last (NHWC) {list(got)} but the model expects channels-first (NCHW) "
            f"{_show(exp)}; transpose it: np.transpose(x, {to_nchw}){_IMAGE_FOLDERS.format('NCHW')}"
        )
    if _fits(tuple(got[i] for i in to_nhwc), exp):
        return (
            f"the data looks channels-first (NCHW) {list(got)} but the model expects channels-last (NHWC) "
            f"{_show(exp)}; transpose it: np.transpose(x, {to_nhwc}){_IMAGE_FOLDERS.format('NHWC')}"
        )
    return ""


def _fits(shape: tuple[int, ...], expected: tuple[int | str | None, ...]) -> bool:
    return all(not isinstance(e, int) or e <= 0 or e == g for g, e in zip(shape, expected))


def _show(shape: tuple[int | str | None, ...]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in shape) + "]"


def _non_finite(array: np.ndarray) -> str:
    bad = ~np.isfinite(array)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    nans = int(np.isnan(array).sum())
    return (
        f"contains {int(bad.sum())} non-finite values ({nans} NaN, {int(bad.sum()) - nans} Inf), "
        f"the first at index {list(first)}"
    )


def _cast(array: np.ndarray, dtype: np.dtype[Any], where: str) -> np.ndarray:
    """``array`` as ``dtype`` of the same kind, refusing values the narrower type cannot hold."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise DatasetError(
                f"{where}: values {array.min()}..{array.max()} do not fit the model's {dtype} ({info.min}..{info.max})"
            )
        return array.astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = array.astype(dtype)
    if cast.dtype.kind == "f" and cast.size and not np.isfinite(cast).all():
        biggest = float(np.abs(array[np.isfinite(array)]).max())
        raise DatasetError(
            f"{where}: values up to {biggest:g} overflow the model's {dtype} "
            f"(largest {float(np.finfo(dtype).max):g}); scale the data"
        )
    return cast


def as_dataset(source: object, model: onnx.ModelProto, *, what: str = "dataset") -> Dataset:
    if isinstance(source, Dataset):
        return source
    return Dataset(source, input_specs(model), what=what)


def batches(
    feeds: Iterable[dict[str, np.ndarray]], batch_size: int, can_batch: bool
) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """Stack consecutive samples along axis 0; yield (feed, number_of_samples).

    Only samples whose leading dimension is 1 are stacked, and a change of shape starts a new batch.
    """
    pending: list[dict[str, np.ndarray]] = []

    def flush() -> Iterator[tuple[dict[str, np.ndarray], int]]:
        if not pending:
            return
        if len(pending) == 1:
            yield pending[0], 1
        else:
            yield {k: np.concatenate([p[k] for p in pending], axis=0) for k in pending[0]}, len(pending)
        pending.clear()

    for feed in feeds:
        stackable = can_batch and batch_size > 1 and all(a.ndim > 0 and a.shape[0] == 1 for a in feed.values())
        if not stackable:
            yield from flush()
            yield feed, 1
            continue
        if pending and any(pending[0][k].shape != v.shape for k, v in feed.items()):
            yield from flush()
        pending.append(feed)
        if len(pending) >= batch_size:
            yield from flush()
    yield from flush()
