"""One sha256 for files and one for run keys: resumable stages tie their work folders to these."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
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


@contextmanager
def background_sha256() -> Iterator[Callable[[Path], Future[str]]]:
    """File hashes (~1 s per GB) that only go into records and summaries, computed in a background
    thread while the stage works; a failed run stops them instead of waiting for them."""
    hasher, stop = ThreadPoolExecutor(1, thread_name_prefix="sha256"), threading.Event()
    try:
        yield lambda path: hasher.submit(file_sha256, path, stop=stop)
    finally:
        stop.set()
        hasher.shutdown(wait=False, cancel_futures=True)


def file_fingerprint(path: Path) -> str:
    """Path, size and modification time: what a resume key needs, without reading the file."""
    st = Path(path).stat()
    return f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}"


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_key(*parts: str, length: int = 16) -> str:
    """A short key of everything that decides a run's result: same key, same (resumable) work."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:length]
