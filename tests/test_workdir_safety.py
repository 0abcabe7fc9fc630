"""--overwrite replaces only what spurgemap wrote, and no --out may equal, contain or lie inside an input."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fieldwork_maps import make_pct, write_maps
from typer.testing import CliRunner

from spurgemap.cli.app import app
from spurgemap.core.errors import InputError
from spurgemap.core.workdir import MARKER, check_out_vs_inputs, remove_stale_partials, staged_dir

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root (hidden ones too) with its SHA-256: 'intact' means this is unchanged."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _src(tmp: Path) -> Path:
    """An input folder with one dummy file of each kind, a sub-folder and the crew's notes."""
    src = tmp / "src"
    (src / "sub").mkdir(parents=True)
    for name in ("o.tif", "o2.tif", "p.geojson", "m.spurge", "sub/x.tif"):
        (src / name).write_bytes(b"not really " + name.encode())
    (src / "NOTES.txt").write_text("field notes, not from spurgemap\n")
    return src


# command -> (args with {S} the input folder and {O} the output, which inputs' folder to aim at)
COMMANDS: dict[str, Callable[[str, str], list[str]]] = {
    "tile": lambda s, o: ["tile", f"{s}/o.tif", "--plots", f"{s}/p.geojson", "--out", o],
    "train": lambda s, o: ["train", f"{s}/sub", "--out", o],
    "augment": lambda s, o: ["augment", "run", f"{s}/sub", "--out", o, "--model", f"{s}/m.spurge"],
    "learn-tokens": lambda s, o: ["augment", "learn-tokens", f"{s}/sub", "--out", o, "--model", f"{s}/m.spurge"],
    "predict": lambda s, o: ["predict", f"{s}/o.tif", "--model", f"{s}/m.spurge", "--out", o],
    "campaign": lambda s, o: ["predict", f"{s}/o.tif", f"{s}/o2.tif", "--model", f"{s}/m.spurge", "--out", o],
    "evaluate": lambda s, o: ["evaluate", f"{s}/sub", "--out", o, "--methods", "baseline"],
    "survey-plan": lambda s, o: ["survey-plan", f"{s}/sub", "--out", o],
    "zones": lambda s, o: ["zones", f"{s}/sub", "--out", o],
    "change": lambda s, o: ["change", f"{s}/sub", f"{s}/sub", "--out", o],
}
FILE_INPUTS = {"tile", "predict", "campaign"}  # commands whose inputs here are files only
OVERWRITES = {"tile", "train", "augment", "learn-tokens", "predict", "campaign", "survey-plan", "zones", "change"}


def _refused(args: list[str], *needles: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_out_that_contains_an_input_is_refused(command: str, tmp_path: Path) -> None:
    src = _src(tmp_path)
    before = snapshot(src)
    args = COMMANDS[command](str(src), str(src)) + (["--overwrite"] if command in OVERWRITES else [])
    _refused(args, f"--out {src}: contains the input")
    assert snapshot(src) == before


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - FILE_INPUTS))
def test_an_out_inside_an_input_folder_is_refused(command: str, tmp_path: Path) -> None:
    src = _src(tmp_path)
    before = snapshot(src)
    _refused(COMMANDS[command](str(src), str(src / "sub" / "out")), "lies inside the input")
    assert snapshot(src) == before and not (src / "sub" / "out").exists()


@pytest.mark.parametrize("command", sorted(FILE_INPUTS))
def test_an_out_that_is_an_input_file_is_refused(command: str, tmp_path: Path) -> None:
    src = _src(tmp_path)
    before = snapshot(src)
    _refused([*COMMANDS[command](str(src), str(src / "o.tif")), "--overwrite"], "is the input")
    assert snapshot(src) == before


