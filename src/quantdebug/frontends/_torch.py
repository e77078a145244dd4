"""PyTorch frontend: export an nn.Module with torch.onnx, with a dynamic batch where the module allows it."""

from __future__ import annotations

import inspect
import io
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from quantdebug.errors import ConfigError
from quantdebug.frontends import _verify
from quantdebug.frontends._batch import batch_problem
from quantdebug.frontends._common import missing_extra, rename_values, set_metadata
from quantdebug.frontends._verify import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    ConversionError,
    normalize_sample,
    to_numpy,
    verify_conversion,
)

DEFAULT_OPSET = 17


def _torch() -> Any:
    try:
        import torch  # optional dependency
    except ImportError as exc:
        raise missing_extra("qd.from_torch", "PyTorch", "torch", exc) from exc
    return torch


def is_torch_module(obj: object) -> bool:
    """True for a torch.nn.Module, decided without importing torch for anything else."""
    if not any(c.__module__.split(".")[0] == "torch" for c in type(obj).__mro__):
        return False
    import torch  # optional dependency

    return isinstance(obj, torch.nn.Module)


def _float_dtype(module: Any, torch: Any) -> Any:
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _tensor(value: object, float_dtype: Any, torch: Any) -> Any:
    """A torch tensor; numpy float64 arrays become the module's float dtype (usually float32)."""
    if isinstance(value, torch.Tensor):
        return value
    array = to_numpy(value)
    if array.dtype == object:
        raise ConfigError(f"example input of dtype object cannot become a tensor: {type(value).__name__}")
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if array.dtype == np.float64:
        tensor = tensor.to(float_dtype)
    return tensor


def _positional_names(module: Any, count: int) -> list[str]:
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    names: list[str] = []
    for p in params:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and len(names) < count:
            names.append(p.name)
    if len(names) < count:
        names = [f"input_{i}" for i in range(count)] if count > 1 else ["input"]
    return names


def _flatten(obj: object, prefix: str, torch: Any) -> list[tuple[str, Any]]:
    """(name, tensor) leaves of a module's output, in the order torch.onnx flattens them."""
    if isinstance(obj, torch.Tensor):
        return [(prefix, obj)]
    if obj is None:
        return []
    if isinstance(obj, Mapping):  # a dict, or a Hugging Face ModelOutput (whose None fields are left out)
        out: list[tuple[str, Any]] = []
        for key, value in obj.items():
            out += _flatten(value, f"{prefix}.{key}" if prefix != "output" else str(key), torch)
        return out
    fields = getattr(type(obj), "_fields", None)
    if isinstance(obj, tuple) and isinstance(fields, tuple):  # a namedtuple: its field names
        out = []
        for field, value in zip(fields, obj):
            out += _flatten(value, f"{prefix}.{field}" if prefix != "output" else str(field), torch)
        return out
    if isinstance(obj, list | tuple):
        out = []
        for i, value in enumerate(obj):
            out += _flatten(value, f"{prefix}_{i}", torch)
        return out
    if isinstance(obj, int | float | bool):
        return [(prefix, torch.tensor(obj))]
    raise ConversionError(
        f"the module returned a {type(obj).__name__}; only tensors (in tuples, lists or dicts) export"
    )


def torch_reference(module: Any, names: list[str], as_kwargs: bool, onnx_names: list[str], fill: list[Any]) -> Any:
    """A callable (arrays in ``onnx_names`` order) -> output arrays that runs ``module`` in eval mode.

    ``names`` are the module's inputs; one the exporter dropped (unused) takes its value from ``fill``.
    """
    torch = _torch()
    float_dtype = _float_dtype(module, torch)

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        given = dict(zip(onnx_names, arrays))
        tensors = [_tensor(given[n], float_dtype, torch) if n in given else f for n, f in zip(names, fill)]
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                out = module(**dict(zip(names, tensors))) if as_kwargs else module(*tensors)
        finally:
            module.train(was_training)
        return [t.detach().cpu().numpy() for _, t in _flatten(out, "output", torch)]

    return run


def _export(
    module: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    names: list[str],
    out_names: list[str] | None,
    dynamic_axes: dict[str, dict[int, str]] | None,
    options: dict[str, Any],
    torch: Any,
) -> onnx.ModelProto:
    opts = dict(options)
    dynamo = bool(opts.pop("dynamo", False))
    if dynamo:
        opts.setdefault("verbose", False)  # the dynamo exporter's progress lines
    else:
        opts.setdefault("opset_version", DEFAULT_OPSET)  # the dynamo exporter's own default (18+) suits it better
    common: dict[str, Any] = dict(input_names=names, output_names=out_names, dynamic_axes=dynamic_axes, **opts)
    if kwargs:
        common["kwargs"] = kwargs
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporters' deprecation and tracer warnings
            if dynamo:
                program = torch.onnx.export(module, args, dynamo=True, **common)
                return program.model_proto  # type: ignore[no-any-return]
            buffer = io.BytesIO()
            torch.onnx.export(module, args, buffer, dynamo=False, **common)
    except ConversionError:
        raise
    except Exception as exc:
        hint = " (the dynamo exporter needs: pip install onnxscript)" if "onnxscript" in str(exc) else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"torch.onnx.export failed on {type(module).__name__}: {first}{hint}") from exc
    return onnx.load_from_string(buffer.getvalue())


