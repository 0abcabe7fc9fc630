"""Every option that sets a config value declares its key (cli.options.Key), and a bad value is
reported under that option, for every command: walked from the typer app, not listed by hand."""

from __future__ import annotations

import inspect
import typing
from typing import Any, Literal

import annotated_types
import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from spurgemap.cli.app import app
from spurgemap.cli.options import Key, option_keys, option_name
from spurgemap.config import SpurgemapConfig

runner = CliRunner()
# Options that name files, folders or services, or steer the command itself: no config value behind them.
NOT_CONFIG = {"--config", "--set", "--overwrite", "--out", "--plots", "--survey", "--verify", "--crs", "--workers",
              "--scheduler", "--model", "--aoi", "--list", "--campaign-crs", "--synthetic", "--feature-cache",
              "--onnx", "--tokens", "--name", "--before-name", "--after-name", "--debug", "--quiet",
              # inputs and record fields of the field commands, not config values
              "--site-id", "--ortho", "--zones", "--date", "--examiner", "--site", "--allow-model-change"}


def _commands() -> list[tuple[str, Any]]:
    """(command path, its function) for every command and subcommand."""
    found = []
    for info in app.registered_commands:
        found.append((info.name or info.callback.__name__.replace("_", "-"), info.callback))
    for group in app.registered_groups:
        for info in group.typer_instance.registered_commands:
            found.append((f"{group.name} {info.name or info.callback.__name__.replace('_', '-')}", info.callback))
    return found


def _options(fn: Any) -> dict[str, tuple[str, Key | None]]:
    """Parameter -> (flag, Key) for a command function's options."""
    out = {}
    for param, hint in typing.get_type_hints(fn, include_extras=True).items():
        meta = getattr(hint, "__metadata__", ())
        info = next((m for m in meta if isinstance(m, typer.models.OptionInfo)), None)
        if info is not None:
            out[param] = (option_name(param, info), next((m for m in meta if isinstance(m, Key)), None))
    return out


def _field(key: str) -> Any:
    model: Any = SpurgemapConfig
    *sections, name = key.split(".")
    for s in sections:
        model = model.model_fields[s].annotation
    return model.model_fields[name]


def _bad_value(key: str) -> str | None:
    """A value the schema refuses: under a lower bound, over an upper one, or outside a Literal."""
    field = _field(key)
    ann = field.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)] or [ann]
    if typing.get_origin(args[0]) is Literal:
        return "nonsense"
    numeric = args[0] in (int, float)
    for m in field.metadata:
        if numeric and isinstance(m, annotated_types.Ge | annotated_types.Gt):
            return str(m.ge - 1 if isinstance(m, annotated_types.Ge) else m.gt)
        if numeric and isinstance(m, annotated_types.Le | annotated_types.Lt):
            return str(m.le + 1 if isinstance(m, annotated_types.Le) else m.lt)
    seed = key.rsplit(".", 1)[-1] == "seed"  # any integer is a seed
    return "-1" if numeric and not seed else None  # the field's own validator: sizes, counts, rates are not negative


COMMANDS = _commands()


def test_the_walk_sees_every_command() -> None:
    names = {n for n, _ in COMMANDS}
    assert {"tile", "train", "predict", "evaluate", "demo-data", "demo", "survey-plan", "zones", "change",
            "augment run", "augment learn-tokens"} <= names
    assert len(names) == len(get_command(app).commands) - 1 + len(app.registered_groups[0].typer_instance
                                                                 .registered_commands)


@pytest.mark.parametrize(("name", "fn"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_config_option_declares_its_key(name: str, fn: Any) -> None:
    for flag, key in _options(fn).values():
        if key is None:
            assert flag in NOT_CONFIG, f"{name} {flag}: declare the config key it sets with Key(...)"
        else:
            _field(key.path)  # a key that names no config value fails here
            assert option_keys(fn)[key.path] == flag


def _required(fn: Any) -> list[str]:
    """Placeholder arguments and required options, enough to reach the config."""
    args: list[str] = []
    for param, hint in typing.get_type_hints(fn, include_extras=True).items():
        if param == "return":
            continue
        meta = getattr(hint, "__metadata__", ())
        default = inspect.signature(fn).parameters[param].default
        if default is not inspect.Parameter.empty:
            continue
        info = next((m for m in meta if isinstance(m, typer.models.ArgumentInfo | typer.models.OptionInfo)), None)
        if isinstance(info, typer.models.OptionInfo):
            args += [option_name(param, info), "x"]
        else:
            args.append("x")
    return args


CASES = [(name, fn, flag, key.path) for name, fn in COMMANDS for flag, key in _options(fn).values()
         if key is not None and _bad_value(key.path) is not None]


def test_every_command_with_config_options_is_checked_for_values() -> None:
    checked = {n for n, *_ in CASES}
    assert checked >= {"tile", "train", "predict", "demo-data", "demo", "survey-plan", "zones", "augment run",
                       "augment learn-tokens"}


@pytest.mark.parametrize(("name", "fn", "flag", "key"), CASES, ids=[f"{n} {f}" for n, _, f, _ in CASES])
def test_a_bad_value_names_the_option_typed(name: str, fn: Any, flag: str, key: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # placeholders name files here, should a command get further than it must
    bad = _bad_value(key)
    res = runner.invoke(app, [*name.split(), *_required(fn), flag, str(bad)])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith(f"spurgemap: error: {flag} "), res.stderr
    assert bad in res.stderr.splitlines()[0] and len(res.stderr.strip().splitlines()) == 1