@pytest.mark.parametrize("command", sorted(OVERWRITES | {"demo", "demo-data", "evaluate"}))
def test_overwrite_refuses_a_folder_spurgemap_did_not_write(command: str, tmp_path: Path) -> None:
    src = _src(tmp_path)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "NOTES.txt").write_text("keep me\n")
    (other / "summary.json").write_text("{}")  # a name spurgemap uses, written by someone else
    before = snapshot(other), snapshot(src)
    args = [command, str(other)] if command.startswith("demo") else COMMANDS[command](str(src), str(other))
    _refused([*args] if command == "evaluate" else [*args, "--overwrite"], f"{other}: was not written by spurgemap")
    assert (snapshot(other), snapshot(src)) == before


def test_export_refuses_to_write_over_its_bundle(tmp_path: Path) -> None:
    src = _src(tmp_path)
    before = snapshot(src)
    _refused(["export", str(src / "m.spurge"), "--onnx", str(src / "m.spurge")], "is the input")
    _refused(["export", str(src / "m.spurge"), "--onnx", str(src)], "contains the input")
    assert snapshot(src) == before


# ------------------------------------------------------------------------------ the data-loss cases

@pytest.fixture
def predicted(tmp_path: Path) -> Path:
    """maps/site01 and maps/site02 as predict writes them, plus a crew's NOTES.txt in maps/."""
    maps = tmp_path / "maps"
    for i, site in enumerate(("site01", "site02")):
        write_maps(maps / site, make_pct(i), name="ortho")
        (maps / site / "config.yaml").write_text("schema_version: 1\n")
    (maps / "NOTES.txt").write_text("spray crew phone numbers\n")
    return maps


@pytest.mark.parametrize("command", ["zones", "survey-plan"])
def test_fieldwork_over_its_own_maps_is_refused(predicted: Path, command: str) -> None:
    before = snapshot(predicted)
    site = predicted / "site01"
    _refused([command, str(site), "--out", str(site), "--overwrite"], "is the input")
    _refused([command, str(site), "--out", str(predicted), "--overwrite"], "contains the input")
    assert snapshot(predicted) == before


