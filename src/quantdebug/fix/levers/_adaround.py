"""The adaround lever: learned rounding of every quantized weight; one evaluation, kept only if it helps."""

from __future__ import annotations

from quantdebug.fix.levers._base import SettingLever


class AdaRound(SettingLever):
    name = "adaround"
    order = 3  # first of the weight levers: the one that repairs most (benchmarks/WEIGHT_LEVERS.md)
    settings = (("weight_rounding", "adaround"),)


LEVER = AdaRound()
