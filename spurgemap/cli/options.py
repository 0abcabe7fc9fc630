"""What every command shares: one-line errors, config loading with CLI overrides, the console."""

from __future__ import annotations

import logging
import signal
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler

# typer >= 0.20 vendors click; its context is where the running command lives (typer re-exports no getter)
from typer._click.globals import get_current_context

from spurgemap.config import SpurgemapConfig, load_config
from spurgemap.core.errors import InputError, SpurgemapError

out = Console()
T = TypeVar("T")
STATE: dict[str, bool] = {"debug": False}

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML config (default: configs/default.yaml).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config value: section.key=value.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", help="Dask LocalCluster worker processes (default: one per 2 cores, or per GPU).")]
SchedulerOpt = Annotated[str | None, typer.Option(
    "--scheduler", help="Dask scheduler address, e.g. tcp://host:8786; its workers must see the same paths.")]


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's kill, `timeout`), raised in the main thread so that staged output folders
    are removed on the way out, as for Ctrl-C."""


def install_sigterm() -> None:
    """Turn SIGTERM into `Terminated` (the default action would leave `.X.partial-*` folders behind)."""
    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


def setup_logging(debug: bool, quiet: bool) -> None:
    handler = RichHandler(console=Console(stderr=True), show_path=debug, show_time=False,
                          rich_tracebacks=False)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO,
                        format="%(message)s", handlers=[handler], force=True)
    for noisy in ("rasterio", "fiona", "pyogrio", "matplotlib", "PIL", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    route_warnings()


def route_warnings() -> None:
    """Python warnings (rasterio's NotGeoreferencedWarning, ...) become one log line, category and
    message only: the user sees what happened, never a site-packages path and source line."""
    logger = logging.getLogger("py.warnings")

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        text = str(message).strip().splitlines()[0] if str(message).strip() else ""
        logger.warning("%s: %s", category.__name__, text)

    warnings.showwarning = show


def split_list(text: str | None) -> list[str] | None:
    """A comma-separated option as a list; None (option not given) keeps the config's value."""
    return [s.strip() for s in text.split(",") if s.strip()] if text is not None else None


def warn_tiny_model(consequence: str) -> None:
    """The one loud line every command prints when a tiny random diffusion model made its outputs."""
    out.print(f"[bold yellow]warning:[/] a TINY RANDOM diffusion model was used: {consequence}")


def run_guarded(fn: Callable[[], T]) -> T:
    """Errors become one line on stderr and a non-zero exit; --debug re-raises for a traceback."""
    try:
        return fn()
    except SpurgemapError as exc:
        if STATE["debug"]:
            raise
        typer.echo(f"spurgemap: error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        typer.echo(f"spurgemap: {'terminated' if terminated else 'interrupted'}", err=True)
        raise typer.Exit(143 if terminated else 130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        if STATE["debug"]:
            raise
        if isinstance(exc, OSError) and exc.filename:  # a folder read-only or full mid-run: file and reason
            typer.echo(f"spurgemap: error: {exc.filename}: {exc.strerror or type(exc).__name__}; check the "
                       "folder's permissions and free space, or choose another --out", err=True)
            raise typer.Exit(2) from None
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        typer.echo(f"spurgemap: unexpected error: {type(exc).__name__}: {msg} "
                   "(run with --debug for the traceback)", err=True)
        raise typer.Exit(1) from None


def parse_numbers(text: str | None, n: int, name: str, kind: type = float) -> tuple[Any, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{name} {text!r}: expected {n} comma-separated numbers") from None
    if len(values) != n:
        raise InputError(f"{name} {text!r}: expected {n} comma-separated numbers")
    return values


@dataclass(frozen=True)
class Key:
    """The config key an option sets, declared in the option's annotation next to its name.

    Why: a bad value is then reported under the option the user typed (`tile --threads 0`, not
    `--workers`), and no hand-kept table can drift from the options (tests/test_cli_values.py walks them).
    """

    path: str


def option_name(param: str, info: Any) -> str:
    """The first long flag typer gives a parameter (its declared one, else --param-name)."""
    # under Annotated, typer.Option("--name") stores the flag as its `default`
    first = [info.default] if isinstance(info.default, str) else []
    decls = [d for d in [*first, *(getattr(info, "param_decls", None) or ())] if d.startswith("--")]
    return decls[0].split("/")[0] if decls else "--" + param.replace("_", "-")


def option_keys(command: Callable[..., Any]) -> dict[str, str]:
    """Config key -> option name, from the `Key` in each option's annotation of a command function."""
    names: dict[str, str] = {}
    for param, hint in typing.get_type_hints(command, include_extras=True).items():
        meta = getattr(hint, "__metadata__", ())
        key = next((m for m in meta if isinstance(m, Key)), None)
        info = next((m for m in meta if isinstance(m, typer.models.OptionInfo)), None)
        if key is not None and info is not None:
            names[key.path] = option_name(param, info)
    return names


def _current_command() -> Callable[..., Any] | None:
    ctx = get_current_context(silent=True)
    callback = ctx.command.callback if ctx is not None else None
    return getattr(callback, "__wrapped__", callback)


def load_cli_config(path: Path | None, sets: list[str] | None, **overrides: Any) -> SpurgemapConfig:
    """The config with the command's values; an error names the option of the running command."""
    command = _current_command()
    return load_config(path, overrides, sets, option_keys(command) if command else None)
