"""What every command shares: one-line errors, config loading with CLI overrides, the console."""

from __future__ import annotations

import logging
import signal
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler

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


# config key -> the option that sets it, so a bad value is reported under the name the user typed
CLI_NAMES = {
    "seed": "--seed", "demo.sites": "--sites", "demo.size_px": "--size", "demo.seed": "--seed",
    "tile.tile_size_px": "--tile-size", "tile.min_valid_fraction": "--min-valid", "tile.bands": "--bands",
    "tile.value_range": "--value-range", "tile.point_plot_size_m": "--plot-size", "tile.workers": "--workers",
    "train.backbone": "--backbone", "train.weights": "--weights", "train.mode": "--mode", "train.epochs": "--epochs",
    "train.val_sites": "--val-sites", "train.test_sites": "--test-sites", "train.shots": "--shots",
    "train.device": "--device", "predict.stride_px": "--stride", "predict.tta": "--tta",
    "predict.batch_size": "--batch-size", "predict.device": "--device", "predict.backend": "--backend",
    "evaluate.methods": "--methods", "evaluate.shots": "--shots", "evaluate.seeds": "--seeds",
    "evaluate.diffusion_model": "--diffusion-model", "evaluate.val_sites": "--val-sites",
    "evaluate.test_sites": "--test-sites", "augment.model": "--model", "augment.sites": "--sites",
    "augment.shots": "--shots", "augment.device": "--device", "augment.tokens.steps": "--token-steps",
    "augment.allow_download": "--allow-download", "augment.erase.concepts": "--erase",
    "augment.method": "--method", "augment.num_synthetic": "--num-synthetic", "augment.steps": "--steps",
    "augment.strengths": "--strengths", "augment.guidance": "--guidance", "augment.prompt": "--prompt",
    "augment.batch_size": "--batch-size", "augment.inpaint.mask": "--mask-layer",
    "tile.gsd_m": "--gsd", "train.spatial_distance_m": "--spatial-distance",
    "zones.buffer_m": "--buffer", "zones.min_area_m2": "--min-area", "zones.simplify_m": "--simplify",
    "zones.rate_l_per_ha": "--rate", "survey_plan.n": "--n", "survey_plan.min_spacing_m": "--min-spacing",
    "survey_plan.seed": "--seed", "survey_plan.start_lonlat": "--start",
}


def load_cli_config(path: Path | None, sets: list[str] | None, **overrides: Any) -> SpurgemapConfig:
    return load_config(path, overrides, sets, CLI_NAMES)
