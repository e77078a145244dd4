"""One streaming pass over the representative dataset: per-tensor min/max and a fixed-bin histogram.

Every range method (MinMax, percentile, entropy) is derived later from the same state, and two
calibrations of two halves of a dataset merge into the calibration of the whole.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
from onnx import TensorProto, helper

from quantdebug.config import QuantConfig
from quantdebug.data import Dataset, batches
from quantdebug.errors import CalibrationError
from quantdebug.pipeline.calibrate._ranges import entropy_range, minmax_range, percentile_range
from quantdebug.pipeline.calibrate._stats import TensorStats
from quantdebug.runtime import make_session
from quantdebug.support import external, read_json_object, write_text

FORMAT = "quantdebug.pipeline.calibrate"
FORMAT_VERSION = 2  # 2: the model fingerprint covers node attributes, domains and opsets
FINGERPRINT_VERSION = 2
ZERO_WIDTH = 1e-6
_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}


def model_fingerprint(model: onnx.ModelProto, version: int = FINGERPRINT_VERSION) -> str:
    """A digest of the graph's structure and weights: what a calibration must belong to.

    Version 2 (the default) also hashes each node's domain and attributes (a Conv's strides, a
    LeakyRelu's alpha, an If's branches) and the opsets; version 1, which calibrations saved by
    earlier releases carry, hashed only op types, names, inputs, outputs and initializers.
    """
    if version not in (1, 2):
        raise CalibrationError(f"unknown model fingerprint version {version}")
    h = hashlib.sha256()
    if version >= 2:
        for opset in sorted((o.domain, o.version) for o in model.opset_import):
            h.update(f"opset|{opset[0]}|{opset[1]}\n".encode())
    for node in model.graph.node:
        h.update(f"{node.op_type}|{node.name}|{','.join(node.input)}|{','.join(node.output)}\n".encode())
        if version >= 2:
            h.update(f"domain|{node.domain}\n".encode())
            for attr in sorted(node.attribute, key=lambda a: a.name):
                h.update(attr.SerializeToString(deterministic=True))
    for init in sorted(model.graph.initializer, key=lambda t: t.name):
        h.update(init.name.encode())
        if external.is_reference(init):  # weights of a model over 2 GB, still in their file
            external.fingerprint_tensor(init, h)
        else:
            h.update(init.raw_data if init.HasField("raw_data") else init.SerializeToString())
    return h.hexdigest()[:32]


def float_tensors(model: onnx.ModelProto) -> list[str]:
    """Graph inputs and node outputs that hold floating-point values, in topological order."""
    types: dict[str, int] = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    init = {i.name for i in model.graph.initializer}
    names = [vi.name for vi in model.graph.input if vi.name not in init]
    for node in model.graph.node:
        names.extend(o for o in node.output if o)
    # unknown types are kept and filtered by the dtype of what onnxruntime returns
    return [n for n in dict.fromkeys(names) if types.get(n, TensorProto.FLOAT) in _FLOAT_TYPES or types.get(n) == 0]


def augmented(model: onnx.ModelProto, tensors: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``tensors``."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    present = {o.name for o in work.graph.output}
    inputs = {i.name for i in work.graph.input}
    for name in tensors:
        if name not in present and name not in inputs:
            work.graph.output.append(helper.make_empty_tensor_value_info(name))
            present.add(name)
    return work


class Calibration:
    """Per-tensor statistics of a float model on a representative dataset (serializable, mergeable)."""

    def __init__(
        self,
        fingerprint: str,
        stats: Mapping[str, TensorStats],
        num_samples: int,
        *,
        fingerprint_version: int = FINGERPRINT_VERSION,
    ) -> None:
        self.fingerprint = fingerprint
        self.fingerprint_version = fingerprint_version  # 1: loaded from a file an earlier release saved
        self._accepted: set[str] = set()  # current fingerprints already checked against a version 1 one
        self.stats = dict(stats)
        self.num_samples = num_samples
        # the samples it was made from, kept in memory (never saved) for the weight levers
        self.dataset: Iterable[Mapping[str, np.ndarray]] | None = None

    def __repr__(self) -> str:
        return f"Calibration({len(self.stats)} tensors, {self.num_samples} samples, model {self.fingerprint[:8]})"

    def merge(self, other: Calibration) -> Calibration:
        if (other.fingerprint, other.fingerprint_version) != (self.fingerprint, self.fingerprint_version):
            raise CalibrationError("cannot merge calibrations of two different models")
        names = list(dict.fromkeys([*self.stats, *other.stats]))
        merged = {}
        for name in names:
            a, b = self.stats.get(name), other.stats.get(name)
            merged[name] = a.merge(b) if a is not None and b is not None else (a or b)
        return Calibration(
            self.fingerprint,
            merged,  # type: ignore[arg-type]
            self.num_samples + other.num_samples,
            fingerprint_version=self.fingerprint_version,
        )

    def check_model(self, fingerprint: str, model: onnx.ModelProto | None = None) -> None:
        """Refuse a model this calibration was not made for.

        ``fingerprint`` is the model's current fingerprint. A calibration saved by an earlier
        release carries the version 1 fingerprint, which ignored node attributes: with ``model``
        it is checked against that, and accepted with a warning that says how to get the stricter
        check.
        """
        if fingerprint in self._accepted:
            return
        if self.fingerprint_version != FINGERPRINT_VERSION and model is not None:
            current, fingerprint = fingerprint, model_fingerprint(model, version=self.fingerprint_version)
            if fingerprint == self.fingerprint:
                self._accepted.add(current)  # hashing a big model's weights again per re-quantization costs seconds
                warnings.warn(
                    "this Calibration was saved by an earlier quantdebug, whose model check ignored node "
                    "attributes (a model changed only in, say, a Conv's strides would pass); re-calibrate "
                    "with qd.calibrate(...) and save it again for the full check",
                    stacklevel=3,
                )
        if fingerprint != self.fingerprint:
            raise CalibrationError(
                f"this Calibration belongs to another model (fingerprint {self.fingerprint[:12]}, model "
                f"{fingerprint[:12]}); calibrate this model with qd.calibrate(...)"
            )

    def tensor_range(
        self, name: str, method: str, percentile: float = 99.999, symmetric: bool = False
    ) -> tuple[float, float]:
        stats = self.stats[name]
        if stats.count == 0:
            return (0.0, 0.0)
        if method == "minmax":
            lo, hi = minmax_range(stats)
        elif method == "percentile":
            lo, hi = percentile_range(stats, percentile=percentile, symmetric=symmetric)
        elif method == "entropy":
            lo, hi = entropy_range(stats)
        else:
            raise CalibrationError(f"unknown calibration method {method!r}")
        return float(lo), float(hi)

    def ranges(self, config: QuantConfig) -> dict[str, tuple[float, float]]:
        """Ranges for every tensor: the config's method, per-tensor overrides, then clamps."""
        overrides = dict(config.calibration_overrides)
        clamps = {name: (lo, hi) for name, lo, hi in config.tensor_clamps}
        out: dict[str, tuple[float, float]] = {}
        for name in self.stats:
            method = overrides.get(name, config.calibration_method)
            lo, hi = self.tensor_range(name, method, config.percentile, config.symmetric_activations)
            if name in clamps:
                lo, hi = max(lo, clamps[name][0]), min(hi, clamps[name][1])
            if lo == hi == 0.0:
                # a tensor that was always zero (a dead ReLU): a tiny positive width keeps the zero
                # point at qmin, so the ReLU that onnxruntime folds into it still clamps at zero
                hi = ZERO_WIDTH
            out[name] = (lo, hi)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "fingerprint_version": self.fingerprint_version,
            "num_samples": self.num_samples,
            "tensors": {name: s.to_dict() for name, s in self.stats.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        if data.get("format") != FORMAT:
            raise CalibrationError("this file is not a quantdebug calibration")
        version = data.get("version")
        if version not in (1, FORMAT_VERSION):
            raise CalibrationError(
                f"calibration format version {version} is not supported (expected 1 to {FORMAT_VERSION}); "
                "was it written by a newer quantdebug?"
            )
        stats = {name: TensorStats.from_dict(s) for name, s in data["tensors"].items()}
        fingerprint_version = 1 if version == 1 else int(data.get("fingerprint_version", FINGERPRINT_VERSION))
        return cls(str(data["fingerprint"]), stats, int(data["num_samples"]), fingerprint_version=fingerprint_version)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the calibration as JSON, atomically."""
        write_text(path, json.dumps(self.to_dict(), separators=(",", ":")))

    @classmethod
    def load(cls, path: str | os.PathLike[str], dataset: object | None = None) -> Calibration:
        """Read a saved calibration; ``dataset`` (the samples it was made from) is kept for the weight levers."""
        p = Path(path)
        if not p.is_file():
            raise CalibrationError(f"calibration file {str(p)!r} does not exist")
        calibration = cls.from_dict(read_json_object(p, CalibrationError, "calibration"))
        calibration.dataset = dataset  # type: ignore[assignment]  # validated against the model at quantize time
        return calibration


def _rows_match(batched: Mapping[str, np.ndarray], singles: list[Mapping[str, np.ndarray]]) -> bool:
    n = len(singles)
    for name, value in batched.items():
        if value.ndim == 0 or value.shape[0] != n:
            return False
        for i, single in enumerate(singles):
            part = single[name]
            if part.shape[:1] != (1,) or value[i : i + 1].shape != part.shape:
                return False
            if not np.allclose(value[i : i + 1], part, rtol=1e-4, atol=1e-5, equal_nan=True):
                return False
    return True


CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})


def has_control_flow(model: onnx.ModelProto) -> bool:
    """Whether ``model`` branches or loops on data: then samples are never stacked.

    One If condition (or trip count) is computed for a whole stacked batch, so a batch can run
    a branch that some of its samples would not take. The batching check compares only the first
    samples, which may agree by chance, so such models run one sample at a time.
    """
    return any(n.op_type in CONTROL_FLOW and n.domain in ("", "ai.onnx") for n in model.graph.node)


def batching_is_safe(
    run: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]],
    feeds: list[dict[str, np.ndarray]],
    *,
    stacked: Mapping[str, np.ndarray] | None = None,
) -> bool:
    """Check on the first samples that a batched run gives, row by row, what single runs give.

    ``stacked``: the outputs of a run the caller already made of ``feeds`` stacked; ``run`` then
    only runs the singles.
    """
    if len(feeds) < 2 or not can_stack(feeds):
        return False
    if stacked is None:
        together = {k: np.concatenate([f[k] for f in feeds], axis=0) for k in feeds[0]}
        try:
            batched = dict(run(together))
        except Exception:
            return False
    else:
        batched = dict(stacked)
    return _rows_match(batched, [run(f) for f in feeds])


def can_stack(feeds: list[dict[str, np.ndarray]]) -> bool:
    """Whether ``feeds`` are single samples (leading dimension 1) of one shape, which ``batches`` stacks."""
    if not all(a.ndim > 0 and a.shape[0] == 1 for f in feeds for a in f.values()):
        return False
    return not any(f[k].shape != feeds[0][k].shape for f in feeds for k in f)


OUTPUT_BUDGET = 64 * 2**20
"""Bytes of calibrated tensors one stacked calibration run may return.

A calibration run returns every float tensor of the model at once, so its memory is the batch
times one sample's activations (about 26 MB a sample on MobileNetV3-Small at 224x224: 16 samples
held 1 GB). Past a few samples stacking buys no speed (benchmarks/RESULTS.md, issue 18), so the
batch is cut to what fits this budget; the statistics do not depend on the batch.
"""


def stacked_batch(batch_size: int, bytes_per_sample: float) -> int:
    """The largest batch, at most ``batch_size``, whose outputs fit OUTPUT_BUDGET (at least 1)."""
    if bytes_per_sample <= 0:
        return batch_size
    return max(1, min(batch_size, int(OUTPUT_BUDGET // bytes_per_sample)))


class Calibrator:
    """The calibration pass over one (pre-processed) model, its session built once.

    ``calibrate_model`` uses it for one dataset; a Ray worker keeps one for every task it runs.
    """

    def __init__(self, model: onnx.ModelProto, *, fingerprint: str | None = None, threads: int | None = None) -> None:
        """``fingerprint``: the user model's, when the caller has it (hashing a 2 GB model takes seconds)."""
        names = float_tensors(model)
        self.fingerprint = fingerprint if fingerprint is not None else model_fingerprint(model)
        self.control_flow = has_control_flow(model)
        self.session = make_session(augmented(model, names), level="disabled", threads=threads, what="float model")
        wanted = set(names)
        self.outputs = [o.name for o in self.session.get_outputs() if o.name in wanted]
        self.input_names = [i.name for i in self.session.get_inputs()]

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.outputs, feed)
        return {n: v for n, v in zip(self.outputs, values) if isinstance(v, np.ndarray) and v.dtype.kind == "f"}

    def run(
        self,
        feeds: Iterator[dict[str, np.ndarray]],
        *,
        batch_size: int,
        batch_free: bool,
        progress: Callable[[int], None] | None = None,
    ) -> Calibration:
        stats: dict[str, TensorStats] = {}
        count = 0
        head = [f for _, f in zip(range(2), feeds)]
        per_sample: list[float] = []

        def measured(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            values = self._run(feed)
            rows = max(next(iter(feed.values())).shape[0], 1) if feed else 1
            per_sample.append(sum(v.nbytes for v in values.values()) / rows)
            return values

        can_batch = batch_free and not self.control_flow and batching_is_safe(measured, head)
        if can_batch and per_sample:
            batch_size = stacked_batch(batch_size, max(per_sample))
        for feed, n in batches(itertools.chain(head, feeds), batch_size, can_batch):
            values = self._run(feed)
            for name in self.input_names:
                if name in feed and feed[name].dtype.kind == "f":
                    stats.setdefault(name, TensorStats()).update(feed[name])
            for name, value in values.items():
                stats.setdefault(name, TensorStats()).update(value)
            count += n
            if progress is not None:
                progress(n)
        return Calibration(self.fingerprint, stats, count)


class CalibrationRunner(Protocol):
    """What ``calibrate_model`` needs of an executor (``qd.RayExecutor`` and ``LocalExecutor`` have it)."""

    def run_calibration(
        self, model: onnx.ModelProto, dataset: Dataset, *, batch_size: int, fingerprint: str
    ) -> Calibration: ...


def calibrate_model(
    model: onnx.ModelProto,
    dataset: Dataset,
    *,
    fingerprint: str | None = None,
    batch_size: int = 16,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    executor: CalibrationRunner | None = None,
) -> Calibration:
    """Stream ``dataset`` through ``model`` (pre-processed) and return its Calibration.

    ``executor`` runs the pass instead (split over its workers; it shows its own progress). Either
    way the Calibration keeps ``dataset``: the weight levers fit to its samples at quantize time.
    """
    if executor is not None:
        if fingerprint is None:
            fingerprint = model_fingerprint(model)
        calibration = executor.run_calibration(model, dataset, batch_size=batch_size, fingerprint=fingerprint)
    else:
        batch_free = all(s.batch_free for s in dataset.specs)
        calibration = Calibrator(model, fingerprint=fingerprint, threads=threads).run(
            iter(dataset), batch_size=batch_size, batch_free=batch_free, progress=progress
        )
    calibration.dataset = dataset
    return calibration
