"""Reports rendered from saved statistics: a self-contained HTML page, notebook plots, Model Explorer overlays."""

from quantdebug.report._explorer import explorer_node_data, save_explorer_node_data
from quantdebug.report._html import render_html, save_html
from quantdebug.report._notebook import CulpritFrame
from quantdebug.report._plots import has_mean_elements, is_exact_copy, plot_statistics
from quantdebug.report._tables import statistics_html

__all__ = [
    "CulpritFrame",
    "explorer_node_data",
    "has_mean_elements",
    "is_exact_copy",
    "plot_statistics",
    "render_html",
    "save_explorer_node_data",
    "save_html",
    "statistics_html",
]
