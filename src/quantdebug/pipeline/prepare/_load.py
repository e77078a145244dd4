"""Read a model from a path, bytes or ModelProto, with clear errors for everything that is not a model.

Models are untrusted input. Nothing here executes code from the model; external-data files are
read only from inside the model's own folder (no ``..``, no absolute paths, no symlinks that
leave the folder); ops from domains onnxruntime does not know are refused by name before any
session is made. A model over protobuf's 2 GB limit is read only from a path with its weights in
external data, which then stay in their files (see ``quantdebug.support.external``); as bytes or a ``ModelProto``
it stops with ``ModelTooLargeError``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from quantdebug.errors import ModelError, ModelTooLargeError
from quantdebug.support import external

ModelSource = str | os.PathLike[str] | bytes | onnx.ModelProto

_DEFAULT_DOMAINS = ("", "ai.onnx")


def _gb(size: int) -> str:
    return f"{size / 2**30:.2f} GB"


def _too_large(what: str, size: int, how: str) -> ModelTooLargeError:
    return ModelTooLargeError(
        f"{what} is {_gb(size)}{how}, over protobuf's 2 GB limit for one ModelProto; a model this large can "
        "only be read with its weights in external data: save it with onnx.save(model, path, "
        "save_as_external_data=True) and pass that path"
    )


# -- external data -------------------------------------------------------------------------------------


def _external_fields(tensor: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Every tensor (initializers, also in subgraphs, and Constant attributes) that keeps its data outside."""
    return [
        t
        for t in external.all_tensors(model)
        if (external_data_helper.uses_external_data(t) or t.data_location == onnx.TensorProto.EXTERNAL)
        and not external.trusted(t)  # quantdebug's own references to weights it already checked
    ]


def _check_external_data(model: onnx.ModelProto, base: Path | None, given: str) -> int:
    """Refuse external-data locations that escape the model's folder; return the bytes they add.

    Refused: absolute paths, ``..`` that leaves the folder, symlinks (of the file or of a folder on
    the way) that resolve outside it, NUL bytes, missing files and offsets/lengths past the file.
    """
    tensors = _external_tensors(model)
    if tensors and base is None:
        first = tensors[0]
        location = _external_fields(first).get("location", "")
        raise ModelError(
            f"initializer {first.name!r} stores its data in an external file {location!r}, but the model was "
            f"given as {given}, so there is no folder to read it from; pass the model's path instead"
        )
    if base is None:
        return 0
    root = base.resolve()
    total = 0
    for tensor in tensors:
        fields = _external_fields(tensor)
        location = fields.get("location", "")
        where = f"initializer {tensor.name!r}"
        if not location:
            raise ModelError(f"{where} is marked as external data but names no file (empty 'location')")
        if "\x00" in location:
            raise ModelError(f"{where} names its external data file with a NUL byte ({location!r}); refusing it")
        try:
            target = (base / location).resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, names the OS refuses
            raise ModelError(f"{where}: external data path {location!r} cannot be resolved ({exc})") from exc
        if os.path.isabs(location) or Path(location).is_absolute() or not target.is_relative_to(root):
            raise ModelError(
                f"{where} points its external data outside the model's folder ({location!r}); refusing to read "
                "it (path traversal: external data must be a relative path inside the model's folder, "
                "and symlinks must not lead out of it)"
            )
        if not target.is_file():
            raise ModelError(f"{where} needs external data file {location!r}, which is missing")
        if (base / location).is_symlink():
            raise ModelError(
                f"{where} reads its external data through a symbolic link ({location!r}); refusing it "
                "(the ONNX loader reads only regular files: copy the data file into the model's folder)"
            )
        try:
            offset = int(fields.get("offset", "0") or 0)
            length = int(fields["length"]) if fields.get("length") else None
        except ValueError as exc:
            raise ModelError(f"{where}: external data offset/length are not integers ({fields})") from exc
        size = target.stat().st_size
        if offset < 0 or (length is not None and length < 0):
            raise ModelError(f"{where}: negative external data offset or length ({fields})")
        if offset > size or (length is not None and offset + length > size):
            raise ModelError(
                f"{where} reads bytes {offset}..{offset + (length or 0)} of external data file {location!r}, "
                f"which has only {size} bytes (truncated file?)"
            )
        total += length if length is not None else size - offset
    return total


