"""The exceptions quantdebug raises: one small hierarchy, each naming what is wrong and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class QuantDebugError(Exception):
    """Base class of every error quantdebug raises on purpose."""


class ModelError(QuantDebugError, ValueError):
    """The model cannot be read, checked, run or quantized."""


class DatasetError(QuantDebugError, ValueError):
    """A dataset or one of its samples does not fit the model."""


class ConfigError(QuantDebugError, ValueError):
    """An option, a denylist entry or a metric is not valid for this model."""


class CalibrationError(QuantDebugError, ValueError):
    """A calibration is missing, broken or belongs to another model."""


class EvalFunctionError(QuantDebugError):
    """The user's ``eval_fn`` raised on a fix candidate; the user's exception is chained as ``__cause__``."""


class MissingExtraError(QuantDebugError, ImportError):
    """A feature needs a package of one of quantdebug's optional extras, and it is not installed."""


def missing_extra(what: str, package: str, extra: str, exc: BaseException) -> MissingExtraError:
    """The error for ``what`` needing ``package``, naming the extra that installs it."""
    verb = "are" if "," in package or " and " in package else "is"
    return MissingExtraError(
        f"{what} needs {package}, which {verb} not installed ({exc}); "
        f'install it with: pip install "quantdebug[{extra}]"'
    )


class RunInterrupted(QuantDebugError):
    """A debug run stopped early; the statistics so far are kept and ``run(resume=True)`` continues.

    ``state`` is the RunState merged so far when an executor ran it (None for an in-process run).
    """

    def __init__(self, message: str, state: object | None = None) -> None:
        super().__init__(message)
        self.state = state


class ModelTooLargeError(ModelError):
    """The model is over protobuf's 2 GB limit and cannot be returned as a ModelProto."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a ' did you mean ...?' suffix naming the closest valid choices, or ''."""
    # a node and its output tensor often share a name: each name is suggested once
    close = difflib.get_close_matches(name, list(dict.fromkeys(choices)), n=n, cutoff=0.5)
    if not close:
        return ""
    return " did you mean " + " or ".join(repr(c) for c in close) + "?"


def mismatch(unknown: list[str], missing: list[str]) -> str:
    """``unknown [...], missing [...]`` leaving out an empty side."""
    parts = [f"{label} {names}" for label, names in (("unknown", unknown), ("missing", missing)) if names]
    return ", ".join(parts)
