"""Notebook plots (matplotlib).

`plot_statistics` draws the TensorFlow Lite tutorial's two bar plots, range and rmse/scale per
layer, on `matplotlib.figure.Figure` objects with their own Agg canvas: pyplot and the global
backend are never touched, so it is safe in notebooks, servers and tests alike.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from quantdebug.errors import missing_extra
from quantdebug.pipeline.results import Statistics
from quantdebug.report._rows import graph_order
from quantdebug.thresholds import IDEAL_RMSE_OVER_SCALE, SEVERITY, SUSPECT_RMSE_OVER_SCALE, severity

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def plot_statistics(statistics: Statistics) -> list[Figure]:
    """Two figures: the range and the rmse/scale of every layer, with the 1/sqrt(12) line.

    Bars follow graph order and are coloured by severity; the figures are not shown, so display
    them (a notebook shows a returned figure) or ``fig.savefig(path)``.
    """
    try:  # an optional dependency: the plots extra
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure  # optional dependency, as above
    except ImportError as exc:
        raise missing_extra("plot_statistics (debugger.plot())", "matplotlib", "plots", exc) from exc

    rows = graph_order(statistics.layers)
    labels = [r.node_name or r.tensor_name for r in rows]
    x = list(range(len(rows)))
    width = max(6.4, min(24.0, 0.28 * len(rows) + 2.0))

    def new_figure() -> Figure:
        fig = Figure(figsize=(width, 4.2), layout="constrained")
        FigureCanvasAgg(fig)
        return fig

    def label_axis(ax: Axes) -> None:
        ax.set_xlim(-0.6, len(rows) - 0.4)
        if len(rows) <= 60:
            ax.set_xticks(x, labels, rotation=90, fontsize=7)
        ax.set_xlabel("layer (graph order)")
        ax.grid(axis="y", alpha=0.3)

    ranges = [r.range for r in rows]
    fig_range = new_figure()
    ax = fig_range.add_subplot()
    ax.bar(x, ranges, color="#4a78b5")
    finite = [v for v in ranges if math.isfinite(v) and v > 0]
    if finite and max(finite) / min(finite) > 100:
        ax.set_yscale("log")
    ax.set_ylabel("range = (qmax - qmin) × scale")
    ax.set_title("Quantization range per layer")
    label_axis(ax)

    ratios = [r.rmse_over_scale for r in rows]
    fig_rmse = new_figure()
    ax = fig_rmse.add_subplot()
    ax.bar(x, [v if math.isfinite(v) else 0.0 for v in ratios], color=[SEVERITY[severity(v)][1] for v in ratios])
    ax.axhline(
        IDEAL_RMSE_OVER_SCALE,
        color="#222222",
        linestyle="--",
        linewidth=1,
        label=f"1/√12 ≈ {IDEAL_RMSE_OVER_SCALE:.3f} (ideal rounding)",
    )
    ax.axhline(
        SUSPECT_RMSE_OVER_SCALE,
        color="#d9534f",
        linestyle=":",
        linewidth=1,
        label=f"{SUSPECT_RMSE_OVER_SCALE:g} (suspect)",
    )
    ax.set_ylabel("rmse / scale")
    ax.set_title("Quantization error per layer (rmse / scale)")
    ax.legend(loc="upper right", fontsize=8)
    label_axis(ax)
    return [fig_range, fig_rmse]
