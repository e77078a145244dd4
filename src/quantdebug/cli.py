"""The ``quantdebug`` command line: calibrate, quantize, debug, report and compare ONNX models.

Exit codes: 0 success, 1 an error in the model, the data or the run, 2 a usage error.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

import click
import onnx

import quantdebug as qd
from quantdebug.data import Dataset, input_specs
from quantdebug.data._formats import ImageOptions, load_callable, open_data
from quantdebug.errors import QuantDebugError
from quantdebug.fix import DEFAULT_LEVERS, read_trace, trace_in_folder
from quantdebug.fix._culprits import CULPRIT_SAMPLES, REASONS, number
from quantdebug.pipeline.results._results import CSV_NAME, JSON_NAME, LayerRow, Statistics
from quantdebug.report import has_mean_elements
from quantdebug.support import _io

F = TypeVar("F", bound=Callable[..., Any])

WIDTH = 79  # everything printed fits an 80-column terminal
SUSPECT_THRESHOLD = 0.7  # the tutorial's rule: rmse/scale above 0.7 is a likely culprit


# -- global settings and error handling ----------------------------------------------------------------


@dataclasses.dataclass
class Settings:
    """Flags shared by every command: ``--debug`` (tracebacks) and ``--quiet`` (no progress)."""

    debug: bool = False
    quiet: bool = False


def _settings() -> Settings:
    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(Settings) if ctx is not None else None
    return found if found is not None else Settings()


def _one_line(exc: BaseException) -> str:
    """An exception as one line: the message for ours, the type and message for others."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{exc.strerror}: {exc.filename!s}"
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    if len(text) > 2000:
        text = text[:1997] + "..."
    if isinstance(exc, QuantDebugError | OSError):
        return text
    return f"{type(exc).__name__}: {text} (rerun with --debug for the traceback)"


