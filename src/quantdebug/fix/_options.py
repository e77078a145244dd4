"""FixOptions: every knob of the fix search in one frozen object, saved in its trace and read back.

The model, the data, the ``eval_fn``, the calibration and the executor are not options: they are
what the search runs on (and none of them fits in a JSON file).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from quantdebug.config import QuantConfig
from quantdebug.errors import ConfigError
from quantdebug.fix.levers import DEFAULT_LEVERS, check_levers

OPTIONS_VERSION = 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class FixOptions:
    """How ``qd.fix`` searches: the goal, the levers, the budget, the samples and where the trace goes.

    ``target`` is an absolute quality, ``max_drop`` one relative to the float model (give at most
    one); without either, the default quality (output SQNR) aims at 30 dB and an ``eval_fn`` at
    1% of the float model's quality. ``max_evals`` counts every ``eval_fn`` call, baselines
    included (default ``2*ceil(log2(L)) + 10`` for L quantized nodes). ``max_samples`` debug
    samples are read, the first ``sensitivity_samples`` of them rank the suspects.
    """

    quant_config: QuantConfig | None = None  # the base config; None: QuantConfig()
    higher_is_better: bool = True  # of the eval_fn's quality (the default quality is always higher-better)
    target: float | None = None
    max_drop: float | None = None
    levers: Sequence[str] = DEFAULT_LEVERS
    max_evals: int | None = None
    trace_path: str | os.PathLike[str] | None = None
    resume: str | os.PathLike[str] | None = None
    max_samples: int = 32
    sensitivity_samples: int = 4
    verbose: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalised once, here
        set_(self, "levers", check_levers(self.levers))
        for name in ("trace_path", "resume"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, str | os.PathLike):
                    raise ConfigError(f"{name} must be a file path; got {type(value).__name__}")
                set_(self, name, os.fspath(value))
        if self.quant_config is not None and not isinstance(self.quant_config, QuantConfig):
            raise ConfigError(f"quant_config must be a qd.QuantConfig; got {type(self.quant_config).__name__}")
        if self.target is not None and self.max_drop is not None:
            raise ConfigError("give either target or max_drop, not both")
        for name in ("target", "max_drop"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                    raise ConfigError(f"{name} must be a number; got {value!r}")
                set_(self, name, float(value))
        if self.max_drop is not None and self.max_drop < 0:
            raise ConfigError(f"max_drop must be >= 0; got {self.max_drop}")
        if self.max_evals is not None:
            _check_int("max_evals", self.max_evals)
            if self.max_evals < 2:
                raise ConfigError("max_evals must be at least 2 (the float and the fully quantized baselines)")
        for name in ("max_samples", "sensitivity_samples"):
            _check_int(name, getattr(self, name))
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1; got {getattr(self, name)}")

    @property
    def config(self) -> QuantConfig:
        """The base QuantConfig the candidates change."""
        return self.quant_config if self.quant_config is not None else QuantConfig()

    def replace(self, **changes: Any) -> FixOptions:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": OPTIONS_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "quant_config":
                value = value.to_dict() if value is not None else None
            elif f.name == "levers":
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FixOptions:
        if not isinstance(data, Mapping):
            raise ConfigError(f"FixOptions.from_dict takes a dict (FixOptions.to_dict()); got {type(data).__name__}")
        data = dict(data)
        version = data.pop("version", OPTIONS_VERSION)
        if version != OPTIONS_VERSION:
            raise ConfigError(
                f"FixOptions version {version} is not supported (this quantdebug reads {OPTIONS_VERSION})"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown FixOptions fields {unknown}; valid fields: {sorted(known)}")
        if data.get("quant_config") is not None:
            data["quant_config"] = QuantConfig.from_dict(data["quant_config"])
        return cls(**data)


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number; got {value!r}")
