"""Models whose weights stay in external data files because protobuf cannot hold them (over 2 GB).

Such a model is kept in memory as a small ``ModelProto`` whose large tensors are references:
``external_data`` entries whose ``location`` is ``quantdebug-external:<absolute path>`` (with the
usual ``offset`` and ``length``), only ever to files ``quantdebug.pipeline.prepare`` checked or quantdebug wrote in this
process. No ONNX tool reads these references:

- sessions get the weights as read-only memory maps, through ``add_initializer`` (no copy) or,
  when an optimizer needs them inside the model, ``add_external_initializers`` (a copy);
- models onnxruntime optimizes or its quantizer writes keep their large tensors in files of a
  private workspace folder (deleted at exit); unchanged weights point back at their original
  file, and the fix search deletes each candidate's quantized weights when it moves on;
- :func:`write_model` copies the data next to a saved model, with relative locations as ONNX
  wants, and :func:`as_proto` refuses to hand such a model out as a ``ModelProto``.

Models whose size with their weights is under the limit never take this path.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from quantdebug.errors import ModelError, ModelTooLargeError
from quantdebug.support import _io

PREFIX = "quantdebug-external:"
_MARK = PREFIX.encode()
MIN_EXTERNAL_BYTES = 1024
"""Tensors at least this large stay in external data; smaller ones (shapes, scales) are read into the model."""

_CHUNK = 64 * 2**20


PROTOBUF_LIMIT = 2**31 - 1
"""Largest serialized ModelProto protobuf can hold (2 GB); the tests lower it to exercise the checks."""


# -- references -----------------------------------------------------------------------------------------


_TRUSTED: set[str] = set()
"""Files references may read: checked by ``quantdebug.pipeline.prepare`` or written by quantdebug in this process.