class _Group(click.Group):
    """Lists commands in workflow order; turns every error but a usage error into one ``error: ...`` line, exit 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            settings = ctx.find_object(Settings)
            if settings is not None and settings.debug:
                raise
            click.echo(f"error: {_one_line(exc)}", err=True)
            ctx.exit(1)


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    click.get_current_context().exit(code)


def _note(message: str) -> None:
    """A progress note on stderr; ``--quiet`` silences it."""
    if not _settings().quiet:
        click.echo(message, err=True)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    click.echo(f"warning: {' '.join(str(message).split())}", err=True)


def _set_flag(name: str) -> Callable[[click.Context, click.Parameter, bool], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            setattr(ctx.ensure_object(Settings), name, True)

    return callback


def _common_options(f: F) -> F:
    """``--debug`` and ``--quiet`` are accepted after the command name too."""
    f = click.option(
        "--quiet",
        "-q",
        is_flag=True,
        expose_value=False,
        callback=_set_flag("quiet"),
        help="No progress bars or notes.",
    )(f)
    f = click.option(
        "--debug", is_flag=True, expose_value=False, callback=_set_flag("debug"), help="Show full tracebacks on errors."
    )(f)
    return f


# -- option parsing -----------------------------------------------------------------------------------


def _parse_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    parts = value.lower().replace("×", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not HxW (for example 224x224)") from None
    if h < 1 or w < 1:
        raise click.BadParameter(f"{value!r}: height and width must be positive")
    return (h, w)


def _parse_floats(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of numbers (for example 0.485,0.456,0.406)"
        ) from None
    if len(numbers) not in (1, 3, 4) or not all(math.isfinite(v) for v in numbers):
        raise click.BadParameter(f"{value!r}: give 1 or 3 finite numbers (one per channel)")
    if param.name == "std" and any(v == 0 for v in numbers):
        raise click.BadParameter(f"{value!r}: std must not be 0")
    return numbers


def _split_names(values: Sequence[str]) -> tuple[str, ...]:
    """Repeated and comma-separated names, in order, without duplicates."""
    names = [part.strip() for value in values for part in value.split(",")]
    return tuple(dict.fromkeys(n for n in names if n))


@dataclasses.dataclass(frozen=True)
class DataArgs:
    """What ``--data`` and the image options asked for."""

    spec: str
    image: ImageOptions
    max_samples: int | None


DATA_HELP = (
    "Samples: an .npz (one array per input name, samples along the first axis), an .npy, a folder of .npy "
    "files (one sample each; or one subfolder per input), a folder of images, or module:function / "
    "file.py:function returning samples."
)


def _data_options(required: bool) -> Callable[[F], F]:
    """``--data`` and the image preprocessing options, gathered into one ``data: DataArgs | None`` argument."""

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(**kwargs: Any) -> Any:
            spec = kwargs.pop("data")
            image = ImageOptions(
                size=kwargs.pop("image_size"),
                layout=str(kwargs.pop("layout")).upper(),
                mean=kwargs.pop("mean") or (0.0,),
                std=kwargs.pop("std") or (1.0,),
                scale=kwargs.pop("scale"),
                bgr=kwargs.pop("bgr"),
            )
            max_samples = kwargs.pop("max_samples")
            kwargs["data"] = DataArgs(spec, image, max_samples) if spec is not None else None
            return f(**kwargs)

        options = [
            click.option("--data", "-d", metavar="DATA", required=required, help=DATA_HELP),
            click.option("--max-samples", type=click.IntRange(min=1), metavar="N", help="Read at most N samples."),
            click.option(
                "--image-size", metavar="HxW", callback=_parse_size, help="Resize images (default: the model's size)."
            ),
            click.option(
                "--layout",
                type=click.Choice(["NCHW", "NHWC"], case_sensitive=False),
                metavar="NCHW|NHWC",
                default="NCHW",
                show_default=True,
                help="Image tensor layout.",
            ),
            click.option("--mean", metavar="R,G,B", callback=_parse_floats, help="Subtract after --scale (default 0)."),
            click.option("--std", metavar="R,G,B", callback=_parse_floats, help="Divide by after --mean (default 1)."),
            click.option(
                "--scale", type=float, default=1.0 / 255.0, show_default="1/255", help="Multiply pixels by this first."
            ),
            click.option("--bgr", is_flag=True, help="Feed channels in BGR order (--mean/--std follow it)."),
        ]
        decorated: Any = wrapper
        for option in reversed(options):
            decorated = option(decorated)
        return decorated  # type: ignore[no-any-return]

    return decorate


def _quant_options(f: F) -> F:
    """How to quantize: precision, per-channel weights, calibration method, denylists, a saved calibration."""
    options = [
        click.option("--per-channel", is_flag=True, help="Quantize weights per output channel."),
        click.option(
            "--activation-type",
            type=click.Choice(["int8", "uint8", "int16", "uint16"]),
            default="int8",
            show_default=True,
            help="Integer type of activations.",
        ),
        click.option(
            "--weight-type",
            type=click.Choice(["int8", "uint8", "int16"]),
            default="int8",
            show_default=True,
            help="Integer type of weights.",
        ),
        click.option(
            "--calibration-method",
            type=click.Choice(["minmax", "percentile", "entropy"]),
            default="minmax",
            show_default=True,
            help="How activation ranges are chosen.",
        ),
        click.option(
            "--denylist-nodes",
            "denylist_nodes",
            multiple=True,
            metavar="NAMES",
            help="Leave these nodes in float: node or output-tensor names, or re:REGEX; repeat or comma-separate.",
        ),
        click.option(
            "--denylist-ops",
            "denylist_ops",
            multiple=True,
            metavar="TYPES",
            help="Leave every node of these op types in float (e.g. Softmax); repeat or comma-separate.",
        ),
        click.option(
            "--calibration",
            "-c",
            "calibration_path",
            metavar="CAL.json",
            help="Use ranges saved by 'quantdebug calibrate' instead of reading --data to calibrate.",
        ),
    ]
    decorated: Any = f
    for option in reversed(options):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]


def _config(per_channel: bool, activation_type: str, weight_type: str, calibration_method: str) -> qd.QuantConfig:
    return qd.QuantConfig(
        per_channel=per_channel,
        activation_type=activation_type,  # type: ignore[arg-type]
        weight_type=weight_type,  # type: ignore[arg-type]
        calibration_method=calibration_method,  # type: ignore[arg-type]
    )


# -- shared steps -------------------------------------------------------------------------------------


def _load_model(path: str) -> onnx.ModelProto:
    from quantdebug.pipeline.prepare._load import load_model

    return load_model(path, what="model")


def _open_dataset(data: DataArgs, model: onnx.ModelProto) -> Dataset:
    specs = input_specs(model)
    source = open_data(data.spec, inputs=specs, image=data.image, max_samples=data.max_samples, what="--data")
    if source.count is not None:
        _note(f"data: {source.description}")
    return Dataset(source, specs, what=f"data {data.spec!r}")


def _progress() -> bool | None:
    return False if _settings().quiet else None


def _calibration(
    model: onnx.ModelProto, data: DataArgs | None, calibration_path: str | None, what: str
) -> tuple[qd.Calibration, Dataset | None]:
    """The saved calibration, or a fresh one from ``data``; also the opened dataset when there is one."""
    dataset = _open_dataset(data, model) if data is not None else None
    if calibration_path is not None:
        calibration = qd.Calibration.load(calibration_path)
        _note(f"calibration: {calibration.num_samples} samples from {calibration_path}")
        return calibration, dataset
    if dataset is None:
        raise click.UsageError(f"{what} needs --data DATA to calibrate, or --calibration CAL.json")
    _note("calibrating ...")
    calibration = qd.calibrate(model, dataset, progress=_progress())
    return calibration, dataset


# -- the command group --------------------------------------------------------------------------------


def _version_message() -> str:
    import onnxruntime

    return f"%(prog)s %(version)s (onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__})"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": WIDTH})
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
    warnings.showwarning = _show_warning
    if not debug:
        try:
            import onnxruntime

            onnxruntime.set_default_logger_severity(3)  # onnxruntime's own warnings are noise here
        except Exception:  # pragma: no cover - an onnxruntime without this function
            pass


# -- calibrate ----------------------------------------------------------------------------------------


@cli.command(short_help="Save activation ranges from representative data.")
@click.argument("model", metavar="MODEL.onnx")
@_data_options(required=True)
@click.option("--output", "-o", required=True, metavar="CAL.json", help="Where to write the calibration (JSON).")
@_common_options
def calibrate(model: str, data: DataArgs, output: str) -> None:
    """Read the representative data once and save the activation ranges.

    The calibration serves every later 'quantize' or 'debug' run of the same
    model (--calibration CAL.json), with any config or denylist.
    """
    float_model = _load_model(model)
    dataset = _open_dataset(data, float_model)
    _note("calibrating ...")
    calibration = qd.calibrate(float_model, dataset, progress=_progress())
    calibration.save(output)
    _note(f"wrote {output} ({len(calibration.stats)} tensors, {calibration.num_samples} samples)")


# -- quantize -----------------------------------------------------------------------------------------


@cli.command(short_help="Write the quantized (QDQ) model.")
@click.argument("model", metavar="MODEL.onnx")
@_data_options(required=False)
@_quant_options
@click.option("--output", "-o", required=True, metavar="OUT.onnx", help="Where to write the quantized model.")
@_common_options
def quantize(
    model: str,
    data: DataArgs | None,
    per_channel: bool,
    activation_type: str,
    weight_type: str,
    calibration_method: str,
    denylist_nodes: tuple[str, ...],
    denylist_ops: tuple[str, ...],
    calibration_path: str | None,
    output: str,
) -> None:
    """Quantize MODEL to a QDQ model that onnxruntime runs, leaving denylisted nodes in float.

    Give --data to calibrate, or --calibration with ranges from 'quantdebug calibrate'.
    """
    float_model = _load_model(model)
    if calibration_path is not None and data is not None:
        _note("note: --data is not read; the ranges come from --calibration")
        data = None
    calibration, _ = _calibration(float_model, data, calibration_path, "quantize")
    config = _config(per_channel, activation_type, weight_type, calibration_method)
    qd.quantize(
        float_model,
        calibration,
        config,
        denylisted_nodes=_split_names(denylist_nodes),
        denylisted_ops=_split_names(denylist_ops),
        output_path=output,
    )
    _note(f"wrote {output}")


# -- debug --------------------------------------------------------------------------------------------


@cli.command(short_help="Compare each quantized layer with float; save statistics.")
@click.argument("model", metavar="MODEL.onnx")
@_data_options(required=True)
@click.option(
    "--quantized",
    metavar="Q.onnx",
    help="Debug this QDQ model (quantized elsewhere) instead of quantizing MODEL.",
)
@click.option(
    "--mode",
    type=click.Choice(["per-layer", "whole-model"]),
    default="per-layer",
    show_default=True,
    help="per-layer: each layer gets float inputs; whole-model: errors accumulate as deployed.",
)
@_quant_options
@click.option(
    "--output", "-o", required=True, metavar="STATS_DIR", help="Folder for layer_statistics.csv and statistics.json."
)
@click.option(
    "--top",
    type=click.IntRange(min=0),
    metavar="N",
    default=10,
    show_default=True,
    help="Rows in each summary table (0: all).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=0.0),
    metavar="X",
    default=SUSPECT_THRESHOLD,
    show_default=True,
    help="The tutorial's rule: rmse/scale above this is suspect (counted after the culprits).",
)
@click.option(
    "--culprit-samples",
    type=click.IntRange(min=0),
    metavar="N",
    default=CULPRIT_SAMPLES,
    show_default=True,
    help="Debug samples the culprits are measured on (2L+1 runs for L layers; 0: skip them).",
)
@_common_options
def debug(
    model: str,
    data: DataArgs,
    quantized: str | None,
    mode: str,
    per_channel: bool,
    activation_type: str,
    weight_type: str,
    calibration_method: str,
    denylist_nodes: tuple[str, ...],
    denylist_ops: tuple[str, ...],
    calibration_path: str | None,
    output: str,
    top: int,
    threshold: float,
    culprit_samples: int,
) -> None:
    """Quantize MODEL, compare every quantized layer with its float twin, and save the statistics.

    Writes STATS_DIR/layer_statistics.csv (TensorFlow Lite's columns) and
    STATS_DIR/statistics.json (everything, with provenance), then prints the
    likely culprits (each layer's share of the output noise, why, and the change
    to try), a denylist drawn from them, and TensorFlow Lite's view: the worst
    layers by rmse/scale, the layer's error in quantization steps (near 0.3 is
    rounding alone).
    """
    float_model = _load_model(model)
    options = qd.DebugOptions(
        denylisted_nodes=_split_names(denylist_nodes),
        denylisted_ops=_split_names(denylist_ops),
        verify_mode=mode.replace("-", "_"),  # type: ignore[arg-type]
        progress=_progress(),
    )
    if quantized is not None:
        debugger = qd.QuantizationDebugger(
            float_model,
            quantized_model=_load_model(quantized),
            debug_dataset=_open_dataset(data, float_model),
            debug_options=options,
        )
    else:
        calibration, dataset = _calibration(float_model, data, calibration_path, "debug")
        assert dataset is not None
        config = _config(per_channel, activation_type, weight_type, calibration_method)
        debugger = qd.QuantizationDebugger(
            float_model, debug_dataset=dataset, quant_config=config, debug_options=options, calibration=calibration
        )
    _note(f"debugging {len(debugger.layer_names)} layers ...")
    debugger.run()
    if culprit_samples:
        _note("measuring each layer's effect on the outputs ...")
        debugger.culprits(samples=culprit_samples)
    statistics = debugger.statistics(histograms=6)
    folder = statistics.save(output)
    samples = getattr(debugger, "samples_seen", None)
    click.echo(summary(statistics, folder, top=top, threshold=threshold, samples=samples))


def _fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, keeping both ends of long names."""
    if len(text) <= width:
        return text
    if width <= 5:
        return text[:width]
    head = (width - 2) // 2
    tail = width - 2 - head
    return text[:head] + ".." + text[-tail:]


