"""Write the demo field data: ODM-like RGBA orthomosaics, truth rasters and plot polygons.

Rasters are opened once and filled strip by strip (rows aligned to the 512 px blocks), so a
0.5-gigapixel site never needs more than one strip in memory.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
from affine import Affine
from numpy.typing import NDArray
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from rasterio.enums import ColorInterp
from rasterio.windows import Window
from shapely.geometry import Polygon

from spurgemap.core.errors import InputError

BLOCK = 512


def check_projected_epsg(epsg: int) -> CRS:
    """The demo lays sites out in metres, so it needs a projected CRS with metre units."""
    try:
        crs = CRS.from_epsg(epsg)
    except CRSError:
        raise InputError(
            f"demo.epsg={epsg}: unknown EPSG code; use a UTM code such as 32612"
        ) from None
    units = {ax.unit_name for ax in crs.axis_info}
    if not crs.is_projected or not units <= {"metre", "meter"}:
        raise InputError(
            f"demo.epsg={epsg}: not a projected CRS in metres; use a UTM code such as 32612"
        )
    return crs


def lonlat_to_crs(epsg: int, lon: float, lat: float) -> tuple[float, float]:
    t = Transformer.from_crs(4326, epsg, always_xy=True)
    x, y = t.transform(lon, lat)
    return float(x), float(y)


class SiteRasterWriter:
    """ortho.tif (RGBA, alpha band = validity) and truth.tif (0/1, 255 nodata) on one grid."""

    def __init__(
        self,
        ortho_path: Path,
        truth_path: Path,
        *,
        epsg: int,
        west: float,
        north: float,
        gsd_m: float,
        size: int,
        flight_date: str | None = None,
    ) -> None:
        common: dict[str, Any] = {
            "driver": "GTiff",
            "width": size,
            "height": size,
            "crs": CRS.from_epsg(epsg).to_wkt(),
            "transform": Affine.translation(west, north) @ Affine.scale(gsd_m, -gsd_m),
            "tiled": True,
            "blockxsize": BLOCK,
            "blockysize": BLOCK,
            "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
        }
        ortho_path.parent.mkdir(parents=True, exist_ok=True)
        rgba = {"count": 4, "dtype": "uint8", "photometric": "RGB", "alpha": "YES", "predictor": 2}
        self._ortho = rasterio.open(ortho_path, "w", **rgba, **common)
        ci = ColorInterp
        self._ortho.colorinterp = [ci.red, ci.green, ci.blue, ci.alpha]
        if flight_date:  # as drone software stamps it (TIFF DateTime), read back by `zones` for records
            self._ortho.update_tags(TIFFTAG_DATETIME=flight_date.replace("-", ":") + " 12:00:00")
        self._truth = rasterio.open(truth_path, "w", count=1, dtype="uint8", nodata=255, **common)
        self._truth.set_band_description(1, "leafy spurge: 1 present, 0 absent")
        self._size = size

    def write_strip(self, row0: int, rgba: NDArray[np.uint8], truth: NDArray[np.uint8]) -> None:
        win = Window(0, row0, self._size, rgba.shape[1])
        self._ortho.write(rgba, window=win)
        self._truth.write(truth, 1, window=win)

    def close(self) -> None:
        self._ortho.close()
        self._truth.close()

    def __enter__(self) -> SiteRasterWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_plots_geojson(
    path: Path, records: list[dict[str, Any]], rings: list[list[tuple[float, float]]], epsg: int
) -> None:
    """Plot polygons given in the raster CRS, written as RFC 7946 GeoJSON (EPSG:4326, lon/lat).

    Nine decimals (~0.1 mm) keep the reprojected squares square to well under a pixel.
    """
    gdf = gpd.GeoDataFrame(records, geometry=[Polygon(r) for r in rings], crs=f"EPSG:{epsg}")
    gdf = gdf.to_crs(4326)
    path.unlink(missing_ok=True)
    gdf.to_file(path, driver="GeoJSON", engine="pyogrio", RFC7946="YES", COORDINATE_PRECISION=9)
