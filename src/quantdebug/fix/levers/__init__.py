"""The fix levers, one handler module each, registered once here.

To add a lever: write ``levers/_<name>.py`` with a ``Lever`` subclass (``_base.py`` says what it
implements) and a ``LEVER`` instance, and add ``_<name>.LEVER`` to ``_HANDLERS`` in ``_registry.py``. The strategy,
the options, the CLI choices and the error messages all read the registry.
"""

from quantdebug.fix.levers._base import Changes, Lever, LeverContext, PrecisionLever, Scope, SettingLever
from quantdebug.fix.levers._calibration import OUTLIER_RATIO, outlier_tensors
from quantdebug.fix.levers._clamp import SENTINEL, clamp_keeps_outputs, sentinel_clamps
from quantdebug.fix.levers._per_channel import SPREAD, spread_nodes
from quantdebug.fix.levers._registry import DEFAULT_LEVERS, LEVERS, REGISTRY, check_levers, get_lever
from quantdebug.support import publish as _publish

__all__ = [
    "DEFAULT_LEVERS",
    "LEVERS",
    "OUTLIER_RATIO",
    "REGISTRY",
    "SENTINEL",
    "SPREAD",
    "Changes",
    "Lever",
    "LeverContext",
    "PrecisionLever",
    "Scope",
    "SettingLever",
    "check_levers",
    "clamp_keeps_outputs",
    "get_lever",
    "outlier_tensors",
    "sentinel_clamps",
    "spread_nodes",
]

_publish(__name__, globals(), __all__)
