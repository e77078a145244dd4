"""Options several commands take: ``--data`` with the image preprocessing options, how to quantize
(precision, calibration method, denylists, a saved calibration), and the steps they feed
(opening the dataset, calibrating). Choices come from where they are defined: config.py's lists and
the data package's layouts."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import onnx

import quantdebug as qd
from quantdebug.cli._common import F, note, progress
from quantdebug.config import ACTIVATION_TYPES, CALIBRATION_METHODS, WEIGHT_TYPES
from quantdebug.data import LAYOUTS, Dataset, ImageOptions, input_specs, open_data

DEFAULTS = qd.QuantConfig()  # the quantize options' defaults are QuantConfig's
IMAGE_DEFAULTS = ImageOptions()  # and the image options' are ImageOptions'


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


def split_names(values: Sequence[str]) -> tuple[str, ...]:
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


def data_options(required: bool) -> Callable[[F], F]:
    """``--data`` and the image preprocessing options, gathered into one ``data: DataArgs | None`` argument."""

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(**kwargs: Any) -> Any:
            spec = kwargs.pop("data")
            image = ImageOptions(
                size=kwargs.pop("image_size"),
                layout=str(kwargs.pop("layout")).upper(),
                mean=kwargs.pop("mean") or IMAGE_DEFAULTS.mean,
                std=kwargs.pop("std") or IMAGE_DEFAULTS.std,
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
                type=click.Choice(LAYOUTS, case_sensitive=False),
                metavar="|".join(LAYOUTS),
                default=IMAGE_DEFAULTS.layout,
                show_default=True,
                help="Image tensor layout.",
            ),
            click.option("--mean", metavar="R,G,B", callback=_parse_floats, help="Subtract after --scale (default 0)."),
            click.option("--std", metavar="R,G,B", callback=_parse_floats, help="Divide by after --mean (default 1)."),
            click.option(
                "--scale",
                type=float,
                default=IMAGE_DEFAULTS.scale,
                show_default="1/255",
                help="Multiply pixels by this first.",
            ),
            click.option("--bgr", is_flag=True, help="Feed channels in BGR order (--mean/--std follow it)."),
        ]
        return _with_options(wrapper, options)  # type: ignore[no-any-return]

    return decorate


@dataclasses.dataclass(frozen=True)
class QuantArgs:
    """What the quantize options asked for."""

    config: qd.QuantConfig
    denylisted_nodes: tuple[str, ...]
    denylisted_ops: tuple[str, ...]
    calibration_path: str | None


def quant_options(f: F) -> F:
    """How to quantize (precision, per-channel weights, calibration method, denylists, a saved calibration),
    gathered into one ``quant: QuantArgs`` argument."""

    @functools.wraps(f)
    def wrapper(**kwargs: Any) -> Any:
        flags = {k: kwargs.pop(k) for k in ("per_channel", "activation_type", "weight_type", "calibration_method")}
        config = qd.QuantConfig(**flags)
        config_path = kwargs.pop("config_path")
        if config_path is not None:  # the file is the base; a flag given away from its default still wins
            changed = {k: v for k, v in flags.items() if v != getattr(DEFAULTS, k)}
            try:
                saved = json.loads(Path(config_path).read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise click.BadParameter(f"{config_path} is not JSON ({exc})", param_hint="--config") from None
            config = dataclasses.replace(qd.QuantConfig.from_dict(saved), **changed)
        kwargs["quant"] = QuantArgs(
            config=config,
            denylisted_nodes=split_names(kwargs.pop("denylist_nodes")),
            denylisted_ops=split_names(kwargs.pop("denylist_ops")),
            calibration_path=kwargs.pop("calibration_path"),
        )
        return f(**kwargs)

    options = [
        click.option("--per-channel", is_flag=True, help="Quantize weights per output channel."),
        click.option(
            "--activation-type",
            type=click.Choice(ACTIVATION_TYPES),
            default=DEFAULTS.activation_type,
            show_default=True,
            help="Integer type of activations.",
        ),
        click.option(
            "--weight-type",
            type=click.Choice(WEIGHT_TYPES),
            default=DEFAULTS.weight_type,
            show_default=True,
            help="Integer type of weights.",
        ),
        click.option(
            "--calibration-method",
            type=click.Choice(CALIBRATION_METHODS),
            default=DEFAULTS.calibration_method,
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
            "--config",
            "config_path",
            type=click.Path(exists=True, dir_okay=False),
            metavar="CONFIG.json",
            help="Start from this QuantConfig (JSON, e.g. suggested_config.json from 'quantdebug debug').",
        ),
        click.option(
            "--calibration",
            "-c",
            "calibration_path",
            metavar="CAL.json",
            help="Use ranges saved by 'quantdebug calibrate' instead of reading --data to calibrate.",
        ),
    ]
    return _with_options(wrapper, options)  # type: ignore[no-any-return]


def _with_options(f: Any, options: list[Callable[[Any], Any]]) -> Any:
    """``f`` decorated with ``options``, the first listed outermost (as when written as decorators above it)."""
    for option in reversed(options):
        f = option(f)
    return f


def open_dataset(data: DataArgs, model: onnx.ModelProto) -> Dataset:
    specs = input_specs(model)
    source = open_data(data.spec, inputs=specs, image=data.image, max_samples=data.max_samples, what="--data")
    if source.count is not None:
        note(f"data: {source.description}")
    return Dataset(source, specs, what=f"data {data.spec!r}")


def calibrate_or_load(
    model: onnx.ModelProto, data: DataArgs | None, calibration_path: str | None, what: str
) -> tuple[qd.Calibration, Dataset | None]:
    """The saved calibration, or a fresh one from ``data``; also the opened dataset when there is one."""
    dataset = open_dataset(data, model) if data is not None else None
    if calibration_path is not None:
        calibration = qd.Calibration.load(calibration_path)
        note(f"calibration: {calibration.num_samples} samples from {calibration_path}")
        return calibration, dataset
    if dataset is None:
        raise click.UsageError(f"{what} needs --data DATA to calibrate, or --calibration CAL.json")
    note("calibrating ...")
    calibration = qd.calibrate(model, dataset, progress=progress())
    return calibration, dataset
