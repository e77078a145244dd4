"""The equalize lever: BatchNorm folded, consecutive layers' weight ranges equalized; kept only if it helps."""

from __future__ import annotations

from quantdebug.fix.levers._base import SettingLever


class Equalize(SettingLever):
    name = "equalize"
    in_default = False  # measured on the real models first (benchmarks/weight_levers.py)
    order = 3  # after the range levers, before any per-node change
    settings = (("equalize", True),)
    needs_samples = False  # a function-preserving rewrite of the weights: no data


LEVER = Equalize()