def _named_row(name: str, width: int, before: str, after: str) -> list[str]:
    """``before + name + after`` with the name padded to ``width``; a longer name goes, whole, on lines of its
    own (wrapped at WIDTH) above the row: a name cut in the middle cannot be read or pasted into a denylist."""
    if len(name) <= width:
        return [f"{before}{name:<{width}} {after}".rstrip()]
    piece = WIDTH - 2
    pieces = [f"  {name[i : i + piece]}" for i in range(0, len(name), piece)]
    return [*pieces, f"{before}{'':<{width}} {after}".rstrip()]


def _num(value: float, spec: str) -> str:
    return "nan" if math.isnan(value) else format(value, spec)


def _layer_table(rows: list[LayerRow]) -> list[str]:
    lines = [f"  {'op type':<17} {'node':<25} {'rmse/scale':>10} {'mean sq err':>11} {'range':>9}"]
    for r in rows:
        mse = r.metrics.get("mean_squared_error", math.nan)
        numbers = f"{_num(r.rmse_over_scale, '10.4g')} {_num(mse, '11.3e')} {_num(r.range, '9.4g')}"
        op = _fit(r.op_name, 17)
        lines += _named_row(r.node_name, 25, f"  {op:<17} ", numbers)
    return lines


def _wrap_names(prefix: str, names: list[str]) -> list[str]:
    """``prefix`` followed by comma-joined names, wrapped at WIDTH."""
    lines: list[str] = []
    current = prefix
    for i, name in enumerate(names):
        piece = name + ("," if i < len(names) - 1 else "")
        if len(current) + len(piece) > WIDTH and current.strip() != prefix.strip():
            lines.append(current)
            current = " " * len(prefix)
        current += piece
    lines.append(current)
    return lines


