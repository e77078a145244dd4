"""The registry: every lever handler, listed once. Adding a lever is one line in ``_HANDLERS``."""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType

from quantdebug.errors import ConfigError
from quantdebug.fix.levers import (
    _adaround,
    _bias_correction,
    _calibration,
    _clamp,
    _equalize,
    _float,
    _int16,
    _per_channel,
    _smooth_quant,
)
from quantdebug.fix.levers._base import Lever

_HANDLERS: tuple[Lever, ...] = (
    _int16.LEVER,
    _float.LEVER,
    _per_channel.LEVER,
    _calibration.LEVER,
    _clamp.LEVER,
    _adaround.LEVER,
    _bias_correction.LEVER,
    _equalize.LEVER,
    _smooth_quant.LEVER,
)

#: every registered lever by name, in registration order (read-only)
REGISTRY: MappingProxyType[str, Lever] = MappingProxyType({h.name: h for h in _HANDLERS})
#: the names of every registered lever (what ``levers=`` and the CLI's ``--levers`` accept)
LEVERS: tuple[str, ...] = tuple(REGISTRY)
#: the levers ``qd.fix`` uses when ``levers=`` is not given
DEFAULT_LEVERS: tuple[str, ...] = tuple(name for name, h in REGISTRY.items() if h.in_default)


def get_lever(name: str) -> Lever:
    """The handler registered as ``name``; a ConfigError listing the registered ones otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown lever {name!r}; choose from {list(LEVERS)}") from None


def check_levers(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` as a tuple, after checking every one is registered (the error lists them all)."""
    if isinstance(names, str):
        raise ConfigError(f"levers must be a sequence of lever names, not the string {names!r}; e.g. ({names!r},)")
    out = tuple(names)
    unknown = sorted({str(n) for n in out if n not in REGISTRY})
    if unknown:
        raise ConfigError(f"unknown levers {unknown}; choose from {list(LEVERS)}")
    return out
