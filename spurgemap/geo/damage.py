"""Damaged rasters as one line: GDAL reports a truncated or overwritten TIFF as a handful of warnings
(logged by rasterio as `CPLE_AppDefined in ...`) and then a misleading error ("has no CRS") or a
`UnicodeDecodeError`; this guard keeps those lines off the terminal and names the damage instead."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rasterio.errors import RasterioError

from spurgemap.core.errors import InputError

# GDAL/libtiff words that mean the bytes are not what the header promises
_DAMAGE = ("io error", "read error", "tiffreaddirectory", "tifffill", "tiffreadencoded", "truncat",
           "failed to read", "cannot read", "incorrect count", "not a tiff", "unexpected end")
_LOCK = threading.Lock()


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
    logger = logging.getLogger("rasterio")
    collect = _Collect()
    with _LOCK:
        logger.addHandler(collect)
        propagate, logger.propagate = logger.propagate, False
    try:
        try:
            yield
        finally:
            with _LOCK:
                logger.removeHandler(collect)
                logger.propagate = propagate
    except UnicodeDecodeError:
        raise _damaged(path, "unreadable text in its header") from None
    except (InputError, RasterioError) as exc:
        hurt = [r.getMessage() for r in collect.records if any(w in r.getMessage().lower() for w in _DAMAGE)]
        if hurt:
            raise _damaged(path, _tail(hurt[0])) from None
        if isinstance(exc, RasterioError):
            raise _damaged(path, gdal_message(exc)) from None
        raise
    hurt = [r.getMessage() for r in collect.records if any(w in r.getMessage().lower() for w in _DAMAGE)]
    if hurt:
        raise _damaged(path, _tail(hurt[0]))
    for record in collect.records:  # harmless GDAL notes: as they would have been shown
        logging.getLogger(record.name).handle(record)


def _tail(message: str) -> str:
    """GDAL's text without the "CPLE_AppDefined in file.tif:" prefix rasterio adds."""
    return message.split(": ", 1)[-1].strip() if message.startswith("CPLE_") else message.strip()
