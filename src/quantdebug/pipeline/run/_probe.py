"""The tensor probe: float and dequantized values of a few verified tensors, on a few debug samples.

The debug graph's raw outputs are fetched from a second copy built with them exposed, made on first
use; a probe reads the dataset once per question and stops after the last sample it needs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np
import onnx

from quantdebug import runtime  # its make_session is looked up per call: one place creates sessions
from quantdebug.errors import ConfigError, suggest
from quantdebug.pipeline.plan import Plan, Unit
from quantdebug.pipeline.run._debug_model import ROWS_INPUT, DebugGraph, build_debug_model

Tensors = dict[str, tuple[np.ndarray, np.ndarray]]  # float tensor name -> (float, dequantized)


def unit_named(plan: Plan, name: str) -> Unit:
    """The verified unit whose node or float output tensor is ``name``; a clear error naming the choices."""
    for unit in plan.units:
        if name in (unit.node, unit.float_tensor):
            return unit
    names = [u.node for u in plan.units] + [u.float_tensor for u in plan.units]
    raise ConfigError(f"no verified layer named {name!r};{suggest(name, names) or ''} see debugger.layer_names")


class TensorProbe:
    """Reads (float, dequantized) tensors of the plan's units from the debug graph with raw outputs."""

    def __init__(
        self,
        plan: Plan,
        float_model: onnx.ModelProto,
        dataset: Iterable[dict[str, np.ndarray]],
        *,
        whole_model: bool,
        level: str,
    ) -> None:
        self.plan = plan
        self.float_model = float_model
        self.dataset = dataset
        self.whole_model = whole_model
        self.level = level
        self._graph: DebugGraph | None = None
        self._session: object = None

    def _built(self) -> tuple[DebugGraph, object]:
        if self._graph is None:
            self._graph = build_debug_model(
                self.plan.optimized, self.float_model, self.plan.units, whole_model=self.whole_model, raw=True
            )
            self._session = runtime.make_session(self._graph.model, level=self.level, what="debug model")
        return self._graph, self._session

    def tensors(self, names: Sequence[str], indices: range) -> tuple[list[Tensors], int]:
        """(float, dequantized) tensors of ``names`` for the debug samples in ``indices``, in one pass over
        the dataset that stops after the last of them; also how many samples were read."""
        units = [unit_named(self.plan, n) for n in names]
        graph, session = self._built()
        fetch = []
        for unit in units:
            _, deq_name, ref_name = graph.raw_outputs[graph.units.index(unit)]
            fetch += [ref_name, deq_name]
        found: list[Tensors] = []
        seen = 0
        for index, feed in enumerate(itertools.islice(self.dataset, indices.stop)):
            seen = index + 1
            if index in indices:
                full = dict(feed)
                full[ROWS_INPUT] = np.array([1, -1], dtype=np.int64)
                values = session.run(fetch, full)  # type: ignore[attr-defined]
                found.append({u.float_tensor: (values[2 * k], values[2 * k + 1]) for k, u in enumerate(units)})
        return found, seen

    def layer_tensors(self, name: str, sample_index: int = 0) -> dict[str, np.ndarray]:
        """Float tensor, quantized tensor (dequantized) and their difference for one layer and sample."""
        unit = unit_named(self.plan, name)
        if sample_index < 0:
            raise ConfigError(f"sample_index must be >= 0; got {sample_index}")
        found, seen = self.tensors([unit.float_tensor], range(sample_index, sample_index + 1))
        if not found:
            raise ConfigError(f"sample_index {sample_index} is past the end of the debug dataset ({seen} samples)")
        f, q = found[0][unit.float_tensor]
        return {"float": f, "quantized": q, "diff": q - f}

    def histograms(self, names: Sequence[str], samples: int, bins: int) -> dict[str, dict[str, list[float]]]:
        """Float and quantized value histograms of ``names`` over the first ``samples`` debug samples
        (fewer if the data ends), on shared edges spanning both; tensors with no finite value are left out."""
        collected: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {n: ([], []) for n in names}
        found, _ = self.tensors(list(names), range(samples))
        for tensors in found:
            for name, (f, q) in tensors.items():
                collected[name][0].append(f.reshape(-1))
                collected[name][1].append(q.reshape(-1))
        out: dict[str, dict[str, list[float]]] = {}
        for name, (fs, qs) in collected.items():
            if not fs:
                continue
            f, q = np.concatenate(fs), np.concatenate(qs)
            finite = np.concatenate([f[np.isfinite(f)], q[np.isfinite(q)]])
            if finite.size == 0:
                continue
            lo, hi = float(finite.min()), float(finite.max())
            edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
            out[name] = {
                "edges": edges.tolist(),
                "float": np.histogram(f, edges)[0].astype(float).tolist(),
                "quantized": np.histogram(q, edges)[0].astype(float).tolist(),
            }
        return out