def test_overwrite_replaces_spurgemap_folders_new_and_old(predicted: Path, tmp_path: Path) -> None:
    out = tmp_path / "zones"
    res = runner.invoke(app, ["zones", str(predicted / "site01"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    stamp = json.loads((out / MARKER).read_text())
    assert stamp["command"] == "zones" and stamp["version"]
    res = runner.invoke(app, ["zones", str(predicted / "site02"), "--out", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "site02" in json.loads((out / "zones_summary.json").read_text())["map"]
    # a folder from before the marker: spurgemap's resolved config.yaml / zones_summary.json layout
    (out / MARKER).unlink()
    (out / "extra.txt").write_text("x")
    res = runner.invoke(app, ["zones", str(predicted / "site01"), "--out", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert not (out / "extra.txt").exists() and (out / MARKER).is_file()


def test_symlinked_out_is_seen_through(tmp_path: Path) -> None:
    src = _src(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(src, target_is_directory=True)
    with pytest.raises(InputError, match="is the input"):
        check_out_vs_inputs(link, [src])
    check_out_vs_inputs(tmp_path / "srcs", [src])  # a shared name prefix is not containment


# ------------------------------------------------------------------------------ impossible outputs

def test_an_out_under_a_file_or_in_a_read_only_folder_is_one_line(predicted: Path, tmp_path: Path) -> None:
    site = str(predicted / "site01")
    _refused(["zones", site, "--out", str(predicted / "NOTES.txt" / "zones")], "is a file, not a folder")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        _refused(["zones", site, "--out", str(locked / "zones")], "is read-only")
        _refused(["survey-plan", site, "--out", str(locked / "a" / "plan")], "is read-only")
    finally:
        locked.chmod(0o755)
    assert list(locked.iterdir()) == []


# ------------------------------------------------------------------------------ partial folders

def test_stale_partials_are_removed_at_the_next_start(tmp_path: Path) -> None:
    out = tmp_path / "zones"
    dead = tmp_path / ".zones.partial-999999999-deadbeef"  # no such process
    legacy = tmp_path / ".zones.partial-0badc0de"  # the name before pids were recorded
    alive = tmp_path / f".zones.partial-{os.getppid()}-cafecafe"  # a running process owns it
    other = tmp_path / ".tiles.partial-999999999-deadbeef"  # another output's
    for d in (dead, legacy, alive, other):
        (d / "x").mkdir(parents=True)
        os.utime(d, (time.time() - 3600, time.time() - 3600))
    with staged_dir(out, False, "test") as tmp:
        (tmp / "a.txt").write_text("a")
    assert not dead.exists() and not legacy.exists()
    assert alive.exists() and other.exists()
    assert (out / "a.txt").read_text() == "a" and json.loads((out / MARKER).read_text())["command"] == "test"
    assert remove_stale_partials(out) == []


SLOW_ZONES = """
import sys, time
from pathlib import Path
import spurgemap.fieldwork.zones as z
READY = Path(sys.argv[-1])
def slow(path, *a, **k):
    READY.write_text("writing")
    time.sleep(60)
z.zones_preview = slow
sys.argv = ["spurgemap", *sys.argv[1:-1]]
from spurgemap.cli.app import run
run()
"""


def test_sigterm_removes_the_partial_folder(predicted: Path, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    out = tmp_path / "zones"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_ZONES, "zones", str(predicted / "site01"), "--out",
                             str(out), str(ready)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not ready.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert ready.exists(), proc.stderr.read() if proc.stderr else ""
        assert list(tmp_path.glob(".zones.partial-*"))  # the staged folder exists mid-run
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "spurgemap: terminated"
    assert not out.exists() and not list(tmp_path.glob(".zones.*"))


def test_a_read_only_out_folder_is_refused(predicted: Path, tmp_path: Path) -> None:
    out = tmp_path / "zones"
    assert runner.invoke(app, ["zones", str(predicted / "site01"), "--out", str(out)]).exit_code == 0
    before = snapshot(out)
    out.chmod(0o555)
    try:
        _refused(["zones", str(predicted / "site02"), "--out", str(out), "--overwrite"],
                 f"--out {out}: the folder is read-only")
    finally:
        out.chmod(0o755)
    assert snapshot(out) == before


def test_an_os_error_mid_run_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    import typer

    from spurgemap.cli.options import STATE, run_guarded

    monkeypatch.setitem(STATE, "debug", False)

    def denied() -> None:
        raise PermissionError(13, "Permission denied", "/data/out/zones.gpkg")

    with pytest.raises(typer.Exit) as exc:
        run_guarded(denied)
    assert exc.value.exit_code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "spurgemap: error: /data/out/zones.gpkg: Permission denied; check the folder's permissions and free "
        "space, or choose another --out"]

    def nameless() -> None:
        raise OSError("no file")

    with pytest.raises(typer.Exit) as exc:
        run_guarded(nameless)
    assert exc.value.exit_code == 1 and "unexpected error: OSError: no file" in capsys.readouterr().err


@pytest.mark.parametrize(("layout", "ours"), [
    ({"config.yaml": "schema_version: 1\nseed: 0\n"}, True),  # any stage's resolved config
    ({"zones_summary.json": "{}", "zones.gpkg": ""}, True),
    ({"visits.gpx": "", "summary.json": "{}"}, True),  # survey-plan
    ({"runs/a/metrics.json": "{}", "results.csv": ""}, True),  # evaluate
    ({".work/key": "abc"}, True),  # a killed predict/train run
    ({"config.yaml": "site: 3\n", "summary.json": "{}"}, False),  # someone else's config
    ({"results.csv": ""}, False),
])
def test_folders_from_before_the_marker(tmp_path: Path, layout: dict[str, str], ours: bool) -> None:
    from spurgemap.core.workdir import written_by_spurgemap

    for name, text in layout.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert written_by_spurgemap(tmp_path) is ours