# -- ops onnxruntime can run -------------------------------------------------------------------------


@functools.cache
def _runtime_ops() -> frozenset[tuple[str, str]] | None:
    """(domain, op_type) of every op schema onnxruntime registers; None when it cannot be asked."""
    try:
        from onnxruntime.capi import _pybind_state  # private to onnxruntime: asked once, guarded

        return frozenset((s.domain or "", s.name) for s in _pybind_state.get_all_operator_schema())
    except Exception:  # pragma: no cover - an onnxruntime without this private helper
        return None


def _all_nodes(graph: onnx.GraphProto, path: str = "") -> Iterator[tuple[onnx.NodeProto, str]]:
    """Every node, subgraph bodies included, with where it sits (``If 'branch' / then_branch``)."""
    for node in graph.node:
        yield node, path
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                yield from _all_nodes(sub, f"{path}{node.op_type} {node.name!r} / {attr.name}: ")


def _domain(domain: str) -> str:
    return "" if domain in _DEFAULT_DOMAINS else domain


def check_runtime_ops(model: onnx.ModelProto, what: str = "model") -> None:
    """Refuse, by node, op and domain, every op onnxruntime has no schema for (custom ops)."""
    known = _runtime_ops()
    if known is None:
        return
    local = {(_domain(f.domain), f.name) for f in model.functions}
    known_domains = {d for d, _ in known}
    for node, path in _all_nodes(model.graph):
        key = (_domain(node.domain), node.op_type)
        if key in known or key in local:
            continue
        label = f"node {node.name!r}" if node.name else "an unnamed node"
        if key[0] not in known_domains:
            raise ModelError(
                f"{what}: {path}{label} runs op {node.op_type!r} from domain {node.domain!r}, a custom domain "
                "onnxruntime does not know; quantdebug runs models in onnxruntime without custom-op libraries, "
                "so re-export the model with standard ONNX ops"
            )
        domain = f"domain {node.domain!r}" if key[0] else "the default ONNX domain"
        raise ModelError(
            f"{what}: {path}{label} runs op {node.op_type!r}, which onnxruntime does not have in {domain}; "
            "check the op's spelling or re-export the model with ops onnxruntime supports"
        )


# -- structure and the checker ------------------------------------------------------------------------


def _check_io(model: onnx.ModelProto, what: str) -> None:
    """Graph inputs and outputs: named, typed, not repeated (the checker's messages do not say which)."""
    seen: set[str] = set()
    for kind, infos in (("input", model.graph.input), ("output", model.graph.output)):
        for index, info in enumerate(infos):
            label = f"graph {kind} {index} ({info.name!r})"
            if not info.name:
                raise ModelError(f"{what}: graph {kind} {index} has an empty name")
            if kind == "input" and info.name in seen:
                raise ModelError(f"{what}: {label} repeats the name of another graph input")
            seen.add(info.name)
            if not info.HasField("type") or info.type.WhichOneof("value") is None:
                raise ModelError(f"{what}: {label} has no type")
            if info.type.HasField("tensor_type") and not info.type.tensor_type.elem_type:
                raise ModelError(f"{what}: {label} has no element type")


_CONTEXT = re.compile(r"==> Context:\s*(.*)", re.S)
_NODE_CONTEXT = re.compile(r"Name:\s*(\S*)\s*OpType:\s*(\S+)")


def checker_message(exc: Exception) -> str:
    """The checker's error as one line that names the node at fault when the checker says which."""
    text = str(exc).strip()
    context = _CONTEXT.search(text)
    head = " ".join(_CONTEXT.sub("", text).split()) or type(exc).__name__
    if context:
        node = _NODE_CONTEXT.search(context.group(1))
        if node:
            head += f" (node {node.group(1)!r}, op {node.group(2)})"
        else:
            head += f" ({' '.join(context.group(1).split())})"
    return head if len(head) <= 400 else head[:397] + "..."


