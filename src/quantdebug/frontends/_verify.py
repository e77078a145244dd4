"""Check that a converted ONNX model computes what the framework model computes, output by output.

The tolerance, per output and per sample: ``max|onnx - reference| <= atol + rtol * max|reference|``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from quantdebug.data import input_specs
from quantdebug.errors import ModelError
from quantdebug.runtime import make_session

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-4

Reference = Callable[[list[np.ndarray]], Sequence[Any]]


class ConversionError(ModelError):
    """A framework model could not be converted to ONNX, or the ONNX model disagrees with it."""


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """The worst agreement of one output over all the samples checked."""

    name: str
    max_abs_diff: float
    max_abs_ref: float
    tolerance: float
    sample: int  # index of the sample where the ratio diff / tolerance was worst

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def describe(self) -> str:
        verdict = "ok" if self.ok else "DISAGREES"
        return (
            f"output {self.name!r}: max abs diff {self.max_abs_diff:.3g} "
            f"{'<=' if self.ok else '>'} tolerance {self.tolerance:.3g} (max|ref| {self.max_abs_ref:.3g}, "
            f"sample {self.sample}) {verdict}"
        )


@dataclasses.dataclass(frozen=True)
class VerificationReport:
    """How the converted model agreed with the original, output by output."""

    outputs: tuple[OutputCheck, ...]
    samples: int
    rtol: float
    atol: float
    reference: str = "original model"

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    @property
    def failed(self) -> tuple[OutputCheck, ...]:
        return tuple(o for o in self.outputs if not o.ok)

    @property
    def max_abs_diff(self) -> float:
        return max((o.max_abs_diff for o in self.outputs), default=0.0)

    def rule(self) -> str:
        return f"max|onnx - {self.reference}| <= {self.atol:g} + {self.rtol:g} * max|{self.reference}|"

    def __str__(self) -> str:
        head = f"ONNX vs {self.reference} on {self.samples} sample(s), tolerance {self.rule()}:"
        return "\n".join([head, *("  " + o.describe() for o in self.outputs)])

    def raise_if_failed(self) -> None:
        if self.ok:
            return
        bad = self.failed
        raise ConversionError(
            f"the converted ONNX model disagrees with the {self.reference} on {len(bad)} of {len(self.outputs)} "
            f"output(s) (tolerance {self.rule()}, checked on {self.samples} sample(s)): "
            + "; ".join(o.describe() for o in bad)
            + ". The conversion is not faithful: check the exporter's warnings, the opset, and ops that behave "
            "differently in training mode (dropout, batch norm), or loosen rtol/atol if the difference is expected"
        )


def input_names(model: onnx.ModelProto) -> list[str]:
    init = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in init]


def normalize_sample(sample: object, names: Sequence[str], index: int = 0) -> list[np.ndarray]:
    """A sample (one array, a list of arrays, or a dict by input name) as arrays in ``names`` order."""
    if isinstance(sample, Mapping):
        missing = [n for n in names if n not in sample]
        if missing:
            raise ConversionError(
                f"sample {index} lacks the model inputs {missing}; the model's inputs are {list(names)}"
            )
        values = [sample[n] for n in names]
    elif isinstance(sample, list | tuple):
        values = list(sample)
    else:
        values = [sample]
    if len(values) != len(names):
        raise ConversionError(
            f"sample {index} has {len(values)} array(s) but the converted model has {len(names)} input(s) {list(names)}"
        )
    return [to_numpy(v) for v in values]


def to_numpy(value: object) -> np.ndarray:
    """A numpy array from a numpy array, a torch tensor, a TensorFlow tensor or a Python number."""
    if hasattr(value, "detach"):  # torch
        return np.asarray(value.detach().cpu().numpy())  # type: ignore[attr-defined]
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # tensorflow eager tensors
        return np.asarray(value.numpy())  # type: ignore[attr-defined]
    return np.asarray(value)


def cast_like(arrays: list[np.ndarray], model: onnx.ModelProto) -> list[np.ndarray]:
    """Cast each array to its model input's dtype when both are of one kind (float64 data for a float32 input)."""

    out = []
    for array, spec in zip(arrays, input_specs(model)):
        kinds = {array.dtype.kind, spec.dtype.kind}
        if array.dtype != spec.dtype and (len(kinds) == 1 or kinds <= {"i", "u"}):
            array = array.astype(spec.dtype)
        out.append(array)
    return out