CULPRITS_TITLE = "Likely culprits (by effect on the outputs)"


def _culprit_lines(culprits: dict[str, Any], top: int) -> list[str]:
    """Each layer's impact, SQNR quantized alone and left alone in float, reason, and the change to try."""
    rows = list(culprits.get("rows", []))

    def db(value: Any) -> str:
        return _num(number(value), ".1f")

    lines = [
        f"{CULPRITS_TITLE}, on {culprits.get('samples', '?')} samples",
        f"  all int8: output SQNR {db(culprits.get('all_quantized_sqnr_db'))} dB; impact = a layer's share of "
        "that noise",
        f"  {'#':>2} {'node':<22} {'op':<17} {'impact':>6} {'alone dB':>8} {'float dB':>8}",
        "       the reason, and the change to try",
    ]
    for i, row in enumerate(rows if top == 0 else rows[:top], 1):
        reason = str(row.get("reason", ""))
        after = (
            f"{_fit(str(row['op_name']), 17):<17} {_num(number(row['impact']), '6.3f')} "
            f"{db(row['quantized_alone_sqnr_db']):>8} {db(row['float_alone_sqnr_db']):>8}"
        )
        lines += _named_row(str(row["node_name"]), 22, f"  {i:>2} ", after)
        lines += _code_lines(
            str(row["suggested_change"]), f"       {REASONS.get(reason, reason)}; try: ", "           "
        )
    return lines


