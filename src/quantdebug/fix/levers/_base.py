"""The one interface every fix lever implements, and what a lever reads to make its proposal.

A lever is a handler object (torchao's one handler per config type): its name, its scope, and
what it proposes. Whole-model levers (``scope="model"``) are tried once each, before any per-node
change, and kept only when they improve the quality; per-node levers (``scope="node"``) give
the precision the bisection puts the ranked suspects in. The strategy reads only this interface,
so a new lever is one module and one line in ``levers/__init__.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import onnx

from quantdebug.config import QuantConfig
from quantdebug.fix._result import Candidate
from quantdebug.pipeline.calibrate import Calibration
from quantdebug.pipeline.plan import Plan

Scope = Literal["model", "node"]
Changes = Mapping[str, tuple[Any, ...]]  # Candidate field -> the entries a proposal sets


@dataclasses.dataclass(frozen=True, kw_only=True)
class LeverContext:
    """What a whole-model lever reads: the float model, the fully quantized plan, the ranges, the base config."""

    float_model: onnx.ModelProto
    plan: Plan
    calibration: Calibration
    base: QuantConfig
    feeds: Sequence[Mapping[str, np.ndarray]]  # a few debug samples (clamp checks its outputs on them)
    wide_available: Callable[[], bool]  # whether the opset-21 copy 16-bit candidates need can be made

    @property
    def tensors(self) -> list[str]:
        """The float tensors the fully quantized model quantizes, in plan order."""
        return [u.float_tensor for u in self.plan.units]


class Lever:
    """One lever. Subclasses set ``name``, ``scope`` and ``order`` and implement ``propose``.

    ``in_default``: whether ``qd.fix`` uses the lever when ``levers=`` is not given.
    ``order``: when a whole-model lever is tried among the others (lower first).
    """

    name: str = ""
    scope: Scope = "model"
    in_default: bool = True
    order: int = 0
    #: a whole-model lever that is only worth its evaluation while the target is still unmet
    only_while_unmet: bool = False
    #: tried only while the budget keeps the per-node search's ``2*ceil(log2 L)`` evaluations beyond it
    after_reserve: bool = False

    def available(self, context: LeverContext) -> bool:
        """Whether the lever can run on this model and base config at all."""
        del context
        return True

    def propose(self, context: LeverContext, suspects: Sequence[str] = ()) -> Changes:
        """The changes the lever makes: for a per-node lever, to ``suspects``; empty when it has nothing to offer."""
        raise NotImplementedError

    def apply(self, candidate: Candidate, changes: Changes) -> Candidate:
        """``candidate`` with the lever's ``changes``; ``Candidate.config`` turns it into a QuantConfig."""
        return candidate.merged(**changes)

    def label(self, changes: Changes) -> str:
        """The trace step (and verbose line) for trying ``changes``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<fix lever {self.name!r} ({self.scope})>"


class PrecisionLever(Lever):
    """A per-node lever: the suspects the bisection picks go to ``precision`` (kept in the model's config)."""

    scope: Scope = "node"
    precision: str = ""

    def propose(self, context: LeverContext, suspects: Sequence[str] = ()) -> Changes:
        del context
        return {"precision": tuple((node, self.precision) for node in suspects)}

    def label(self, changes: Changes) -> str:
        return f"{self.name}: {len(changes.get('precision', ()))} nodes"


class SettingLever(Lever):
    """A whole-model lever that sets QuantConfig fields (a weight transform, say): one eval, kept if it helps."""

    settings: tuple[tuple[str, Any], ...] = ()
    only_while_unmet = True
    after_reserve = True  # a weight lever is a bonus; the per-node search is what meets a target for sure
    #: the lever fits to, or re-calibrates on, the calibration samples (a loaded calibration has none)
    needs_samples = True

    def available(self, context: LeverContext) -> bool:
        if self.needs_samples and context.calibration.dataset is None:
            return False
        return any(getattr(context.base, field) != value for field, value in self.settings)

    def propose(self, context: LeverContext, suspects: Sequence[str] = ()) -> Changes:
        del context, suspects
        return {"settings": self.settings}

    def apply(self, candidate: Candidate, changes: Changes) -> Candidate:
        fields = dict(candidate.settings)
        fields.update(dict(changes.get("settings", ())))
        return candidate.merged(settings=tuple(fields.items()))

    def label(self, changes: Changes) -> str:
        return f"{self.name}: " + ", ".join(f"{k}={v!r}" for k, v in changes.get("settings", ()))
