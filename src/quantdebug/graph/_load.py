"""Read a model from a path, bytes or ModelProto, with clear errors for everything that is not a model."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from ..errors import ModelError

ModelSource = str | os.PathLike[str] | bytes | onnx.ModelProto


def _check_external_data(model: onnx.ModelProto, base: Path | None) -> None:
    """Refuse external-data locations that escape the model's folder (path traversal)."""
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if not onnx.external_data_helper.uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if base is None:
            raise ModelError(
                f"initializer {tensor.name!r} stores its data in an external file {location!r}, "
                "but the model was given as bytes; pass the model's path instead"
            )
        target = (base / location).resolve()
        if os.path.isabs(location) or not target.is_relative_to(base.resolve()):
            raise ModelError(
                f"initializer {tensor.name!r} points its external data outside the model's folder "
                f"({location!r}); refusing to read it"
            )
        if not target.is_file():
            raise ModelError(f"initializer {tensor.name!r} needs external data file {location!r}, which is missing")


def load_model(source: ModelSource, *, what: str = "model") -> onnx.ModelProto:
    """Return a checked copy of the model; never modifies the caller's object."""
    base: Path | None = None
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
    elif isinstance(source, bytes | bytearray):
        model = _parse(bytes(source), what, "the given bytes")
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            raise ModelError(f"{what} file {str(path)!r} does not exist")
        if path.is_dir():
            raise ModelError(f"{what} path {str(path)!r} is a folder; give the .onnx file")
        model = _parse(path.read_bytes(), what, repr(str(path)))
        base = path.parent
    else:
        raise ModelError(
            f"{what} must be a path, bytes or onnx.ModelProto; got {type(source).__name__} "
            "(PyTorch and Keras models go through qd.from_torch / qd.from_keras)"
        )
    _check_external_data(model, base)
    if base is not None and any(
        onnx.external_data_helper.uses_external_data(t) for t in onnx.external_data_helper._get_all_tensors(model)
    ):
        onnx.external_data_helper.load_external_data_for_model(model, str(base))
    if not model.graph.node:
        raise ModelError(f"{what} has no nodes: it is not a usable ONNX model")
    if not model.graph.output:
        raise ModelError(f"{what} has no graph outputs")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"{what} is not a valid ONNX model: {first}") from exc
    except ValueError as exc:  # over 2 GB: the checker cannot take it in memory
        raise ModelError(f"{what} cannot be checked in memory: {exc}") from exc
    return model


def _parse(data: bytes, what: str, where: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError) as exc:
        raise ModelError(f"{what} in {where} is not an ONNX model (protobuf could not parse it: {exc})") from exc
    if not model.HasField("graph"):
        raise ModelError(
            f"{what} in {where} is not an ONNX model (no graph; is the file truncated or of another format?)"
        )
    return model