def _code_lines(code: str, first: str, rest: str) -> list[str]:
    """``code`` after ``first``, broken after commas and open brackets outside string literals so that
    each line fits WIDTH and the whole still pastes as Python (a name longer than a line stays whole)."""
    if len(first) + len(code) <= WIDTH:
        return [first + code]
    pieces, start, quote = [], 0, ""
    for i, ch in enumerate(code):
        if quote:
            quote = "" if ch == quote and code[i - 1] != "\\" else quote
        elif ch in "'\"":
            quote = ch
        elif ch in ",([":
            pieces.append(code[start : i + 1])
            start = i + 1
    pieces.append(code[start:])
    lines, current = [], first
    for piece in pieces:
        if current.strip() and len(current) + len(piece.rstrip()) > WIDTH and current not in (first, rest):
            lines.append(current.rstrip())
            current = rest + piece.lstrip()
        else:
            current += piece
    lines.append(current.rstrip())
    return lines


def _culprit_denylist(culprits: dict[str, Any], layers: int) -> list[str]:
    names = [str(n) for n in culprits.get("denylist", [])]
    if not names:
        return ["Suggested denylist: none (no layer holds a measurable share of the output noise)"]
    share = 100 * number(culprits.get("denylist_removes"))
    head = f"Suggested denylist: {len(names)} of {layers} layers, removing {share:.1f}% of the output noise"
    return [head, *_wrap_names("  --denylist-nodes ", names)]


