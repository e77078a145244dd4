"""The smooth_quant lever: activation outliers migrated into MatMul/Gemm weights; kept only if it helps."""

from __future__ import annotations

from quantdebug.fix.levers._base import SettingLever

SMOOTH_QUANT_ALPHA = 0.5  # the SmoothQuant paper's default migration strength


class SmoothQuant(SettingLever):
    name = "smooth_quant"
    order = 5  # with equalize: a float rewrite, tried on top of the rounding kept
    settings = (("smooth_quant", SMOOTH_QUANT_ALPHA),)


LEVER = SmoothQuant()
