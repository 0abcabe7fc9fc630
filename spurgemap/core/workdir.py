"""Output folders appear whole or not at all, and never at the cost of something spurgemap did not write.

Stages write to a hidden sibling, then rename. Every output folder carries a `.spurgemap` marker
(command, version): `--overwrite` replaces only folders with one (or, for folders written before the
marker existed, spurgemap's own layout), and no `--out` may equal, contain or lie inside an input.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from spurgemap.core.errors import InputError

MARKER = ".spurgemap"
_STARTED = time.time()  # partial folders older than this process and owned by no live process are stale
# files that only spurgemap writes, recognised in folders from before the marker existed
_LEGACY_FILES = ("zones_summary.json", "change_summary.json", "campaign_summary.csv", "model.spurge", "visits.gpx")


def _version() -> str:
    try:
        return metadata.version("spurgemap")
    except metadata.PackageNotFoundError:
        return "unknown"


def write_marker(folder: Path, command: str) -> None:
    """Tag `folder` as written by spurgemap `command` (what --overwrite later checks)."""
    stamp = {"command": command or "spurgemap", "version": _version(),
             "written": datetime.now(UTC).isoformat(timespec="seconds")}
    (Path(folder) / MARKER).write_text(json.dumps(stamp) + "\n")


def written_by_spurgemap(folder: Path) -> bool:
    """True for a folder with the marker, or with the layout spurgemap wrote before the marker existed:
    a resolved `config.yaml` (it starts with `schema_version:`), a stage checkpoint or a file only
    spurgemap writes."""
    folder = Path(folder)
    if (folder / MARKER).is_file() or (folder / ".work" / "key").is_file():
        return True
    if any((folder / name).is_file() for name in _LEGACY_FILES):
        return True
    if (folder / "runs").is_dir() and (folder / "results.csv").is_file():  # an evaluate grid
        return True
    cfg = folder / "config.yaml"
    try:
        return cfg.is_file() and cfg.read_text(errors="replace").lstrip().startswith("schema_version:")
    except OSError:
        return False


def _real(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def check_out_vs_inputs(out: Path, inputs: Iterable[str | Path | None], option: str = "--out") -> None:
    """Refuse an output that equals, contains or lies inside an input: replacing it would destroy the input."""
    target = _real(out)
    for given in inputs:
        if given is None:
            continue
        src = _real(given)
        if target == src:
            problem = f"is the input {given}"
        elif src.is_relative_to(target):
            problem = f"contains the input {given}"
        elif target.is_relative_to(src):
            problem = f"lies inside the input {given}"
        else:
            continue
        raise InputError(f"{option} {out}: {problem}; choose an --out outside every input")


def _read_only(folder: Path) -> bool:
    """No write access, or no write bit for anyone (what `chmod a-w` means, also for root)."""
    return not os.access(folder, os.W_OK) or not stat.S_IMODE(folder.stat().st_mode) & 0o222


def _check_writable(out: Path) -> None:
    """`out` (if it exists) and the first existing folder above it must be writable folders."""
    target = _real(out)
    if target.is_dir() and _read_only(target):
        raise InputError(f"--out {out}: the folder is read-only; choose another --out")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"--out {out}: {parent} is a file, not a folder; choose another --out")
    if _read_only(parent):
        raise InputError(f"--out {out}: folder {parent} is read-only; choose another --out")


def preflight(out: Path, overwrite: bool, inputs: Iterable[str | Path | None] = ()) -> None:
    """The checks a resumable stage can make before reading anything: `out` is a possible folder, apart
    from the inputs, and --overwrite would replace only a folder spurgemap wrote."""
    out = Path(out)
    check_out_vs_inputs(out, inputs)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another --out")
    _check_writable(out)
    if overwrite and out.exists() and any(out.iterdir()) and not written_by_spurgemap(out):
        raise InputError(f"{out}: was not written by spurgemap (no {MARKER} marker); --overwrite replaces "
                         "only spurgemap's own folders; choose another --out")


def check_target(out: Path, overwrite: bool, inputs: Iterable[str | Path | None] = ()) -> None:
    """Fail before any work if `out` cannot or must not be (re)placed."""
    out = Path(out)
    preflight(out, overwrite, inputs)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: already exists; pass --overwrite to replace it")


def _owner_alive(name: str) -> bool:
    """Partial folders are named .X.partial-<pid>-<hex>: alive while that process runs."""
    pid = name.rsplit(".partial-", 1)[-1].rsplit(".old-", 1)[-1].split("-")[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(out: Path) -> list[Path]:
    """Hidden `.X.partial-*` / `.X.old-*` siblings left by a killed run (older than this one, owner gone)."""
    out = Path(out)
    removed: list[Path] = []
    if not out.parent.is_dir():
        return removed
    for pattern in (f".{out.name}.partial-*", f".{out.name}.old-*"):
        for sib in out.parent.glob(pattern):
            try:
                stale = sib.lstat().st_mtime < _STARTED and not _owner_alive(sib.name)
            except OSError:
                continue
            if stale:
                shutil.rmtree(sib, ignore_errors=True) if sib.is_dir() else sib.unlink(missing_ok=True)
                removed.append(sib)
    return removed


def claim_dir(out: Path, command: str, inputs: Iterable[str | Path | None] = ()) -> Path:
    """For stages that add to their folder over runs (evaluate's cache, campaigns): check, create, mark."""
    out = Path(out)
    preflight(out, False, inputs)
    if out.exists() and any(out.iterdir()) and not written_by_spurgemap(out):
        raise InputError(f"{out}: was not written by spurgemap (no {MARKER} marker); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).exists():
        write_marker(out, command)
    return out


@contextmanager
def staged_dir(out: Path, overwrite: bool, command: str = "",
               inputs: Iterable[str | Path | None] = ()) -> Iterator[Path]:
    """Yield a temporary folder that replaces `out` only if the block finishes without error."""
    out = Path(out)
    check_target(out, overwrite, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_marker(tmp, command)
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def resumable_workdir(out: Path, overwrite: bool, key: str, command: str = "",
                      inputs: Iterable[str | Path | None] = ()) -> tuple[Path, bool]:
    """OUT/.work holds a stage's checkpoint, tagged with a key of its inputs and settings.

    Returns (work dir, resumed): a killed run with the same key resumes; anything else in OUT
    needs --overwrite, and --overwrite only of a folder spurgemap wrote.
    """
    out = Path(out)
    work = out / ".work"
    preflight(out, overwrite, inputs)
    resumable = (work / "key").exists() and (work / "key").read_text() == key and not overwrite
    if not resumable:
        if out.exists() and any(p.name not in (".work", MARKER) for p in out.iterdir()) and not overwrite:
            raise InputError(f"{out}: already exists; pass --overwrite to replace it")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        (work / "key").write_text(key)
    write_marker(out, command)
    return work, resumable
