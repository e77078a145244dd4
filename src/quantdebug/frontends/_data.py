"""Framework datasets as seed-style callables, and a check that tells NHWC data from an NCHW model.

Every batch (a torch DataLoader's, a tf.data.Dataset's, a numpy array's) is split into samples of batch 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import onnx

from quantdebug.data import input_specs, layout_hint
from quantdebug.errors import DatasetError
from quantdebug.frontends._verify import to_numpy

Sample = list[np.ndarray] | dict[str, np.ndarray]


def _is_tensor(value: object) -> bool:
    return (
        isinstance(value, np.ndarray | np.generic)
        or hasattr(value, "detach")
        or (hasattr(value, "numpy") and hasattr(value, "shape") and hasattr(value, "dtype"))
    )


def _split(arrays: list[np.ndarray], where: str) -> Iterator[list[np.ndarray]]:
    """Rows of a batch: B samples of batch 1 from arrays of leading dimension B."""
    sizes = {a.shape[0] if a.ndim else None for a in arrays}
    if None in sizes:
        raise DatasetError(f"{where}: a scalar has no batch axis to split; give arrays of shape [batch, ...]")
    if len(sizes) != 1:
        raise DatasetError(
            f"{where}: the arrays of one batch have different batch sizes {sorted(s for s in sizes if s is not None)}"
        )
    size = sizes.pop()
    assert size is not None
    for i in range(size):
        yield [a[i : i + 1] for a in arrays]


def _batch_to_samples(batch: object, index: int, drop_labels: bool, split: bool) -> Iterator[Sample]:
    where = f"batch {index}"
    if isinstance(batch, Mapping):
        names = [str(k) for k in batch]
        arrays = [to_numpy(v) for v in batch.values()]
        rows: Iterable[list[np.ndarray]] = _split(arrays, where) if split else [arrays]
        for row in rows:
            yield dict(zip(names, row))
        return
    if isinstance(batch, list | tuple):
        if not batch:
            raise DatasetError(f"{where} is empty")
        if drop_labels and len(batch) >= 1:
            inputs = batch[0]
            if isinstance(inputs, Mapping):
                yield from _batch_to_samples(inputs, index, drop_labels=False, split=split)
                return
            values = list(inputs) if isinstance(inputs, list | tuple) else [inputs]
        else:
            values = list(batch)
    elif _is_tensor(batch):
        values = [batch]
    else:
        raise DatasetError(
            f"{where} is a {type(batch).__name__}; expected a tensor or array, a tuple (inputs, labels) or a dict"
        )
    arrays = [to_numpy(v) for v in values]
    if any(a.dtype == object for a in arrays):
        raise DatasetError(f"{where} holds Python objects, not numbers")
    yield from (_split(arrays, where) if split else [arrays])


def as_seed_dataset(
    obj: object, *, drop_labels: bool = True, max_samples: int | None = None
) -> Callable[[], Iterator[Sample]]:
    """A re-iterable, seed-style dataset (a callable returning a fresh iterator of samples) from ``obj``.

    - a numpy array (or tensor) of shape [N, ...]: N samples of shape [1, ...];
    - a torch ``DataLoader``, a ``tf.data.Dataset`` or any re-iterable of batches (a list of arrays,
      for instance): every batch of size B becomes B samples of batch 1. A batch that is a tuple or
      list is ``(inputs, labels, ...)`` and only its first element is kept (with ``drop_labels=False``
      the whole tuple is the model's inputs); inputs that are themselves a tuple are several model
      inputs, a dict maps input names to batches. An unbatched ``tf.data.Dataset`` needs ``.batch(n)``;
    - a callable (the seed-style ``representative_dataset``): its samples are passed on as they are,
      tensors turned into numpy arrays, nothing split.

    ``max_samples`` stops every pass after that many samples. A one-shot iterator or generator object
    is refused, because quantdebug reads the data more than once.
    """
    if isinstance(obj, Iterator):
        raise DatasetError(
            "the dataset is a one-shot iterator/generator, but quantdebug reads the data more than once; pass a "
            "DataLoader, a tf.data.Dataset, a list of batches, an array, or the generator function itself"
        )
    if isinstance(obj, str | bytes):
        raise DatasetError(f"a dataset cannot be a {type(obj).__name__}")

    def limit(samples: Iterator[Sample]) -> Iterator[Sample]:
        for count, sample in enumerate(samples):
            if max_samples is not None and count >= max_samples:
                return
            yield sample

    if callable(obj) and not _is_tensor(obj):
        source: Callable[[], Iterable[Any]] = obj  # type: ignore[assignment]

        def from_callable() -> Iterator[Sample]:
            return limit(_passthrough(source()))

        return from_callable
    if _is_tensor(obj):
        array = to_numpy(obj)
        if array.ndim == 0:
            raise DatasetError("a dataset array needs a leading sample axis: shape [N, ...]")

        def from_array() -> Iterator[Sample]:
            return limit(iter([array[i : i + 1]] for i in range(array.shape[0])))

        return from_array
    if not isinstance(obj, Iterable):
        hint = (
            " (a map-style torch Dataset: wrap it, torch.utils.data.DataLoader(dataset, batch_size=8))"
            if hasattr(obj, "__getitem__") and hasattr(obj, "__len__")
            else ""
        )
        raise DatasetError(
            f"cannot make a dataset from a {type(obj).__name__}{hint}; pass a DataLoader, a tf.data.Dataset, an "
            "array of shape [N, ...], a list of batches or a function returning samples"
        )
    batches: Iterable[Any] = obj

    def from_batches() -> Iterator[Sample]:
        def gen() -> Iterator[Sample]:
            for index, batch in enumerate(batches):
                yield from _batch_to_samples(batch, index, drop_labels, split=True)

        return limit(gen())

    return from_batches


def _passthrough(samples: Iterable[Any]) -> Iterator[Any]:
    for sample in samples:
        if isinstance(sample, Mapping):
            yield {k: to_numpy(v) for k, v in sample.items()}
        elif isinstance(sample, list | tuple):
            yield [to_numpy(v) for v in sample]
        elif _is_tensor(sample):
            yield to_numpy(sample)
        else:
            yield sample  # left to the dataset checks, which name the problem


# -- layout -----------------------------------------------------------------------------------
def check_layout(model: onnx.ModelProto, sample: object) -> None:
    """Raise DatasetError with a transposing hint when ``sample`` is in the other layout than ``model``'s inputs."""

    specs = input_specs(model)
    if isinstance(sample, Mapping):
        values = [sample.get(s.name) for s in specs]
    elif isinstance(sample, list | tuple):
        values = list(sample)
    else:
        values = [sample]
    for spec, value in zip(specs, values):
        if value is None or spec.shape is None:
            continue
        hint = layout_hint(to_numpy(value).shape, spec.shape)
        if hint:
            raise DatasetError(f"input {spec.name!r}: {hint}")


# -- for QuantizationDebugger -----------------------------------------------------------------
def is_framework_dataset(obj: object) -> bool:
    """True for what only as_seed_dataset understands: an array or tensor, a torch DataLoader, a tf.data.Dataset."""
    if _is_tensor(obj):
        return True
    roots = {c.__module__.split(".")[0] for c in type(obj).__mro__}
    if "torch" in roots:
        import torch  # optional dependency

        return isinstance(obj, torch.utils.data.DataLoader)
    if "tensorflow" in roots:
        import tensorflow as tf  # optional dependency

        return isinstance(obj, tf.data.Dataset)
    return False


def adapt_dataset(obj: object) -> object:
    """``as_seed_dataset(obj)`` for arrays, DataLoaders and tf.data; anything else unchanged.

    Plain lists and callables keep quantdebug's own meaning (each element is one sample), so they
    pass through: as_seed_dataset would read a list as batches of (inputs, labels).
    """
    return as_seed_dataset(obj) if is_framework_dataset(obj) else obj


def first_sample(obj: object) -> list[np.ndarray] | dict[str, np.ndarray] | None:
    """The first sample of a dataset in any form the debugger takes, as numpy arrays; None when it has none."""
    source = adapt_dataset(obj)
    if isinstance(source, Iterator):
        return None  # reading it would consume it; the dataset checks refuse it with a clear message
    try:
        items = source() if callable(source) else source
        sample = next(iter(items))  # type: ignore[arg-type]
    except (StopIteration, TypeError):
        return None
    if isinstance(sample, Mapping):
        return {str(k): to_numpy(v) for k, v in sample.items()}
    if isinstance(sample, list | tuple):
        return [to_numpy(v) for v in sample]
    return [to_numpy(sample)]
