"""What every command shares: the ``--debug``/``--quiet`` settings, one-line errors, progress notes,
warnings printed as ``warning: ...`` lines while a command runs, and loading the model."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TextIO, TypeVar

import click
import onnx

from quantdebug.errors import QuantDebugError
from quantdebug.pipeline.prepare import load_model as _load

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass
class Settings:
    """Flags shared by every command: ``--debug`` (tracebacks) and ``--quiet`` (no progress)."""

    debug: bool = False
    quiet: bool = False


def settings() -> Settings:
    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(Settings) if ctx is not None else None
    return found if found is not None else Settings()


def one_line(exc: BaseException) -> str:
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


class Group(click.Group):
    """Lists commands in workflow order; turns every error but a usage error into one ``error: ...`` line, exit 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            found = ctx.find_object(Settings)
            if found is not None and found.debug:
                raise
            click.echo(f"error: {one_line(exc)}", err=True)
            ctx.exit(1)


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    click.get_current_context().exit(code)


def note(message: str) -> None:
    """A progress note on stderr; ``--quiet`` silences it."""
    if not settings().quiet:
        click.echo(message, err=True)


def progress() -> bool | None:
    return False if settings().quiet else None


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    click.echo(f"warning: {' '.join(str(message).split())}", err=True)


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Warnings print as one ``warning: ...`` line while the command runs; the process's own hook is put back
    afterwards, even on an error, so that a program calling ``main()`` keeps its warning handling."""
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        yield
    finally:
        warnings.showwarning = previous


def _set_flag(name: str) -> Callable[[click.Context, click.Parameter, bool], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            setattr(ctx.ensure_object(Settings), name, True)

    return callback


def common_options(f: F) -> F:
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


def load_model(path: str) -> onnx.ModelProto:
    return _load(path, what="model")
