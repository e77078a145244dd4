"""The bias_correction lever: each channel's mean output error folded into its bias; kept only if it helps."""

from __future__ import annotations

from quantdebug.fix.levers._base import SettingLever


class BiasCorrection(SettingLever):
    name = "bias_correction"
    in_default = False  # measured on the real models first (benchmarks/weight_levers.py)
    order = 3  # after the range levers, before any per-node change
    settings = (("bias_correction", True),)


LEVER = BiasCorrection()
