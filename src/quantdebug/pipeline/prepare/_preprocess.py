"""Pre-processing done for the user: unique node names, opset upgrade, graph optimization, shapes.

Nothing is written beside the user's model: temporary files live in a private folder.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
import re
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import onnx
from onnx import version_converter

from quantdebug.errors import ModelError
from quantdebug.runtime import optimized_model

MIN_OPSET = 13  # per-channel DequantizeLinear (its axis attribute) needs opset 13
_log = logging.getLogger(__name__)


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def canonicalize_names(model: onnx.ModelProto) -> dict[str, str]:
    """Give every node a unique, non-empty name in place; return {new_name: original_name}.

    Nodes that are unnamed or share a name get ``<op>_<index>`` (index: position in the graph),
    which is stable for the same model and is what statistics and denylists show.
    """
    counts = Counter(n.name for n in model.graph.node)
    taken = {n.name for n in model.graph.node if n.name and counts[n.name] == 1}
    renamed: dict[str, str] = {}
    for index, node in enumerate(model.graph.node):
        if node.name and counts[node.name] == 1:
            continue
        candidate = f"{node.op_type}_{index}"
        while candidate in taken:
            candidate += "_"
        renamed[candidate] = node.name
        taken.add(candidate)
        node.name = candidate
    return renamed


@dataclasses.dataclass(frozen=True)
class Preprocessed:
    """The model the numbers are computed on, and how its nodes relate to the user's."""

    model: onnx.ModelProto
    covers: dict[str, tuple[str, ...]]  # pre-processed node -> user nodes it stands for
    removed: tuple[str, ...]  # user nodes that optimization folded away
    renamed: dict[str, str]  # canonical name -> the user's original (empty or repeated) name
    notes: tuple[str, ...]


@functools.cache
def _symbolic_shape_inference() -> Any:
    """onnxruntime's SymbolicShapeInference, loaded without running ``onnxruntime/tools/__init__.py``.

    That ``__init__`` imports torch whenever torch is installed, which costs seconds at every start
    of the CLI for nothing: the module itself only needs numpy, onnx, sympy and packaging.
    """
    loaded = sys.modules.get("onnxruntime.tools.symbolic_shape_infer")
    if loaded is None:
        package = importlib.util.find_spec("onnxruntime")
        path = Path(package.origin).parent / "tools" / "symbolic_shape_infer.py" if package and package.origin else None
        spec = importlib.util.spec_from_file_location("_quantdebug_symbolic_shape_infer", path) if path else None
        if spec is None or spec.loader is None or path is None or not path.is_file():
            from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference  # fallback: the packaged copy

            return SymbolicShapeInference
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
    return loaded.SymbolicShapeInference


def _infer_shapes(model: onnx.ModelProto, notes: list[str]) -> onnx.ModelProto:
    try:
        SymbolicShapeInference = _symbolic_shape_inference()

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=False)
        if inferred is not None:
            return inferred
    except Exception as exc:  # symbolic inference fails on many real exports; fall back
        notes.append(f"symbolic shape inference failed ({str(exc)[:80]}); used ONNX shape inference")
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:
        notes.append(f"ONNX shape inference failed too ({str(exc)[:80]}); continuing without shapes")
        return model


def preprocess(model: onnx.ModelProto, *, optimize: bool = True, min_opset: int = MIN_OPSET) -> Preprocessed:
    """Return the pre-processed copy of ``model`` (which is left untouched).

    ``min_opset`` is 21 when 16-bit activations are planned: onnxruntime's quantizer only bumps
    the opset number, so the ops themselves must be converted first.
    """
    work = onnx.ModelProto()
    work.CopyFrom(model)
    renamed = canonicalize_names(work)
    user_nodes = {n.name: n for n in work.graph.node}
    notes: list[str] = []
    opset = default_opset(work)
    target = max(min_opset, MIN_OPSET)
    if opset < target:
        try:
            work = version_converter.convert_version(work, target)
        except Exception as exc:
            raise ModelError(
                f"the model uses opset {opset}; this quantization needs opset {target} or newer and the "
                f"automatic upgrade failed ({str(exc)[:120]}); re-export the model with opset >= {target}"
            ) from exc
        notes.append(f"upgraded opset {opset} -> {target}")
    if optimize:
        try:
            work = optimized_model(work, level="basic", what="float model")
        except ModelError as exc:
            raise ModelError(explain_runtime_failure(work, str(exc))) from exc
        canonicalize_names(work)
    work = _infer_shapes(work, notes)
    covers, removed = _relate(user_nodes, work)
    return Preprocessed(work, covers, removed, renamed, tuple(notes))


