"""One sha256 for files and one for run keys: resumable stages tie their work folders to these."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path


def file_sha256(path: Path, chunk: int = 8 << 20, stop: threading.Event | None = None) -> str:
    """Streaming sha256; `stop` ends a background hash early (its result is then never used)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            if stop is not None and stop.is_set():
                raise RuntimeError(f"{path}: hashing stopped")
            digest.update(block)
    return digest.hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_key(*parts: str, length: int = 16) -> str:
    """A short key of everything that decides a run's result: same key, same (resumable) work."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:length]
