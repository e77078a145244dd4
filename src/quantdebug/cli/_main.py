"""The ``quantdebug`` command group: the global options, then the commands in workflow order.

Exit codes: 0 success, 1 an error in the model, the data or the run, 2 a usage error
(3: ``fix`` did not meet its target).
"""

from __future__ import annotations

from collections.abc import Sequence

import click
import onnx
import onnxruntime

import quantdebug as qd
from quantdebug.cli._calibrate import calibrate, quantize
from quantdebug.cli._common import Group, Settings, warnings_as_lines
from quantdebug.cli._debug import debug
from quantdebug.cli._demo import demo
from quantdebug.cli._fix import fix
from quantdebug.cli._report import compare, report
from quantdebug.report import TEXT_WIDTH


def _version_message() -> str:
    return f"%(prog)s %(version)s (onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__})"


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": TEXT_WIDTH})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or notes on stderr.")
@click.version_option(qd.__version__, "--version", "-V", prog_name="quantdebug", message=_version_message())
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """Find the layers that break an ONNX model when it is quantized to integers.

    \b
    A typical session:
      quantdebug calibrate model.onnx --data calib.npz -o cal.json
      quantdebug debug model.onnx -d calib.npz -c cal.json -o run1/
      quantdebug debug model.onnx -d calib.npz -c cal.json \\
          --denylist-nodes conv1 -o run2/
      quantdebug compare run1/ run2/
      quantdebug report run2/ -o report.html
      quantdebug quantize model.onnx -c cal.json \\
          --denylist-nodes conv1 -o model.int8.onnx

    Errors print one line starting 'error:' and exit 1 (usage errors exit 2);
    --debug shows the traceback instead.
    """
    settings = ctx.ensure_object(Settings)
    settings.debug = settings.debug or debug
    settings.quiet = settings.quiet or quiet
    ctx.with_resource(warnings_as_lines())  # until the command ends, then the process's own hook again
    if not debug:
        try:
            onnxruntime.set_default_logger_severity(3)  # onnxruntime's own warnings are noise here
        except Exception:  # pragma: no cover - an onnxruntime without this function
            pass


for command in (calibrate, quantize, debug, report, compare, fix, demo):  # the order --help lists them in
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``quantdebug`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="quantdebug")