_OPSET = re.compile(r"Opset (\d+) is under development|opset (\d+) .*(?:not supported|is not supported)", re.I)
_UNREGISTERED = re.compile(r"(?:([\w.]+):)?(\w+)\((-?\d+)\) is not a registered function/op")
_CPP_FRAME = re.compile(r"/onnxruntime_src/\S+ [^)]*\)\s*|\[ONNXRuntimeError\] : \d+ : \w+ : ")


def explain_runtime_failure(model: onnx.ModelProto, message: str) -> str:
    """onnxruntime's refusal to load ``model``, rewritten to name the opset or the nodes at fault."""
    import onnxruntime  # start-up time: only on a failure

    opset = _OPSET.search(message)
    if opset:
        version = opset.group(1) or opset.group(2)
        return (
            f"the float model imports ONNX opset {version}, which onnxruntime {onnxruntime.__version__} does not "
            "support; re-export the model with a released opset that this onnxruntime supports"
        )
    unregistered = _UNREGISTERED.search(message)
    if unregistered:
        domain, op_type = unregistered.group(1) or "", unregistered.group(2)
        nodes = [n.name for n in model.graph.node if n.op_type == op_type and n.domain in (domain, "ai.onnx")]
        where = f"node {nodes[0]!r}" if len(nodes) == 1 else f"nodes {nodes[:5]}" if nodes else "a node"
        return (
            f"onnxruntime cannot run the float model: {where} runs op {op_type!r} from domain {domain or 'ai.onnx'!r}"
            f" at version {unregistered.group(3)}, which onnxruntime {onnxruntime.__version__} does not have"
        )
    return " ".join(_CPP_FRAME.sub("", message).split())


def _relate(
    user_nodes: dict[str, onnx.NodeProto], pre: onnx.ModelProto
) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    """Which user nodes each pre-processed node stands for.

    A user node is covered by the pre-processed node of the same name, else by the producer of
    one of its outputs (a fused BatchNormalization by its Conv), else, when it was fused away
    with its only consumers (MatMul + Add -> Gemm), by the node that covers those consumers.
    """
    producer = {out: n.name for n in pre.graph.node for out in n.output if out}
    covers: dict[str, list[str]] = {n.name: [] for n in pre.graph.node}
    owner_of: dict[str, str] = {}
    pending: list[onnx.NodeProto] = []
    for name, node in user_nodes.items():
        if name in covers:
            owner_of[name] = name
            continue
        producers = sorted({producer[o] for o in node.output if o in producer})
        if producers:
            owner_of[name] = producers[0]
        else:
            pending.append(node)
    consumers: dict[str, list[str]] = {}
    for node in user_nodes.values():
        for t in node.input:
            consumers.setdefault(t, []).append(node.name)
    changed = True
    while changed and pending:
        changed = False
        for node in list(pending):
            if node.op_type == "Constant":
                continue
            users = {c for o in node.output for c in consumers.get(o, [])}
            owners: set[str | None] = {owner_of.get(c) for c in users}
            if len(owners) == 1 and None not in owners:
                owner_of[node.name] = owners.pop()  # type: ignore[assignment]
                pending.remove(node)
                changed = True
    for name, owner in owner_of.items():
        covers[owner].append(name)
    return {k: tuple(v) for k, v in covers.items()}, tuple(n.name for n in pending)
