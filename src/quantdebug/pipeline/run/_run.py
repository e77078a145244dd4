"""One debug run's mergeable state, and the loop that streams samples through the debug model.

The state is sums and counts only (never per-sample tensors), so a run can stop, keep what it
has, resume later, or be split over workers whose states merge into the single-process result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from quantdebug import runtime  # its make_session is looked up per call: one place creates sessions
from quantdebug.config import DEFAULT_METRICS, DebugOptions
from quantdebug.data import batches
from quantdebug.errors import ModelError
from quantdebug.pipeline.calibrate import batching_is_safe, can_stack, has_control_flow
from quantdebug.pipeline.run._accumulate import MeanAccumulator, default_metrics
from quantdebug.pipeline.run._debug_model import METRICS_OUTPUT, ROWS_INPUT, SIZES_OUTPUT, DebugGraph


@dataclasses.dataclass
class RunState:
    """Sums and counts of one debug run (or of one shard of it)."""

    layer: MeanAccumulator
    custom: MeanAccumulator | None
    model_sums: dict[str, float]
    model_count: int = 0
    digest: bytes = bytes(32)  # XOR of per-sample SHA-256 digests: order-free, so shards merge
    fidelity: float | None = None

    @classmethod
    def empty(cls, units: int, options: DebugOptions) -> RunState:
        custom = list(options.layer_debug_metrics) + list(options.layer_direct_compare_metrics)
        return cls(
            layer=MeanAccumulator(units, DEFAULT_METRICS),
            custom=MeanAccumulator(units, custom) if custom else None,
            model_sums={name: 0.0 for name in options.model_debug_metrics},
        )

    @property
    def samples(self) -> int:
        return self.layer.samples

    def merge(self, other: RunState) -> RunState:
        fidelities = [f for f in (self.fidelity, other.fidelity) if f is not None]
        return RunState(
            layer=self.layer.merge(other.layer),
            custom=self.custom.merge(other.custom)
            if self.custom is not None and other.custom is not None
            else self.custom,
            model_sums={k: v + other.model_sums.get(k, 0.0) for k, v in self.model_sums.items()},
            model_count=self.model_count + other.model_count,
            digest=bytes(a ^ b for a, b in zip(self.digest, other.digest)),
            fidelity=max(fidelities) if fidelities else None,
        )

    def absorb_digests(self, digests: list[bytes]) -> None:
        for d in digests:
            self.digest = bytes(a ^ b for a, b in zip(self.digest, d))

    def fingerprint(self) -> str:
        return hashlib.sha256(self.digest + self.samples.to_bytes(8, "little")).hexdigest()[:32]


def sample_digests(feed: dict[str, np.ndarray], n: int) -> list[bytes]:
    """SHA-256 of each of the ``n`` samples stacked in ``feed`` (its inputs' bytes in name order)."""
    out = []
    for i in range(n):
        h = hashlib.sha256()
        for name in sorted(feed):
            value = feed[name]
            h.update(np.ascontiguousarray(value[i : i + 1] if n > 1 else value).tobytes())
        out.append(h.digest())
    return out


# onnxruntime's QDQ propagation, pushing a twin's DequantizeLinear through a data-movement op (a
# Slice) at opset 21, writes a QuantizeLinear whose output type contradicts the uint8 zero point its
# s8->u8 conversion gave the tensor, and the session fails to load. Without that transformer the
# twins stay float, as they should; the deployed part was propagated when its graph was saved, and
# the fidelity check compares its outputs with the deployed model's.
_PROPAGATION_BUG = "does not match y_zero_point"
_PROPAGATION = ("QDQPropagationTransformer",)


# onnxruntime gives every consumer of a DequantizeLinear its own copy (EnsureUniqueDQForNodeUnit), once
# before its optimizations and again after its level-1 ones. The debug graph reads each dequantized
# tensor through one Identity (build_debug_model), so the first pass copies it once at most; removing
# that Identity (EliminateIdentity, level 1) would let the second pass copy it for every statistic and
# twin that reads it: 173 more DequantizeLinear on MobileNetV3, a third of the debug graph's dequantize
# time. The kept Identity is an alias (no copy). The quantized part, saved already optimized, has none.
_KEEP_IDENTITY = ("EliminateIdentity",)


def debug_session(model: onnx.ModelProto, *, level: str, threads: int | None) -> ort.InferenceSession:
    try:
        return runtime.make_session(
            model, level=level, threads=threads, what="debug model", disabled_optimizers=_KEEP_IDENTITY
        )
    except ModelError as exc:
        if _PROPAGATION_BUG not in str(exc):
            raise
        return runtime.make_session(
            model, level=level, threads=threads, what="debug model", disabled_optimizers=_KEEP_IDENTITY + _PROPAGATION
        )


@dataclasses.dataclass
class DebugJob:
    """Everything a process needs to run the debug loop: models as bytes, options, units' parameters.

    It is what an executor ships to its workers; each builds its sessions once from it.
    """

    graph: DebugGraph
    options: DebugOptions
    deployed: bytes | None  # the quantized model, for the fidelity check
    float_model: bytes | None  # for model metrics
    custom_params: list[tuple[float, int, int]]  # per unit: scale, zero point, runtime zero-point shift

    def loop(self, *, threads: int | None = None) -> DebugLoop:
        """The sessions and loop of this job. ``threads``: onnxruntime's intra-op threads when the options
        leave them open (an executor's worker passes its CPU count); the options' count wins."""
        opts = self.options
        if opts.intra_op_num_threads is not None:
            threads = opts.intra_op_num_threads
        level = opts.graph_optimization_level
        session = debug_session(self.graph.model, level=level, threads=threads)
        deployed_bytes = self.deployed

        def deployed() -> ort.InferenceSession:  # made only when a run checks fidelity (not on resume)
            assert deployed_bytes is not None
            return runtime.make_session(deployed_bytes, level=level, threads=threads, what="quantized model")

        float_session = None
        if self.float_model is not None and opts.model_debug_metrics:
            float_session = runtime.make_session(self.float_model, level="all", threads=threads, what="float model")
        custom = self.custom_values if opts.has_raw_tensor_metrics else None
        return DebugLoop(self.graph, opts, session, deployed if deployed_bytes else None, float_session, custom)

    def empty_state(self) -> RunState:
        return RunState.empty(len(self.graph.units), self.options)

    def custom_values(self, out: dict[str, np.ndarray], n: int) -> np.ndarray:
        """Per sample, unit and custom metric, from the raw tensors of one batch."""
        opts = self.options
        names = list(opts.layer_debug_metrics) + list(opts.layer_direct_compare_metrics)
        values = np.full((n, len(self.graph.units), len(names)), np.nan)
        for k, (int_name, deq_name, ref_name) in enumerate(self.graph.raw_outputs):
            scale, zero_point, shift = self.custom_params[k]
            q_raw, deq, ref = out[int_name], out[deq_name], out[ref_name]
            for i in range(n):
                rows = slice(i, i + 1) if n > 1 else slice(None)
                diff = deq[rows] - ref[rows]
                j = 0
                for layer_fn in opts.layer_debug_metrics.values():
                    values[i, k, j] = float(layer_fn(diff))
                    j += 1
                # the deployed model's integers: undo onnxruntime's int8 -> uint8 zero-point shift
                q_user = q_raw[rows].astype(np.int32) + shift
                for fn in opts.layer_direct_compare_metrics.values():
                    values[i, k, j] = float(fn(ref[rows], q_user, scale, zero_point))
                    j += 1
        return values


class DebugLoop:
    """Runs the debug model (and, for model metrics, the float model) over feeds, into a RunState.

    A loop is built once per debug graph and reused by every run on it: its sessions, the deployed
    model's session for the fidelity check (made on first use) and its verdicts on batching.
    """

    def __init__(
        self,
        graph: DebugGraph,
        options: DebugOptions,
        session: ort.InferenceSession,
        deployed: Callable[[], ort.InferenceSession] | None,
        float_session: ort.InferenceSession | None,
        custom_values: Callable[[dict[str, np.ndarray], int], np.ndarray] | None,
    ) -> None:
        self.graph = graph
        self.options = options
        self.session = session
        self._make_deployed = deployed
        self._deployed: ort.InferenceSession | None = None
        self._batching: dict[tuple[Any, ...], bool] = {}
        self._fidelities: dict[tuple[Any, ...], float] = {}
        self._control_flow = has_control_flow(graph.model)
        self.float_session = float_session
        self.custom_values = custom_values
        self.raw_names = [t for trio in graph.raw_outputs for t in trio] if options.has_raw_tensor_metrics else []
        self.fetch = list(dict.fromkeys([METRICS_OUTPUT, SIZES_OUTPUT, *graph.model_outputs, *self.raw_names]))

    def run_batch(self, feed: dict[str, np.ndarray], batched: bool) -> dict[str, np.ndarray]:
        full = dict(feed)
        full[ROWS_INPUT] = np.array([0 if batched else 1, -1], dtype=np.int64)
        return dict(zip(self.fetch, self.session.run(self.fetch, full)))

    @property
    def checks_fidelity(self) -> bool:
        return self._make_deployed is not None

    def _first_batch(
        self, guarded: Iterator[dict[str, np.ndarray]], batch_free: bool
    ) -> tuple[bool, list[tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]], list[dict[str, np.ndarray]]]:
        """Whether samples can be stacked, decided on the run's own first batch the first time a sample
        signature is seen, then remembered.

        Returns the verdict, the runs already made that are the run's results (feed, outputs, samples),
        and the samples read but not run yet. The first two samples run stacked, as the run needs
        anyway, and then alone: when their rows agree the stacked run is the first result and the
        singles are dropped, so every sample's numbers come from a stacked run whichever
        worker or shard it is in (onnxruntime's batch-1 kernels differ from its batched ones in the last
        bits); when they do not, the two singles are the first results and the rest runs one at a time.
        Later runs keep the first two samples a batch of their own, so they batch as the first did.
        """
        size = self.options.batch_size
        if size <= 1 or not batch_free or self._control_flow:
            return False, [], []
        head = list(itertools.islice(guarded, size))
        if not head:
            return False, [], []
        key = tuple(sorted((k, v.shape, v.dtype.str) for k, v in head[0].items()))
        known = self._batching.get(key)
        if known is False or len(head) < 2 or (known is None and not can_stack(head[:2])):
            return bool(known), [], head  # batching refused, or nothing to decide on: one at a time
        # the first two samples are a batch of their own, in every run: the same samples in the same
        # batches give the same statistics to the last bit. The check stacks two, not a whole batch: a
        # model whose rows then disagree (PP-OCR) would have grown onnxruntime's arena to a batch it
        # never runs (1120 MB instead of 780)
        first, n = next(batches(head[:2], size, True))
        if known:
            return True, [(first, self.run_batch(first, True), n)], head[n:]
        try:
            out = self.run_batch(first, True)
        except Exception:  # a model that cannot run stacked samples at all
            self._batching[key] = False
            return False, [], head
        singles: list[dict[str, np.ndarray]] = []

        def single(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            singles.append(self.run_batch(feed, False))
            return self._compared(singles[-1])

        self._batching[key] = batching_is_safe(single, head[:2], stacked=self._compared(out))
        if self._batching[key]:
            return True, [(first, out, n)], head[n:]
        return False, [(f, o, 1) for f, o in zip(head, singles)], head[len(singles) :]

    def _compared(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs a batching check compares: all but the shapes and the raw tensors."""
        return {k: v for k, v in out.items() if k != SIZES_OUTPUT and k not in self.raw_names}

    def process(
        self,
        feeds: Iterator[dict[str, np.ndarray]],
        state: RunState,
        *,
        batch_free: bool,
        advance: Callable[[int], None],
    ) -> None:
        """Stream ``feeds`` into ``state``; the state is consistent after every batch."""
        guarded = _Guarded(feeds)
        can_batch, done, pending = self._first_batch(guarded, batch_free)
        check = self.checks_fidelity and state.fidelity is None
        for feed, out, n in done:
            self._absorb(state, feed, out, n, check, advance)
        for feed, n in batches(itertools.chain(pending, guarded), self.options.batch_size, can_batch):
            self._absorb(state, feed, self.run_batch(feed, n > 1), n, check, advance)
        if guarded.error is not None:
            raise guarded.error

    def _absorb(
        self,
        state: RunState,
        feed: dict[str, np.ndarray],
        out: dict[str, np.ndarray],
        n: int,
        check: bool,
        advance: Callable[[int], None],
    ) -> None:
        digests = sample_digests(feed, n)
        if check and state.fidelity is None:
            state.fidelity = self._fidelity(feed, out, digests)
        layer = default_metrics(out[METRICS_OUTPUT], out[SIZES_OUTPUT])
        custom = self.custom_values(out, n) if self.custom_values is not None else None
        model = self._model_metrics(feed, out, n)
        # update everything only once the whole batch is computed, so an interrupt leaves no half batch
        state.layer.update(layer)
        if custom is not None and state.custom is not None:
            state.custom.update(custom)
        for name, value in model.items():
            state.model_sums[name] += value
        state.model_count += n if model else 0
        state.absorb_digests(digests)
        advance(n)

    def _fidelity(self, feed: dict[str, np.ndarray], out: dict[str, np.ndarray], digests: list[bytes]) -> float:
        """The largest difference of the model's outputs from the deployed model's on this batch.

        Remembered by the batch's samples (their digests and shapes): a later run on this loop whose
        first batch holds the same samples gets the same sessions' same answer without running the
        deployed model again.
        """
        key = (tuple(digests), tuple(sorted((k, v.shape, v.dtype.str) for k, v in feed.items())))
        fidelity = self._fidelities.get(key)
        if fidelity is None:
            assert self._make_deployed is not None
            if self._deployed is None:
                self._deployed = self._make_deployed()
            names = list(self.graph.model_outputs)
            expected = self._deployed.run(names, feed)
            fidelity = max(
                (float(np.max(np.abs(a.astype(np.float64) - out[n].astype(np.float64)))) if a.size else 0.0)
                for n, a in zip(names, expected)
            )
            self._fidelities[key] = fidelity
        if fidelity != 0.0:
            warnings.warn(
                f"the debug model's quantized path differs from the deployed quantized model by up to {fidelity:g} "
                "on the first samples; statistics describe the debug model's path",
                stacklevel=5,
            )
        return fidelity

    def _model_metrics(self, feed: dict[str, np.ndarray], out: dict[str, np.ndarray], n: int) -> dict[str, float]:
        if self.float_session is None:
            return {}
        f_out = self.float_session.run(None, feed)
        q_out = [out[name] for name in self.graph.model_outputs]
        sums = {name: 0.0 for name in self.options.model_debug_metrics}
        for i in range(n):
            fs = [a[i : i + 1] if n > 1 else a for a in f_out]
            qs = [a[i : i + 1] if n > 1 else a for a in q_out]
            for name, fn in self.options.model_debug_metrics.items():
                sums[name] += float(fn(fs, qs))
        return sums


class _Guarded:
    """Ends iteration at the first error from the data, keeping it, so batched samples before it still run."""

    def __init__(self, source: Iterator[dict[str, np.ndarray]]) -> None:
        self.source = source
        self.error: BaseException | None = None

    def __iter__(self) -> _Guarded:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.error is not None:
            raise StopIteration
        try:
            return next(self.source)
        except StopIteration:
            raise
        except BaseException as exc:  # Ctrl-C included: what was read so far is still processed
            self.error = exc
            raise StopIteration from None


def skip(feeds: Iterator[Any], count: int) -> Iterator[Any]:
    """Drop the first ``count`` samples (already in a resumed run's state)."""
    for _ in range(count):
        if next(feeds, None) is None:
            break
    return feeds
