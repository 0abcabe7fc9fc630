"""Damaged rasters as one line: GDAL reports a truncated or overwritten TIFF as a handful of warnings
(logged by rasterio as `CPLE_AppDefined in ...`) and then a misleading error ("has no CRS") or a
`UnicodeDecodeError`; this guard keeps those lines off the terminal and names the damage instead."""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rasterio.errors import RasterioError

from spurgemap.core.errors import InputError

# GDAL/libtiff words that mean the bytes are not what the header promises
_DAMAGE = ("io error", "read error", "tiffreaddirectory", "tifffill", "tiffreadencoded", "truncat",
           "failed to read", "cannot read", "incorrect count", "not a tiff", "unexpected end")
_LOCK = threading.Lock()
log = logging.getLogger(__name__)


def gdal_message(exc: BaseException) -> str:
    """The first useful line of a rasterio error: "Read failed. See previous exception" points at its cause."""
    seen: BaseException | None = exc
    text = ""
    while seen is not None:
        lines = str(seen).strip().splitlines()
        text = lines[0] if lines else type(seen).__name__
        if "previous exception" not in text:
            return text
        seen = seen.__cause__ or seen.__context__
    return text


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _damaged(path: Path, detail: str) -> InputError:
    return InputError(f"{path}: damaged or truncated file ({detail}); copy it again from its source "
                      "(drone software, predict output)")


@contextmanager
def damage_guard(path: Path) -> Iterator[None]:
    """Open and probe a raster inside this block: GDAL's damage warnings and the errors they cause
    become one InputError naming the file; other GDAL warnings are passed on unchanged afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield  # a worker thread (Dask task): the process-wide hooks and warning filters stay the main thread's
        return
    logger = logging.getLogger("rasterio")
    collect = _Collect()
    # rasterio's GDAL-message callback cannot decode garbage bytes: Python then prints the error
    # through sys.excepthook and sys.unraisablehook, outside any try; catch it there
    garbled: list[BaseException] = []
    hook, excepthook = sys.unraisablehook, sys.excepthook

    def unraisable(info: sys.UnraisableHookArgs) -> None:
        if isinstance(info.exc_value, UnicodeDecodeError):
            garbled.append(info.exc_value)
        else:
            hook(info)

    def except_hook(kind: type[BaseException], value: BaseException, tb: object) -> None:
        if isinstance(value, UnicodeDecodeError):
            garbled.append(value)
        else:
            excepthook(kind, value, tb)  # type: ignore[arg-type]

    with _LOCK:
        logger.addHandler(collect)
        propagate, logger.propagate = logger.propagate, False
        sys.unraisablehook, sys.excepthook = unraisable, except_hook
    notes = warnings.catch_warnings(record=True)  # NotGeoreferencedWarning of a damaged header: held back
    caught = notes.__enter__()
    warnings.simplefilter("always")
    try:
        try:
            yield
        finally:
            notes.__exit__(None, None, None)
            with _LOCK:
                logger.removeHandler(collect)
                logger.propagate = propagate
                sys.unraisablehook, sys.excepthook = hook, excepthook
    except UnicodeDecodeError:
        raise _damaged(path, "unreadable text in its header") from None
    except (InputError, RasterioError) as exc:
        hurt = [r.getMessage() for r in collect.records if any(w in r.getMessage().lower() for w in _DAMAGE)]
        if hurt or garbled:
            raise _damaged(path, _tail(hurt[0]) if hurt else "unreadable bytes in its header") from None
        if isinstance(exc, RasterioError):
            raise _damaged(path, gdal_message(exc)) from None
        _replay(path, collect.records, caught)  # an intact file refused for a reason: its warnings explain
        raise
    hurt = [r.getMessage() for r in collect.records if any(w in r.getMessage().lower() for w in _DAMAGE)]
    if hurt:
        raise _damaged(path, _tail(hurt[0]))
    if garbled:
        raise _damaged(path, "GDAL reported unreadable bytes in its header")
    _replay(path, collect.records, caught)


def _replay(path: Path, records: list[logging.LogRecord], caught: list[warnings.WarningMessage]) -> None:
    """No damage: GDAL's notes (one line each, naming the file) and Python warnings as they would have been."""
    for text in dict.fromkeys(_tail(r.getMessage()) for r in records if r.levelno >= logging.WARNING):
        log.warning("%s: GDAL: %s", path, text[:120])
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _tail(message: str) -> str:
    """GDAL's text without the "CPLE_AppDefined in file.tif:" prefix rasterio adds."""
    return message.split(": ", 1)[-1].strip() if message.startswith("CPLE_") else message.strip()
