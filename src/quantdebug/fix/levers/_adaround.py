"""The adaround lever: learned rounding of every quantized weight; one evaluation, kept only if it helps."""

from __future__ import annotations

from quantdebug.fix.levers._base import SettingLever


class AdaRound(SettingLever):
    name = "adaround"
    order = 4  # after the float rewrites (equalize, smooth_quant), before bias correction
    settings = (("weight_rounding", "adaround"),)


LEVER = AdaRound()