def _checkable(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model as the checker should see it.

    onnxruntime runs graph inputs and outputs of unknown rank (no ``shape`` field), but the
    checker requires the field; a copy gets an empty one for checking only (the checker does not
    infer shapes, so the rank it implies is never compared with anything).
    """
    missing = [
        info
        for info in (*model.graph.input, *model.graph.output)
        if info.type.HasField("tensor_type") and not info.type.tensor_type.HasField("shape")
    ]
    referenced = external.has_references(model)
    if not missing and not referenced:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor in external.referenced_tensors(copy):
        # weights left in their files (models over 2 GB) were checked by _check_external_data; the
        # checker would look for them relative to the working folder, so it sees empty stand-ins
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.dims[:]
        tensor.dims.append(0)
    for info in (*copy.graph.input, *copy.graph.output):
        if info.type.HasField("tensor_type") and not info.type.tensor_type.HasField("shape"):
            info.type.tensor_type.shape.SetInParent()
    return copy


# -- loading -------------------------------------------------------------------------------------------


def load_model(source: ModelSource, *, what: str = "model") -> onnx.ModelProto:
    """Return a checked copy of the model; never modifies the caller's object."""
    base: Path | None = None
    if isinstance(source, onnx.ModelProto):
        size = source.ByteSize()
        if size > external.PROTOBUF_LIMIT:
            raise _too_large(what, size, "")
        model = onnx.ModelProto()
        model.CopyFrom(source)
        given = "an onnx.ModelProto whose external data is not loaded"
    elif isinstance(source, bytes | bytearray):
        if len(source) > external.PROTOBUF_LIMIT:
            raise _too_large(what, len(source), "")
        model = _parse(bytes(source), what, "the given bytes")
        given = "bytes"
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        if "\x00" in str(path):
            raise ModelError(f"{what} path {str(path)!r} contains a NUL byte")
        if not path.exists():
            raise ModelError(f"{what} file {str(path)!r} does not exist")
        if path.is_dir():
            raise ModelError(f"{what} path {str(path)!r} is a folder; give the .onnx file")
        if not path.is_file():
            raise ModelError(f"{what} path {str(path)!r} is not a regular file")
        size = path.stat().st_size
        if size > external.PROTOBUF_LIMIT:
            raise _too_large(what, size, f" in one file ({str(path)!r})")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{what} file {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
        model = _parse(data, what, repr(str(path)))
        base = path.parent
        given = "a path"
    else:
        raise ModelError(
            f"{what} must be a path, bytes or onnx.ModelProto; got {type(source).__name__} "
            "(PyTorch and Keras models go through qd.from_torch / qd.from_keras)"
        )
    external_bytes = _check_external_data(model, base, given)
    if external_bytes and model.ByteSize() + external_bytes > external.PROTOBUF_LIMIT:
        # over protobuf's limit with its weights: they stay in their files (see quantdebug.support.external)
        assert base is not None
        external.reference_data(model, base)
        if model.ByteSize() > external.PROTOBUF_LIMIT:
            raise _too_large(what, model.ByteSize(), " without its external data")
    elif external_bytes:
        try:
            external_data_helper.load_external_data_for_model(model, str(base))
        except Exception as exc:  # onnx raises ValidationError, OSError or ValueError here
            raise ModelError(f"{what}: reading its external data failed: {' '.join(str(exc).split())}") from exc
    if not model.graph.node:
        raise ModelError(f"{what} has no nodes: it is not a usable ONNX model")
    if not model.graph.output:
        raise ModelError(f"{what} has no graph outputs")
    _check_io(model, what)
    check_runtime_ops(model, what)
    try:
        onnx.checker.check_model(_checkable(model))
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"{what} is not a valid ONNX model: {checker_message(exc)}") from exc
    except ValueError as exc:  # over 2 GB after all: the checker cannot take it in memory
        raise ModelTooLargeError(f"{what} cannot be checked in memory: {exc}") from exc
    return model


def _parse(data: bytes, what: str, where: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelError(f"{what} in {where} is not an ONNX model (protobuf could not parse it: {exc})") from exc
    if not model.HasField("graph"):
        raise ModelError(
            f"{what} in {where} is not an ONNX model (no graph; is the file truncated or of another format?)"
        )
    return model
