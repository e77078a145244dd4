"""Reports rendered from saved statistics: a self-contained HTML page, notebook plots, Model Explorer overlays,
and the text summaries the command line prints."""

from quantdebug.report._explorer import explorer_node_data, save_explorer_node_data
from quantdebug.report._notebook import CulpritFrame
from quantdebug.report._page import MAX_HISTOGRAMS, render_html, save_html
from quantdebug.report._plots import plot_statistics
from quantdebug.report._rows import has_mean_elements, is_exact_copy
from quantdebug.report._tables import fix_result_html, statistics_html
from quantdebug.report._text import TEXT_WIDTH, compare_summary, compare_table, debug_summary
from quantdebug.support import publish as _publish

__all__ = [
    "MAX_HISTOGRAMS",
    "TEXT_WIDTH",
    "CulpritFrame",
    "compare_summary",
    "compare_table",
    "debug_summary",
    "explorer_node_data",
    "fix_result_html",
    "has_mean_elements",
    "is_exact_copy",
    "plot_statistics",
    "render_html",
    "save_explorer_node_data",
    "save_html",
    "statistics_html",
]

_publish(__name__, globals(), __all__)
