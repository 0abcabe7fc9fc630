"""What infestation records need from files: a map's provenance tags and the flight date.

Why here: the date sits in the orthomosaic's TIFF tags (drone software writes TIFF DateTime), and
only geo/ opens rasters.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import rasterio

_DATE = re.compile(r"^(\d{4})[:\-](\d{2})[:\-](\d{2})")
DATE_TAGS = ("flight_date", "TIFFTAG_DATETIME", "ACQUISITION_DATE", "DATE_TIME")


def raster_tags(path: Path) -> dict[str, str]:
    """The default-domain tags of a GeoTIFF; an unreadable file has none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # only the tags are wanted: no notes on georeferencing
            with rasterio.open(path) as src:
                return dict(src.tags())
    except (rasterio.errors.RasterioIOError, OSError):
        return {}


def _date_of(tags: dict[str, str]) -> str | None:
    for key in DATE_TAGS:
        m = _DATE.match(tags.get(key, "").strip())
        if m:
            return "-".join(m.groups())
    return None


def flight_date(prob_path: Path) -> tuple[str | None, str]:
    """(YYYY-MM-DD or None, where it came from): the map's own tags, else its source orthomosaic's."""
    tags = raster_tags(prob_path)
    date = _date_of(tags)
    if date:
        return date, f"{prob_path.name} tags"
    source = Path(tags.get("source", ""))
    if tags.get("source") and source.is_file():
        date = _date_of(raster_tags(source))
        if date:
            return date, f"{source} TIFF DateTime"
    return None, "no date tag in the map or its orthomosaic"
