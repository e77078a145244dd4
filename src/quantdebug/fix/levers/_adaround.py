"""The adaround lever: learned rounding of every quantized weight; one evaluation, kept only if it helps."""

from __future__ import annotations

from quantdebug.fix.levers._base import SettingLever


class AdaRound(SettingLever):
    name = "adaround"
    in_default = False  # measured on the real models first (benchmarks/weight_levers.py)
    order = 3  # after the range levers, before any per-node change
    settings = (("weight_rounding", "adaround"),)


LEVER = AdaRound()