def summary(
    statistics: Statistics,
    folder: Path,
    *,
    top: int = 10,
    threshold: float = SUSPECT_THRESHOLD,
    samples: int | None = None,
) -> str:
    """The terminal summary of a debug run: worst layers by rmse/scale and by MSE, and a suggested denylist."""
    rows = statistics.layers
    counts = dict.fromkeys(("verified", "unverified", "float", "removed"), 0)
    for entry in statistics.coverage:
        status = entry.get("status", "") or "other"
        counts[status] = counts.get(status, 0) + 1
    mode = statistics.verify_mode.replace("_", "-")
    head = f"{len(rows)} layers verified ({mode})" + (f" on {samples} samples" if samples else "")
    lines = [head]
    if statistics.coverage:
        lines.append("nodes: " + ", ".join(f"{n} {status}" for status, n in counts.items() if n))
        if counts["verified"] != len(rows):  # the two counts differ: say what each counts
            lines.append("  (a layer: one quantized output, one CSV row; its nodes count fused ones too)")
    varying = [r for r in rows if has_mean_elements(r)]
    if varying:  # TFLite's CSV keeps the mean; say why it is not a whole number
        lines.append(f"note: num_elements of {len(varying)} layers is a mean over samples of different sizes")
    lines.append(f"wrote {CSV_NAME} and {JSON_NAME} to {folder}")
    limit = len(rows) if top == 0 else top
    culprits = statistics.extras.get("culprits")
    if culprits:
        lines += ["", *_culprit_lines(culprits, top), "", *_culprit_denylist(culprits, len(rows))]
        lines += ["", "TensorFlow Lite's view: each layer's own error in quantization steps"]

    def key(value: float) -> float:
        return -math.inf if math.isnan(value) else value

    by_ratio = sorted(rows, key=lambda r: key(r.rmse_over_scale), reverse=True)[:limit]
    by_mse = sorted(rows, key=lambda r: key(r.metrics.get("mean_squared_error", math.nan)), reverse=True)[:limit]
    lines += ["", "Worst layers by rmse/scale", *_layer_table(by_ratio)]
    lines += ["", "Worst layers by mean squared error", *_layer_table(by_mse)]
    suspects = statistics.suspects(threshold)
    lines.append("")
    if culprits:  # the denylist came from the culprits; the tutorial's rule is only counted
        lines.append(f"(the tutorial's rule, rmse/scale > {threshold:g}, picks {len(suspects)} of {len(rows)} layers)")
    elif suspects:
        lines.append(f"Suggested denylist: {len(suspects)} of {len(rows)} layers have rmse/scale > {threshold:g}")
        lines += _wrap_names("  --denylist-nodes ", [r.node_name for r in suspects])
    else:
        lines.append(f"Suggested denylist: none (no layer has rmse/scale > {threshold:g})")
    return "\n".join(lines)


# -- report -------------------------------------------------------------------------------------------


@cli.command(short_help="Render saved statistics as an HTML report.")
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
@_common_options
def report(stats_dir: str, output: str | None, fix_path: str | None) -> None:
    """Render the saved statistics of a debug run as one HTML file."""
    statistics = qd.Statistics.load(stats_dir)
    found = Path(fix_path) if fix_path is not None else trace_in_folder(stats_dir)
    if found is not None:
        statistics.extras["fix"] = read_trace(found)
    target = Path(output) if output is not None else Path(stats_dir) / "report.html"
    _write_report(statistics, target)


def _write_report(statistics: Statistics, target: Path, title: str | None = None) -> None:
    try:
        from quantdebug.report import render_html
    except ImportError as exc:
        raise QuantDebugError(f"the HTML report is not available in this quantdebug ({exc})") from exc
    _io.write_text(target, render_html(statistics, title=title))
    _note(f"wrote {target}")


# -- compare ------------------------------------------------------------------------------------------


def _describe_run(label: str, path: str, statistics: Statistics) -> str:
    created = str(statistics.provenance.get("created", ""))[:16].replace("T", " ")
    parts = [f"{len(statistics.layers)} layers", statistics.verify_mode.replace("_", "-")]
    if created:
        parts.append(created)
    suffix = f" ({', '.join(parts)})"
    prefix = f"{label}: "
    return prefix + _fit(path, max(WIDTH - len(prefix) - len(suffix), 12)) + suffix


