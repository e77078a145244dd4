"""The command line as a package: the console script's entry point resolves, and every option's choices and
defaults are the lists and values where they are defined (config.py, QuantConfig, ImageOptions, fix, thresholds)."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import click
import pytest

import quantdebug.cli
from quantdebug.cli import cli
from quantdebug.config import ACTIVATION_TYPES, CALIBRATION_METHODS, VERIFY_MODES, WEIGHT_TYPES, QuantConfig
from quantdebug.data import LAYOUTS, ImageOptions
from quantdebug.fix import CULPRIT_SAMPLES, DEFAULT_LEVERS
from quantdebug.thresholds import SUSPECT_RMSE_OVER_SCALE

ROOT = Path(__file__).resolve().parents[2]


def _option(command: str, name: str) -> click.Option:
    found = {p.name: p for p in cli.commands[command].params if isinstance(p, click.Option)}
    return found[name]


def test_the_console_script_names_main() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["quantdebug"]
    module, attr = target.split(":")
    assert getattr(importlib.import_module(module), attr) is quantdebug.cli.main
    assert importlib.util.find_spec("quantdebug.cli.__main__") is not None  # python -m quantdebug.cli


@pytest.mark.parametrize("command", ["quantize", "debug", "fix"])
def test_quantize_options_come_from_config(command: str) -> None:
    defaults = QuantConfig()
    for name, choices, default in (
        ("activation_type", ACTIVATION_TYPES, defaults.activation_type),
        ("weight_type", WEIGHT_TYPES, defaults.weight_type),
        ("calibration_method", CALIBRATION_METHODS, defaults.calibration_method),
    ):
        option = _option(command, name)
        assert isinstance(option.type, click.Choice)
        assert tuple(option.type.choices) == choices, name
        assert option.default == default, name


@pytest.mark.parametrize("command", ["calibrate", "quantize", "debug", "fix"])
def test_image_options_come_from_the_data_package(command: str) -> None:
    layout = _option(command, "layout")
    assert isinstance(layout.type, click.Choice)
    assert tuple(layout.type.choices) == LAYOUTS
    assert layout.default == ImageOptions().layout
    assert _option(command, "scale").default == ImageOptions().scale


def test_debug_and_fix_defaults_come_from_where_they_are_defined() -> None:
    mode = _option("debug", "mode")
    assert isinstance(mode.type, click.Choice)
    assert [m.replace("-", "_") for m in mode.type.choices] == list(VERIFY_MODES)
    assert _option("debug", "threshold").default == SUSPECT_RMSE_OVER_SCALE
    assert _option("debug", "culprit_samples").default == CULPRIT_SAMPLES
    assert _option("fix", "levers").default == ",".join(DEFAULT_LEVERS)