def from_torch(
    module: Any,
    example_inputs: object,
    *,
    samples: Iterable[object] | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
    verify: bool = True,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    **export_options: Any,
) -> onnx.ModelProto:
    """Export ``module`` to ONNX with ``torch.onnx.export`` and check the export against the module.

    ``example_inputs`` is one tensor or array, a tuple of them (positional arguments of ``forward``),
    or a dict of keyword arguments; numpy float64 arrays are cast to the module's float dtype.

    Names: ``input_names`` default to the dict's keys, else ``forward``'s parameter names (else
    ``input`` / ``input_<i>``). ``output_names`` default to what the module's outputs say about
    themselves: the keys of a returned dict or Hugging Face ``ModelOutput`` (its ``None`` fields are
    not outputs), the fields of a namedtuple, nested as ``outer.inner``; else ``output`` for a single
    tensor and ``output_<i>`` for the items of a tuple or list. Give either list to choose the names
    an ``eval_fn`` will look up (one name per input / per output tensor, in order).

    With ``dynamic_batch`` the batch axis (axis 0 of every input) is exported
    as dynamic, then kept only if a batch of 2 matches two batch-1 runs; otherwise the model is
    re-exported with the example's fixed batch size (a warning says why). The ONNX model is then run
    beside the module on ``samples`` (default: the example inputs) and must agree within
    ``max|onnx - torch| <= atol + rtol * max|torch|``, else :class:`ConversionError`. Extra keyword
    arguments go to ``torch.onnx.export`` (``opset_version`` defaults to 17; ``dynamo=True`` selects
    the torch.export-based exporter, which needs ``onnxscript``; the default is the TorchScript one).
    """
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"qd.from_torch needs a torch.nn.Module; got {type(module).__name__}")
    float_dtype = _float_dtype(module, torch)
    if isinstance(example_inputs, Mapping):
        kwargs = {str(k): _tensor(v, float_dtype, torch) for k, v in example_inputs.items()}
        args: tuple[Any, ...] = ()
    else:
        values = list(example_inputs) if isinstance(example_inputs, list | tuple) else [example_inputs]
        args = tuple(_tensor(v, float_dtype, torch) for v in values)
        kwargs = {}
    tensors = list(kwargs.values()) if kwargs else list(args)
    if not tensors:
        raise ConfigError("qd.from_torch needs at least one example input")
    given_inputs = input_names if input_names is not None else export_options.pop("input_names", None)
    names = _check_names("input_names", given_inputs, len(tensors))
    if names is None:
        names = list(kwargs) if kwargs else _positional_names(module, len(args))
    given_outputs = output_names if output_names is not None else export_options.pop("output_names", None)
    example_arrays = [t.detach().cpu().numpy() for t in tensors]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(**kwargs) if kwargs else module(*args)
        leaves = _flatten(out, "output", torch)
        out_names = _check_names("output_names", given_outputs, len(leaves)) or [n for n, _ in leaves]
        batch = int(tensors[0].shape[0]) if tensors[0].dim() > 0 else 0
        user_axes = "dynamic_axes" in export_options or "dynamic_shapes" in export_options
        note = "static (dynamic_batch=False)"
        model: onnx.ModelProto | None = None
        if dynamic_batch and not user_axes and batch > 0:
            axes = {n: {0: "batch"} for n, t in zip(names, tensors) if t.dim() > 0}
            axes.update(
                {n: {0: "batch"} for n, (_, t) in zip(out_names, leaves) if t.dim() > 0 and t.shape[0] == batch}
            )
            try:
                dynamic = _export(module, args, kwargs, names, out_names, axes, export_options, torch)
                problem = batch_problem(dynamic, dict(zip(names, example_arrays)), rtol, atol)
            except ConversionError as exc:  # the exporter itself refused the dynamic axis
                problem = f"the export with a dynamic batch failed: {str(exc)[:200]}"
            if problem is None:
                model, note = dynamic, "dynamic"
            else:
                warnings.warn(
                    f"{type(module).__name__} does not export with a dynamic batch ({problem}); "
                    f"exported with the example's fixed batch size {batch}",
                    stacklevel=2,
                )
                note = f"static: {problem}"
        elif user_axes:
            note = "as given in the export options"
        if model is None:
            model = _export(module, args, kwargs, names, out_names, None, export_options, torch)
    finally:
        module.train(was_training)
    _name_inputs(model, names)
    summary = "not verified"
    if verify:
        onnx_names = _verify.input_names(model)
        reference = torch_reference(module, names, bool(kwargs), onnx_names, tensors)
        checks = samples if samples is not None else [example_arrays]
        feeds = (dict(zip(names, normalize_sample(s, names, i))) for i, s in enumerate(checks))
        report = verify_conversion(reference, model, feeds, rtol=rtol, atol=atol, reference="torch module")
        summary = f"max abs diff {report.max_abs_diff:.3g} on {report.samples} sample(s), {report.rule()}"
    set_metadata(
        model,
        {
            "source": f"torch {torch.__version__}: {type(module).__module__}.{type(module).__qualname__}",
            "batch": note,
            "verification": summary,
        },
    )
    return model


def _check_names(what: str, names: Sequence[str] | None, count: int) -> list[str] | None:
    """``names`` as a list, checked: one distinct, non-empty string per tensor."""
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    got = [str(n) for n in names]
    if len(got) != count:
        raise ConfigError(f"qd.from_torch: {what} has {len(got)} names for {count} tensors; give one per tensor")
    if any(not n for n in got) or len(set(got)) != len(got):
        raise ConfigError(f"qd.from_torch: {what} must be distinct, non-empty names; got {got}")
    return got


def _name_inputs(model: onnx.ModelProto, names: list[str]) -> None:
    """The exporter drops unused inputs and may rename; make the graph inputs carry the intended names."""
    current = _verify.input_names(model)
    if len(current) == len(names) and set(current) != set(names):
        rename_values(model, dict(zip(current, names)))
