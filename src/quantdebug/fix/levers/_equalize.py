"""The equalize lever: BatchNorm folded, consecutive layers' weight ranges equalized; kept only if it helps."""

from __future__ import annotations

from quantdebug.fix.levers._base import SettingLever


class Equalize(SettingLever):
    name = "equalize"
    order = 3  # after the range levers; before adaround, which rounds the equalized weights
    settings = (("equalize", True),)


LEVER = Equalize()