A model that arrives as bytes or a ``ModelProto`` with a reference to any other file is refused,
so an untrusted model cannot use the reference syntax to read files outside its folder.
"""


def trusted(tensor: onnx.TensorProto) -> bool:
    return is_reference(tensor) and _fields(tensor)["location"][len(PREFIX) :] in _TRUSTED


def _fields(tensor: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def is_reference(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL and _fields(tensor).get("location", "").startswith(PREFIX)


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto of ``model``: initializers (subgraphs' too), then tensor attributes (Constant
    values) of graphs, subgraphs and functions; the tensors, and the order, of onnx's private
    ``external_data_helper._get_all_tensors``, which is not an API to rely on."""

    def subgraphs(attribute: onnx.AttributeProto) -> Iterator[onnx.GraphProto]:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        if attribute.type == onnx.AttributeProto.GRAPHS:
            yield from attribute.graphs

    def initializers(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
        yield from graph.initializer
        for node in graph.node:
            for attribute in node.attribute:
                for sub in subgraphs(attribute):
                    yield from initializers(sub)

    def attributes(graph: onnx.GraphProto | onnx.FunctionProto) -> Iterator[onnx.TensorProto]:
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                for sub in subgraphs(attribute):
                    yield from attributes(sub)

    yield from initializers(model.graph)
    yield from attributes(model.graph)
    for function in model.functions:
        yield from attributes(function)


def referenced_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Every tensor of ``model`` (subgraphs and Constant attributes included) kept as a quantdebug reference."""
    return [t for t in all_tensors(model) if is_reference(t)]


def has_references(model: onnx.ModelProto) -> bool:
    return any(is_reference(t) for t in all_tensors(model))


def payload_has_references(payload: bytes) -> bool:
    """Whether serialized model bytes may hold references (a cheap byte search; parsing decides)."""
    return _MARK in payload


def _source(tensor: onnx.TensorProto) -> tuple[Path, int, int]:
    fields = _fields(tensor)
    path = Path(fields["location"][len(PREFIX) :])
    offset = int(fields.get("offset") or 0)
    length = int(fields["length"]) if fields.get("length") else path.stat().st_size - offset
    return path, offset, length


def _set_location(
    tensor: onnx.TensorProto, location: str, offset: int | None = None, length: int | None = None
) -> None:
    """Rewrite where the tensor's data is; ``offset``/``length`` entries are added when missing."""
    fields = _fields(tensor)
    fields["location"] = location
    if offset is not None:
        fields["offset"] = str(offset)
    if length is not None:
        fields["length"] = str(length)
    del tensor.external_data[:]
    for key, value in fields.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def referenced_bytes(model: onnx.ModelProto) -> int:
    return sum(_source(t)[2] for t in referenced_tensors(model))


def reference_data(model: onnx.ModelProto, base: Path) -> None:
    """Turn the relative external-data locations of a just-loaded model into references, in place.

    Tensors under ``MIN_EXTERNAL_BYTES`` are read into the model instead (shape inference and the
    quantizer read small constants). The locations must already be checked (see ``quantdebug.pipeline.prepare``).
    """
    for tensor in all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL or is_reference(tensor):
            continue
        fields = _fields(tensor)
        path = (base / fields["location"]).resolve()
        _TRUSTED.add(str(path))
        _set_location(tensor, PREFIX + str(path))
        if _source(tensor)[2] < MIN_EXTERNAL_BYTES:
            _read_in(tensor)


def _read_in(tensor: onnx.TensorProto) -> None:
    path, offset, length = _source(tensor)
    with open(path, "rb") as handle:
        handle.seek(offset)
        tensor.raw_data = handle.read(length)
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.DEFAULT


def adopt(model: onnx.ModelProto, folder: Path) -> None:
    """Make the external data that onnxruntime or its quantizer wrote in ``folder`` references, in place.

    Only graph initializers stay references (onnxruntime takes external initializers only);
    tensors in subgraphs or Constant attributes are read into the model.
    """
    main = {t.name for t in model.graph.initializer}  # ONNX names are unique across nested graphs
    for tensor in all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL and not is_reference(tensor):
            path = str((folder / _fields(tensor)["location"]).resolve())
            _TRUSTED.add(path)
            _set_location(tensor, PREFIX + path)
            if tensor.name not in main:
                _read_in(tensor)


def share_unchanged(model: onnx.ModelProto, source: onnx.ModelProto, folder: Path) -> None:
    """Point references of ``model`` whose bytes equal ``source``'s tensor of the same name at that data.

    onnxruntime writes every large initializer of an optimized model again, changed or not; the
    unchanged ones (most of a big model's weights) are found by comparing bytes, and the files of
    ``folder`` that nothing references any more are deleted, so each derived model adds to the
    workspace only what it changed.
    """
    originals = {t.name: t for t in source.graph.initializer if is_reference(t)}
    for tensor in model.graph.initializer:
        original = originals.get(tensor.name)
        if (
            original is None
            or not is_reference(tensor)
            or (original.data_type, list(original.dims)) != (tensor.data_type, list(tensor.dims))
            or _source(original)[2] != _source(tensor)[2]
        ):
            continue
        if all(a == b for a, b in zip(_chunks(*_source(original)), _chunks(*_source(tensor)), strict=True)):
            path, offset, length = _source(original)
            _set_location(tensor, PREFIX + str(path), offset, length)
    used = {_source(t)[0] for t in referenced_tensors(model)}
    for file in folder.iterdir():
        if file.resolve() not in used:
            file.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


def tensor_like(array: np.ndarray, name: str, model: onnx.ModelProto) -> onnx.TensorProto:
    """An initializer for ``array``: a reference to a workspace file when ``model`` keeps its weights
    in external data (so a model derived from one over 2 GB stays small), else an ordinary tensor."""
    if array.nbytes < MIN_EXTERNAL_BYTES or not has_references(model):
        return onnx.numpy_helper.from_array(array, name)
    tensor = onnx.TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=array.shape)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    path = (new_folder() / "tensor.data").resolve()
    with _io.atomic_open(path, "wb") as out:
        out.write(np.ascontiguousarray(array).tobytes())  # type: ignore[arg-type]  # little-endian, as ONNX
    _TRUSTED.add(str(path))
    _set_location(tensor, PREFIX + str(path), 0, array.nbytes)
    return tensor


