"""``quantdebug demo``: the whole story on a real model (the PP-OCRv4 text recogniser)."""

from __future__ import annotations

import click

from quantdebug.cli._common import common_options, progress


@click.command(short_help="Run the whole story on a real model (PP-OCRv4 text recogniser).")
@click.option(
    "--output", "-o", default="quantdebug-demo", show_default=True, metavar="DIR", help="Folder for the outputs."
)
@click.option("--fix/--no-fix", "with_fix", default=True, show_default=True, help="Also let 'fix' repair the model.")
@common_options
def demo(output: str, with_fix: bool) -> None:
    """Quantize a real OCR model, watch int8 break it, debug it, and repair it.

    Uses the PP-OCRv4 recogniser shipped in rapidocr-onnxruntime on text lines
    rendered with a packaged font, so the expected text is known: quality is
    character accuracy. Prints the tutorial's story and writes every artifact
    (models, CSV, statistics, report) to DIR.
    """
    from quantdebug.demo import run_demo  # start-up time: the demo and its extra load for this command only

    run_demo(output, with_fix=with_fix, progress=progress(), echo=click.echo)