def compare_table(a: Statistics, b: Statistics, *, top: int = 20) -> list[str]:
    """Rows of the compare table, largest change of rmse/scale first; layers of one run only are flagged."""
    records = qd.compare_statistics(a, b)

    def change(rec: dict[str, Any]) -> float:
        va, vb = rec["rmse/scale A"], rec["rmse/scale B"]
        if rec["status"] == "only in A":
            return -va if not math.isnan(va) else 0.0
        if rec["status"] == "only in B":
            return vb if not math.isnan(vb) else 0.0
        delta = vb - va
        return 0.0 if math.isnan(delta) else float(delta)

    ordered = sorted(records, key=lambda rec: abs(change(rec)), reverse=True)
    shown = ordered if top == 0 else ordered[:top]
    lines = [f"  {'node':<28} {'rmse/scale A':>12} {'rmse/scale B':>12} {'change':>9}  note"]
    for rec in shown:
        status = rec["status"]
        if status == "both":
            note = ""
            pa, pb = rec["precision A"], rec["precision B"]
            if pa != pb:
                note = _fit(f"{pa}>{pb}", 12)
            delta = _num(round(rec["rmse/scale B"] - rec["rmse/scale A"], 3) + 0.0, "+9.3f")
        else:
            note = status
            delta = "-"
        va = "-" if status == "only in B" else _num(rec["rmse/scale A"], "12.4g")
        vb = "-" if status == "only in A" else _num(rec["rmse/scale B"], "12.4g")
        cells = f"{va:>12} {vb:>12} {delta:>9}  {note}".rstrip()
        lines += _named_row(rec["node_name"], 28, "  ", cells)
    if len(shown) < len(ordered):
        lines.append(f"  ... {len(ordered) - len(shown)} more rows (--top 0 shows all)")
    both = [rec for rec in records if rec["status"] == "both"]
    better = sum(1 for rec in both if rec["rmse/scale B"] < rec["rmse/scale A"] - 1e-3)
    worse = sum(1 for rec in both if rec["rmse/scale B"] > rec["rmse/scale A"] + 1e-3)
    only_a = sum(1 for rec in records if rec["status"] == "only in A")
    only_b = sum(1 for rec in records if rec["status"] == "only in B")
    lines.append("")
    lines.append(
        f"{len(both)} layers in both runs: {better} better in B, {worse} worse, "
        f"{len(both) - better - worse} within 0.001"
    )
    lines.append(f"{only_a} only in A, {only_b} only in B")
    return lines


@cli.command(short_help="Show what changed layer by layer between two runs.")
@click.argument("stats_a", metavar="STATS_A")
@click.argument("stats_b", metavar="STATS_B")
@click.option(
    "--top", type=click.IntRange(min=0), metavar="N", default=20, show_default=True, help="Rows to show (0: all)."
)
@_common_options
def compare(stats_a: str, stats_b: str, top: int) -> None:
    """Show what changed layer by layer between two debug runs (A before, B after).

    Layers are matched by tensor name; the largest changes of rmse/scale come
    first. A layer in one run only (for example one denylisted in the other)
    is flagged 'only in A' or 'only in B'.
    """
    a = qd.Statistics.load(stats_a)
    b = qd.Statistics.load(stats_b)
    lines = [_describe_run("A", stats_a, a), _describe_run("B", stats_b, b)]
    fa, fb = a.provenance.get("model_fingerprint"), b.provenance.get("model_fingerprint")
    same_kind = a.provenance.get("model_fingerprint_version", 1) == b.provenance.get("model_fingerprint_version", 1)
    if fa and fb and fa != fb and same_kind:  # fingerprints of two releases' kinds differ for one model
        lines.append("note: A and B come from different models; only tensors with the same name are compared")
    da, db = a.provenance.get("dataset_fingerprint"), b.provenance.get("dataset_fingerprint")
    if da and db and da != db:
        lines.append("note: A and B were run on different debug data")
    lines.append("")
    lines += compare_table(a, b, top=top)
    click.echo("\n".join(lines))


# -- fix and demo -------------------------------------------------------------------------------------


def _eval_function(spec: str | None) -> Any:
    if spec is None:
        return None
    return load_callable(spec, what="--eval")