def to_array(tensor: onnx.TensorProto) -> np.ndarray:
    """The tensor's values; a read-only memory map for a reference."""
    if not is_reference(tensor):
        return onnx.numpy_helper.to_array(tensor)
    path, offset, length = _source(tensor)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    shape = tuple(int(d) for d in tensor.dims)
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != length:
        raise ModelError(f"initializer {tensor.name!r}: external data length {length} does not match its shape {shape}")
    if length == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def session_initializers(model: onnx.ModelProto) -> tuple[list[str], list[object]]:
    """Names and OrtValues for ``add_external_initializers``: every reference of the main graph."""
    main = [t for t in model.graph.initializer if is_reference(t)]
    everywhere = referenced_tensors(model)
    if len(everywhere) > len(main):
        names = {t.name for t in main}
        where = next((repr(t.name) for t in everywhere if t.name not in names), "a tensor")
        raise ModelError(
            f"{where} keeps its data in external data inside a subgraph or a Constant node; quantdebug can "
            "hand onnxruntime the external data of models over 2 GB only for graph initializers"
        )
    values = [ort.OrtValue.ortvalue_from_numpy(to_array(t)) for t in main]
    return [t.name for t in main], values


def fingerprint_tensor(tensor: onnx.TensorProto, h: Any) -> None:
    """Feed a reference's bytes to the hash ``h``: the same bytes as its ``raw_data`` once loaded."""
    for chunk in _chunks(*_source(tensor)):
        h.update(chunk)


def file_stamps(model: onnx.ModelProto) -> str:
    """Path, size and modification time of every file the references read (a cheap cache key)."""
    paths = sorted({_source(t)[0] for t in referenced_tensors(model)})
    stamps = []
    for path in paths:
        stat = path.stat()
        stamps.append(f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}")
    return "\n".join(stamps)


