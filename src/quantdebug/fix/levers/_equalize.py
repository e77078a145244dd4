"""The equalize lever: BatchNorm folded, consecutive layers' weight ranges equalized; kept only if it helps."""

from __future__ import annotations

from quantdebug.fix.levers._base import SettingLever


class Equalize(SettingLever):
    name = "equalize"
    order = 5  # after the rounding levers: on EfficientNet-Lite0 it lowers what adaround reaches
    settings = (("equalize", True),)


LEVER = Equalize()