def _compare(ref: np.ndarray, got: np.ndarray, name: str, rtol: float, atol: float) -> tuple[float, float, float]:
    """(max abs diff, max |ref|, tolerance) for one output of one sample; shape mismatch is infinite."""
    if ref.size != got.size:
        raise ConversionError(
            f"output {name!r} has shape {list(got.shape)} in the converted model but {list(ref.shape)} in the "
            "original model"
        )
    r = ref.reshape(-1)
    g = got.reshape(-1)
    if r.dtype == bool or g.dtype == bool:
        r, g = r.astype(np.int8), g.astype(np.int8)
    r64 = r.astype(np.float64)
    g64 = g.astype(np.float64)
    both_nan = np.isnan(r64) & np.isnan(g64)
    diff = np.abs(r64 - g64)
    diff[both_nan] = 0.0
    diff[np.isnan(diff)] = np.inf  # NaN on one side only
    same_inf = np.isinf(r64) & (r64 == g64)
    diff[same_inf] = 0.0
    finite_ref = np.abs(r64[np.isfinite(r64)])
    max_ref = float(finite_ref.max()) if finite_ref.size else 0.0
    exact = ref.dtype.kind not in "fc" and got.dtype.kind not in "fc"
    tol = 0.0 if exact else atol + rtol * max_ref
    return (float(diff.max()) if diff.size else 0.0), max_ref, tol


def verify_conversion(
    original: Reference,
    onnx_model: onnx.ModelProto,
    samples: Iterable[object],
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    raise_on_mismatch: bool = True,
    reference: str = "original model",
    max_samples: int | None = None,
) -> VerificationReport:
    """Run ``original`` and ``onnx_model`` on each sample and compare every output.

    ``original`` takes the input arrays (in the ONNX model's input order) and returns the outputs
    in the ONNX model's output order. Float outputs agree when, per sample,
    ``max|onnx - ref| <= atol + rtol * max|ref|`` (defaults 1e-4 and 1e-4, so ``1e-4 * (1 + max|ref|)``);
    integer and boolean outputs must be equal. A disagreement raises :class:`ConversionError` naming
    the output, its max abs diff and the tolerance, unless ``raise_on_mismatch`` is False.
    """

    if rtol < 0 or atol < 0:
        raise ValueError(f"rtol and atol must be >= 0; got rtol={rtol}, atol={atol}")
    names = input_names(onnx_model)
    out_names = [o.name for o in onnx_model.graph.output]
    session = make_session(onnx_model, level="all", what="converted model")
    worst: dict[str, tuple[float, OutputCheck]] = {}
    count = 0
    for index, sample in enumerate(samples):
        if max_samples is not None and index >= max_samples:
            break
        arrays = cast_like(normalize_sample(sample, names, index), onnx_model)
        try:
            got = session.run(None, dict(zip(names, arrays)))
        except Exception as exc:
            raise ConversionError(f"onnxruntime cannot run the converted model on sample {index}: {exc}") from exc
        try:
            ref_raw = list(original(arrays))
        except Exception as exc:
            raise ConversionError(f"the {reference} failed on sample {index}: {exc!r}") from exc
        if len(ref_raw) != len(got):
            raise ConversionError(
                f"the converted model has {len(got)} output(s) {out_names} but the {reference} returned "
                f"{len(ref_raw)} on sample {index}"
            )
        for name, r, g in zip(out_names, ref_raw, got):
            diff, max_ref, tol = _compare(to_numpy(r), np.asarray(g), name, rtol, atol)
            ratio = diff / tol if tol > 0 else (np.inf if diff > 0 else 0.0)
            if name not in worst or ratio > worst[name][0]:
                worst[name] = (ratio, OutputCheck(name, diff, max_ref, tol, index))
        count += 1
    if count == 0:
        raise ConversionError("verify_conversion got no samples to check the conversion on")
    report = VerificationReport(
        tuple(worst[n][1] for n in out_names), count, float(rtol), float(atol), reference=reference
    )
    if raise_on_mismatch:
        report.raise_if_failed()
    return report