def _chunks(path: Path, offset: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        handle.seek(offset)
        left = length
        while left > 0:
            chunk = handle.read(min(_CHUNK, left))
            if not chunk:
                raise ModelError(f"external data file {str(path)!r} ended early (was it truncated?)")
            left -= len(chunk)
            yield chunk


# -- the workspace ---------------------------------------------------------------------------------------


@functools.cache
def _workspace() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="quantdebug-external-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def release(model: onnx.ModelProto, keep: onnx.ModelProto | Sequence[onnx.ModelProto]) -> None:
    """Delete the workspace folders that only ``model`` references (not ``keep``): a model dropped for good.

    Open sessions keep reading deleted files through their memory maps, as Linux keeps unlinked
    files that are mapped.
    """
    root = _workspace().resolve()
    kept_models = [keep] if isinstance(keep, onnx.ModelProto) else list(keep)
    kept = {_source(t)[0].parent for m in kept_models for t in referenced_tensors(m)}
    for folder in {_source(t)[0].parent for t in referenced_tensors(model)} - kept:
        if folder.parent == root:
            shutil.rmtree(folder, ignore_errors=True)


def new_folder() -> Path:
    """A fresh folder of this process's workspace (deleted at exit) for a model's external data."""
    return Path(tempfile.mkdtemp(dir=_workspace()))


def materialize(model: onnx.ModelProto, folder: Path, name: str, needed: set[str]) -> tuple[Path, list[str]]:
    """Write ``model`` to ``folder/name`` for onnxruntime's quantizer, which reads it with ONNX's loader.

    That loader refuses links, so the references in ``needed`` (weights the quantizer reads) are
    copied into ``<name>.data`` beside it; the other references become graph inputs of the same
    type and shape, which the quantizer passes through untouched without reading gigabytes it
    does not need. Returns the path and the names turned into inputs (see :func:`restore`).
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    hidden: list[str] = []
    keep: list[onnx.TensorProto] = []
    data_name = name + ".data"
    with _io.atomic_open(folder / data_name, "wb") as out:
        for tensor in copy.graph.initializer:
            if not is_reference(tensor):
                keep.append(tensor)
            elif tensor.name in needed:
                _append_data(out, tensor, data_name)  # type: ignore[arg-type]
                keep.append(tensor)
            else:
                hidden.append(tensor.name)
                copy.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
        out.truncate(out.tell())  # a file ending in a hole still has its full length
    kept = [onnx.TensorProto.FromString(t.SerializeToString()) for t in keep]
    del copy.graph.initializer[:]
    copy.graph.initializer.extend(kept)
    target = folder / name
    _io.write_bytes(target, copy.SerializeToString())
    return target, hidden


def write_placeholder_model(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` with every reference pointing at an empty placeholder file beside it.

    For sessions that get the weights with ``add_initializer``: onnxruntime checks that the
    file exists but reads nothing from it.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    placeholder = path.name + ".placeholder"
    _io.write_bytes(path.parent / placeholder, b"")
    for tensor in referenced_tensors(copy):
        _set_location(tensor, placeholder)
    _io.write_bytes(path, copy.SerializeToString())


def restore(model: onnx.ModelProto, original: onnx.ModelProto, hidden: list[str]) -> None:
    """Turn the graph inputs :func:`materialize` made back into the original references, in place."""
    references = {t.name: t for t in original.graph.initializer if t.name in set(hidden)}
    inputs = [i for i in model.graph.input if i.name not in references]
    present = {i.name for i in model.graph.input} & set(references)
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.graph.initializer.extend(references[n] for n in hidden if n in present)


# -- saving ----------------------------------------------------------------------------------------------


def too_large_for_proto(model: onnx.ModelProto, what: str, save: str) -> ModelTooLargeError:
    size = model.ByteSize() + referenced_bytes(model)
    return ModelTooLargeError(
        f"the {what} is {size / 2**30:.2f} GB with its weights, over protobuf's 2 GB limit for one ModelProto, so "
        f"it cannot be returned as an onnx.ModelProto; use {save}(path), which writes it with its weights in "
        "an external data file next to it"
    )


def as_proto(model: onnx.ModelProto, what: str, save: str) -> onnx.ModelProto:
    """A copy of ``model`` with every weight inside; ``ModelTooLargeError`` naming ``save`` when over 2 GB."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if not has_references(out):
        return out
    if out.ByteSize() + referenced_bytes(out) > PROTOBUF_LIMIT:
        raise too_large_for_proto(out, what, save)
    for tensor in referenced_tensors(out):  # a large float model whose quantized copy fits
        _read_in(tensor)
    return out


def _append_data(out: IO[bytes], tensor: onnx.TensorProto, data_name: str) -> None:
    """Copy a reference's bytes to the end of ``out`` and point it there (``data_name``, relative).

    Page-aligned, as onnx writes external data, so readers can map it; runs of zeros (padding,
    pruned weights) become holes of a sparse file: the caller truncates ``out`` to its position.
    """
    position = out.tell()
    pad = -position % 4096
    out.seek(pad, os.SEEK_CUR)
    for chunk in _chunks(*_source(tensor)):
        if np.frombuffer(chunk, np.uint8).any():
            out.write(chunk)
        else:
            out.seek(len(chunk), os.SEEK_CUR)
    _set_location(tensor, data_name, position + pad, _source(tensor)[2])


def write_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Save ``model`` to ``path`` atomically; references are copied to ``<name>.data`` next to it.

    A model without references is written as one file, exactly as before. With references, the
    model and its data are written to a temporary folder beside ``path`` and renamed into place,
    the data file first, so the model file at ``path`` is either the old one or the new one.
    Runs of zeros become holes of a sparse file where the file system supports them.
    """
    if not has_references(model):
        _io.write_bytes(path, model.SerializeToString())
        return
    data_name = Path(path).name + ".data"
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    with _io.atomic_model_with_data(path, data_name) as (model_file, out):
        for tensor in referenced_tensors(copy):
            _append_data(out, tensor, data_name)
        out.truncate(out.tell())  # a file ending in a hole still has its full length
        try:
            model_file.write(copy.SerializeToString())
        except ValueError as exc:  # protobuf refuses to serialize over 2 GB
            raise ModelTooLargeError(
                f"{str(path)!r}: even with its weights in external data the model is over protobuf's 2 GB limit"
            ) from exc
