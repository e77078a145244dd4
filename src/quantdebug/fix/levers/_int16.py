"""The int16 lever: ranked suspects get 16-bit activations (the model stays integer-only)."""

from __future__ import annotations

from quantdebug.fix.levers._base import LeverContext, PrecisionLever


class Int16(PrecisionLever):
    name = "int16"
    precision = "int16"

    def available(self, context: LeverContext) -> bool:
        # 16-bit QDQ needs opset 21; a model that cannot be converted loses this lever only
        return context.wide_available()


LEVER = Int16()
