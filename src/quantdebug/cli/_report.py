"""``quantdebug report`` (saved statistics as one HTML page) and ``quantdebug compare`` (two runs, layer by layer)."""

from __future__ import annotations

from pathlib import Path

import click

from quantdebug.cli._common import common_options, note
from quantdebug.fix import read_trace, trace_in_folder
from quantdebug.pipeline.results import Statistics
from quantdebug.report import compare_summary, render_html
from quantdebug.support import write_text


def write_report(statistics: Statistics, target: Path, title: str | None = None) -> None:
    """The HTML report of ``statistics``, written atomically to ``target``."""
    write_text(target, render_html(statistics, title=title))
    note(f"wrote {target}")


@click.command(short_help="Render saved statistics as an HTML report.")
@click.argument("stats_dir", metavar="STATS_DIR")
@click.option(
    "--output", "-o", metavar="report.html", help="Where to write the report (default: STATS_DIR/report.html)."
)
@click.option(
    "--fix",
    "fix_path",
    metavar="TRACE.json",
    help="A fix search to show: the file 'fix --trace' writes, or FIXED.fix.json (default: a *.fix.json in STATS_DIR).",
)
@common_options
def report(stats_dir: str, output: str | None, fix_path: str | None) -> None:
    """Render the saved statistics of a debug run as one HTML file."""
    statistics = Statistics.load(stats_dir)
    found = Path(fix_path) if fix_path is not None else trace_in_folder(stats_dir)
    if found is not None:
        statistics.extras["fix"] = read_trace(found)
    target = Path(output) if output is not None else Path(stats_dir) / "report.html"
    write_report(statistics, target)


@click.command(short_help="Show what changed layer by layer between two runs.")
@click.argument("stats_a", metavar="STATS_A")
@click.argument("stats_b", metavar="STATS_B")
@click.option(
    "--top", type=click.IntRange(min=0), metavar="N", default=20, show_default=True, help="Rows to show (0: all)."
)
@common_options
def compare(stats_a: str, stats_b: str, top: int) -> None:
    """Show what changed layer by layer between two debug runs (A before, B after).

    Layers are matched by tensor name; the largest changes of rmse/scale come
    first. A layer in one run only (for example one denylisted in the other)
    is flagged 'only in A' or 'only in B'.
    """
    a = Statistics.load(stats_a)
    b = Statistics.load(stats_b)
    click.echo(compare_summary(a, b, stats_a, stats_b, top=top))
