"""Output folders appear whole or not at all: stages write to a hidden sibling, then rename."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from spurgemap.core.errors import InputError


def check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: already exists; pass --overwrite to replace it")


@contextmanager
def staged_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder that replaces `out` only if the block finishes without error."""
    out = Path(out)
    check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def resumable_workdir(out: Path, overwrite: bool, key: str) -> tuple[Path, bool]:
    """OUT/.work holds a stage's checkpoint, tagged with a key of its inputs and settings.

    Returns (work dir, resumed): a killed run with the same key resumes; anything else in OUT
    needs --overwrite.
    """
    work = out / ".work"
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    resumable = (work / "key").exists() and (work / "key").read_text() == key and not overwrite
    if not resumable:
        if out.exists() and any(p.name != ".work" for p in out.iterdir()) and not overwrite:
            raise InputError(f"{out}: already exists; pass --overwrite to replace it")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        (work / "key").write_text(key)
    return work, resumable
