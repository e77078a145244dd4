"""The bias_correction lever: each channel's mean output error folded into its bias; kept only if it helps."""

from __future__ import annotations

from quantdebug.fix.levers._base import SettingLever


class BiasCorrection(SettingLever):
    name = "bias_correction"
    order = 4  # on top of the rounding kept: it corrects the mean error that rounding leaves
    settings = (("bias_correction", True),)


LEVER = BiasCorrection()
