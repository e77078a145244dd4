"""The float lever: ranked suspects are left in float."""

from __future__ import annotations

from quantdebug.fix.levers._base import PrecisionLever


class Float(PrecisionLever):
    name = "float"
    precision = "float"


LEVER = Float()