@cli.command(short_help="Find the fewest changes (int16, float, ...) that meet a target.")
@click.argument("model", metavar="MODEL.onnx")
@_data_options(required=False)
@_quant_options
@click.option("--target", type=float, metavar="Q", help="Absolute quality target (in the eval function's unit).")
@click.option("--max-drop", type=click.FloatRange(min=0.0), metavar="D", help="Allowed drop from the float quality.")
@click.option(
    "--eval",
    "eval_spec",
    metavar="module:function",
    help="eval_fn(session) -> quality on your own data; default: output SQNR (dB) vs float, target 30 dB.",
)
@click.option("--lower-is-better", is_flag=True, help="The eval function is an error rate (lower is better).")
@click.option(
    "--levers",
    default=",".join(DEFAULT_LEVERS),
    show_default=True,
    metavar="L,L",
    help="Changes the search may make.",
)
@click.option(
    "--max-evals", type=click.IntRange(min=2), metavar="N", help="Budget of evaluations (default 2*log2(L)+10)."
)
@click.option("--trace", "trace_path", metavar="TRACE.json", help="Save the search trace here as it goes.")
@click.option("--resume", metavar="TRACE.json", help="Continue an interrupted search from its trace.")
@click.option("--output", "-o", required=True, metavar="FIXED.onnx", help="Where to write the fixed model.")
@click.option("--report", "report_path", metavar="report.html", help="Also write an HTML report of the search.")
@_common_options
def fix(
    model: str,
    data: DataArgs | None,
    per_channel: bool,
    activation_type: str,
    weight_type: str,
    calibration_method: str,
    denylist_nodes: tuple[str, ...],
    denylist_ops: tuple[str, ...],
    calibration_path: str | None,
    target: float | None,
    max_drop: float | None,
    eval_spec: str | None,
    lower_is_better: bool,
    levers: str,
    max_evals: int | None,
    trace_path: str | None,
    resume: str | None,
    output: str,
    report_path: str | None,
) -> None:
    """Search for the fewest named changes that make the quantized MODEL meet a quality target.

    Writes FIXED.onnx, and beside it FIXED.fix.json: the changes node by node,
    the qualities, the whole search trace, a QuantConfig that reproduces the
    model and the same fix as onnxruntime quantize_static settings.
    """
    if data is None:
        _fail("fix needs --data (debug samples; also used to calibrate unless --calibration is given)", code=2)
    eval_fn = _eval_function(eval_spec)  # before any work: a typo in --eval must not wait for calibration
    float_model = _load_model(model)
    calibration, dataset = _calibration(float_model, data, calibration_path, "fix")
    if dataset is None:
        dataset = _open_dataset(data, float_model)
    config = _config(per_channel, activation_type, weight_type, calibration_method)
    result = qd.fix(
        float_model,
        calibration=calibration,
        debug_dataset=dataset,
        quant_config=config,
        eval_fn=eval_fn,
        higher_is_better=not lower_is_better,
        target=target,
        max_drop=max_drop,
        levers=_split_names((levers,)),
        max_evals=max_evals,
        trace_path=trace_path,
        resume=resume,
        verbose=not _settings().quiet,
    )
    result.save_model(output)
    report = Path(output).with_suffix(".fix.json")
    _io.write_text(
        report,
        json.dumps(
            {
                "changes": result.changes,
                "node_precision": result.node_precision,
                "met_target": result.met_target,
                "message": result.message,
                "config": result.config.to_dict(),
                "onnxruntime": result.ort_settings,
                **result.trace_dict(),
            },
            indent=1,
            default=str,
        ),
    )
    click.echo(result.summary())
    click.echo(f"wrote {output} and {report}")
    if report_path is not None:
        # no debug run here, so the report holds the search alone (no per-layer statistics)
        searched = Statistics(layers=[], metric_names=[], extras={"fix": read_trace(report)})
        _write_report(searched, Path(report_path), title=f"quantdebug fix: {Path(model).name}")
    if not result.met_target:
        sys.exit(3)


@cli.command(short_help="Run the whole story on a real model (PP-OCRv4 text recogniser).")
@click.option(
    "--output", "-o", default="quantdebug-demo", show_default=True, metavar="DIR", help="Folder for the outputs."
)
@click.option("--fix/--no-fix", "with_fix", default=True, show_default=True, help="Also let 'fix' repair the model.")
@_common_options
def demo(output: str, with_fix: bool) -> None:
    """Quantize a real OCR model, watch int8 break it, debug it, and repair it.

    Uses the PP-OCRv4 recogniser shipped in rapidocr-onnxruntime on text lines
    rendered with a packaged font, so the expected text is known: quality is
    character accuracy. Prints the tutorial's story and writes every artifact
    (models, CSV, statistics, report) to DIR.
    """
    from quantdebug.demo import run_demo

    run_demo(output, with_fix=with_fix, progress=_progress(), echo=click.echo)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``quantdebug`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="quantdebug")


__all__ = ["cli", "main", "summary"]

if __name__ == "__main__":
    main()
