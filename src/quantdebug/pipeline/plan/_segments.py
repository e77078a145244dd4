"""Run a model piece by piece over cached activations: the inputs of one layer at a time.

Sequential adaptive rounding fits layer k on the inputs that the already-rounded layers 0..k-1
give it. Running the whole model once per layer would cost L full passes; instead ``Segments``
keeps every sample's live boundary tensors (those a node not yet run still needs) and, asked for
a tensor, runs only the nodes between what it holds and that tensor, with the initializers as
they are *now*: a layer whose weight was rewritten after its fit runs with the new weight the
first time a later layer's input needs its output. Memory is the live boundary tensors of every
sample (a chain holds one activation per sample; a residual block two or three).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from quantdebug.runtime import make_session


def _subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Outer-scope names an If / Loop / Scan body reads: inputs of the node that its proto does not list."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for g in graphs:
            local = {i.name for i in g.input} | {i.name for i in g.initializer}
            local |= {o for n in g.node for o in n.output}
            for n in g.node:
                names |= {i for i in n.input if i and i not in local}
                names |= _subgraph_inputs(n) - local
    return names


class Segments:
    """The tensors of ``model`` on every sample of ``feeds``, computed lazily and segment by segment.

    ``set_initializer`` replaces a weight before the nodes that read it have run; ``get`` returns
    a tensor on every sample. Graph optimizations stay off, so Q/DQ ops run as written, the same
    on every CPU (as in the streaming pass of ``_adaround.gather``).
    """

    def __init__(self, model: onnx.ModelProto, feeds: Iterable[Mapping[str, np.ndarray]]) -> None:
        self.model = model
        self.nodes = list(model.graph.node)
        self.inits = {i.name: i for i in model.graph.initializer}
        self.producer = {o: k for k, n in enumerate(self.nodes) for o in n.output if o}
        self.reads = [[i for i in n.input if i] + sorted(_subgraph_inputs(n)) for n in self.nodes]
        self.consumers: dict[str, set[int]] = {}
        for k, names in enumerate(self.reads):
            for name in names:
                self.consumers.setdefault(name, set()).add(k)
        self.graph_outputs = {o.name for o in model.graph.output}
        self.done: set[int] = set()
        inputs = [i.name for i in model.graph.input if i.name not in self.inits]
        samples = list(feeds)
        self.count = len(samples)
        self.values: dict[str, list[np.ndarray]] = {n: [np.asarray(s[n]) for s in samples] for n in inputs}

    def set_initializer(self, name: str, value: np.ndarray) -> None:
        if any(k in self.done for k in self.consumers.get(name, ())):
            raise RuntimeError(f"initializer {name!r} changed after a node that reads it ran")  # a bug, not bad input
        self.inits[name] = onnx.numpy_helper.from_array(value, name)

    def get(self, name: str) -> list[np.ndarray]:
        """``name`` on every sample, running the nodes it needs that have not run yet."""
        if name not in self.values:
            self._run(self._needed(name), name)
        return self.values[name]

    def _needed(self, name: str) -> list[int]:
        seen: set[int] = set()
        stack = [name]
        while stack:
            k = self.producer.get(stack.pop())
            if k is None or k in seen or k in self.done:
                continue
            seen.add(k)
            stack += [i for i in self.reads[k] if i not in self.values and i not in self.inits]
        return sorted(seen)  # the model's node order is topological

    def _run(self, ks: Sequence[int], wanted: str) -> None:
        reads = list(dict.fromkeys(i for k in ks for i in self.reads[k]))
        inputs = [i for i in reads if i in self.values]
        inits = [self.inits[i] for i in reads if i in self.inits and i not in self.values]
        self.done.update(ks)
        produced = [o for k in ks for o in self.nodes[k].output if o]
        keep = [o for o in produced if o == wanted or self._live(o)]
        graph = helper.make_graph(
            [self.nodes[k] for k in ks],
            "segment",
            [
                helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(self.values[i][0].dtype), None)
                for i in inputs
            ],
            [helper.make_empty_tensor_value_info(o) for o in keep],
            inits,
        )
        segment = helper.make_model(
            graph,
            opset_imports=self.model.opset_import,
            ir_version=self.model.ir_version,
            functions=self.model.functions,
        )
        session = make_session(segment, what="model segment", level="disabled")
        runs = [session.run(keep, {i: self.values[i][s] for i in inputs}) for s in range(self.count)]
        for j, o in enumerate(keep):
            self.values[o] = [r[j] for r in runs]
        for t in [t for t in self.values if t != wanted and not self._live(t)]:
            del self.values[t]  # nothing left to run reads it

    def _live(self, name: str) -> bool:
        return name in self.graph_outputs or any(c not in self.done for c in self.consumers.get(name, ()))
