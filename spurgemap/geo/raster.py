"""Orthomosaic access: validation up front, then bounded windowed reads of RGB + validity.

Everything that can be decided from the header is decided in `open_ortho`, before a single pixel
is decoded, so hostile or unsupported files fail fast with a message saying what to do.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioError
from rasterio.windows import Window

from spurgemap.core.errors import InputError
from spurgemap.geo.damage import damage_guard, gdal_message

log = logging.getLogger(__name__)

_RGB = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
_NEUTRAL = {ColorInterp.undefined, ColorInterp.gray, ColorInterp.grey}
_CMYK = {ColorInterp.cyan, ColorInterp.magenta, ColorInterp.yellow, ColorInterp.black}


@dataclass(frozen=True)
class OrthoInfo:
    """What the rest of the pipeline needs to know about one orthomosaic."""

    path: Path
    width: int
    height: int
    count: int
    dtype: str
    crs_wkt: str
    epsg: int | None
    transform: Affine
    res_x: float  # map units per pixel
    res_y: float
    unit_to_m: float
    gsd_m: float  # ground sample distance at the raster centre, metres
    block_shape: tuple[int, int]
    rgb_bands: tuple[int, int, int]
    alpha_band: int | None
    mask_kind: str  # mask | alpha | nodata | none
    value_range: tuple[float, float] | None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        left, top = self.transform.c, self.transform.f
        return left, top - self.height * self.res_y, left + self.width * self.res_x, top

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


def _fail(path: Path, message: str) -> InputError:
    return InputError(f"{path}: {message}")


def _first_line(exc: BaseException) -> str:
    return gdal_message(exc)




def _check_size(path: Path, ds: rasterio.DatasetReader, max_pixels: int, max_ratio: float) -> None:
    pixels = ds.width * ds.height
    if pixels > max_pixels:
        raise _fail(
            path,
            f"claims {ds.width} x {ds.height} = {pixels:.3g} pixels, above the limit of "
            f"{max_pixels:.3g} (tile.max_pixels); split the orthomosaic or raise the limit",
        )
    itemsize = np.dtype(ds.dtypes[0]).itemsize if ds.dtypes[0] != "complex_int16" else 4
    claimed = pixels * ds.count * itemsize
    on_disk = max(path.stat().st_size, 1)
    if claimed / on_disk > max_ratio:
        raise _fail(
            path,
            f"header claims {ds.width} x {ds.height} x {ds.count} pixels ({claimed / 1e9:.3g} GB) "
            f"but the file holds only {on_disk} bytes: corrupt or hostile file, refused",
        )


def _check_georef(path: Path, ds: rasterio.DatasetReader) -> tuple[CRS, float]:
    gcps, _ = ds.gcps
    if gcps and ds.transform.is_identity:
        raise _fail(path, "georeferenced only by ground control points; warp it first "
                    "(gdalwarp -t_srs EPSG:<UTM zone> in.tif out.tif)")
    if ds.crs is None:
        raise _fail(path, "has no CRS; assign the projected CRS it was made in "
                    "(gdal_edit.py -a_srs EPSG:<code>)")
    try:
        crs = CRS.from_wkt(ds.crs.to_wkt())
    except Exception as exc:  # pyproj raises several types for odd WKT
        raise _fail(path, f"has a CRS pyproj cannot read ({_first_line(exc)})") from None
    if crs.is_geographic:
        raise _fail(path, "is in a geographic CRS (degrees); reproject it to a projected CRS "
                    "in metres, e.g. gdalwarp -t_srs EPSG:32612 (UTM)")
    if not crs.is_projected:
        raise _fail(path, f"CRS '{crs.name}' is not a projected CRS in metres; reproject it to UTM")
    t = ds.transform
    if t.b != 0 or t.d != 0:
        raise _fail(path, "has a rotated or sheared geotransform, which is not supported; "
                    "make it north-up with gdalwarp")
    if t.a <= 0 or t.e >= 0:
        raise _fail(path, "is not north-up (positive row pixel size or flipped columns); "
                    "make it north-up with gdalwarp")
    unit_to_m = float(ds.crs.linear_units_factor[1])
    if not math.isfinite(unit_to_m) or unit_to_m <= 0:
        raise _fail(path, "CRS has no linear unit; reproject it to UTM")
    return crs, unit_to_m


def _ground_scale(path: Path, crs: CRS, ds: rasterio.DatasetReader) -> float:
    """Map-to-ground scale at the centre: Web Mercator pixels are not ground pixels."""
    cx, cy = ds.transform @ (ds.width / 2, ds.height / 2)
    try:
        geodetic = crs.geodetic_crs
        if geodetic is None:
            raise ValueError("no geodetic CRS")
        lon, lat = Transformer.from_crs(crs, geodetic, always_xy=True).transform(cx, cy)
        if not (math.isfinite(lon) and math.isfinite(lat)):
            raise ValueError("centre does not transform")
        wgs = Transformer.from_crs(geodetic, CRS.from_epsg(4326), always_xy=True)
        lon84, lat84 = wgs.transform(lon, lat)
        if not (math.isfinite(lon84) and math.isfinite(lat84)):
            raise ValueError("not an Earth CRS")
        from pyproj import Proj

        factors = Proj(crs).get_factors(lon, lat)
        scale = float(factors.meridional_scale)
    except Exception as exc:
        raise _fail(path, f"CRS '{crs.name}' cannot be related to Earth coordinates "
                    f"({_first_line(exc)}); reproject it to UTM") from None
    if not math.isfinite(scale) or scale <= 0:
        raise _fail(path, f"CRS '{crs.name}' has no usable scale at the raster centre")
    return scale


def _choose_bands(path: Path, ds: rasterio.DatasetReader,
                  bands: tuple[int, int, int] | None) -> tuple[tuple[int, int, int], int | None]:
    interp = list(ds.colorinterp)
    alpha = next((i + 1 for i, c in enumerate(interp) if c == ColorInterp.alpha), None)
    if bands is not None:
        if any(b < 1 or b > ds.count for b in bands):
            raise _fail(path, f"--bands {bands} out of range: the file has {ds.count} bands")
        return bands, alpha
    if ds.count - (1 if alpha else 0) < 3:
        kind = "palette" if ColorInterp.palette in interp else f"{ds.count}-band"
        raise _fail(path, f"is a {kind} image with fewer than 3 usable colour bands; "
                    "an RGB or RGBA orthomosaic is needed")
    if ds.count > 4:
        raise _fail(path, f"has {ds.count} bands; say which are red, green, blue with --bands R,G,B")
    if _CMYK & set(interp):
        raise _fail(path, "is CMYK; convert it to RGB (gdal_translate -co PHOTOMETRIC=RGB)")
    if all(c in interp for c in _RGB):
        rgb = tuple(interp.index(c) + 1 for c in _RGB)
        return (rgb[0], rgb[1], rgb[2]), alpha
    if all(c in _NEUTRAL for i, c in enumerate(interp[:3])):
        log.info("%s: bands carry no colour labels; assuming bands 1, 2, 3 are red, green, blue", path)
        return (1, 2, 3), alpha
    raise _fail(path, f"band colours {[c.name for c in interp]} are not RGB; choose bands with --bands R,G,B")


def _mask_kind(ds: rasterio.DatasetReader, alpha: int | None) -> str:
    """Validity source, in order: internal/external mask, alpha band, nodata value, none.

    GDAL (and rasterio's dataset_mask) let a nodata value shadow an alpha band; we do not.
    """
    names = {f.name for f in ds.mask_flag_enums[0]}
    if "per_dataset" in names and "alpha" not in names:
        return "mask"
    if alpha is not None:
        return "alpha"
    if "nodata" in names or any(n is not None for n in ds.nodatavals):
        return "nodata"
    return "none"


def open_ortho(
    path: Path,
    tile_px: int,
    *,
    bands: tuple[int, int, int] | None = None,
    value_range: tuple[float, float] | None = None,
    max_pixels: int = 50_000_000_000,
    max_compression_ratio: float = 5000.0,
) -> OrthoInfo:
    """Validate an orthomosaic from its header and one probe read; refuse what we cannot tile."""
    path = Path(path)
    if not path.exists():
        raise _fail(path, "file not found")
    if path.is_dir():
        raise _fail(path, "is a folder, not a GeoTIFF")
    if path.stat().st_size == 0:
        raise _fail(path, "is empty (0 bytes)")
    with damage_guard(path):  # a truncated or overwritten file: one line, no raw GDAL warnings
        return _open(path, tile_px, bands, value_range, max_pixels, max_compression_ratio)


def _open(path: Path, tile_px: int, bands: tuple[int, int, int] | None, value_range: tuple[float, float] | None,
          max_pixels: int, max_compression_ratio: float) -> OrthoInfo:
    try:
        ds = rasterio.open(path)
    except RasterioError as exc:
        raise _fail(path, f"not a readable raster ({_first_line(exc)})") from None
    with ds:
        _check_size(path, ds, max_pixels, max_compression_ratio)
        crs, unit_to_m = _check_georef(path, ds)
        rgb, alpha = _choose_bands(path, ds, bands)
        dtype = ds.dtypes[rgb[0] - 1]
        if dtype != "uint8" and value_range is None:
            hint = "0,65535 (or 0,4095 for 12-bit)" if "int" in dtype else "0,255 or 0,1"
            raise _fail(path, f"has {dtype} pixels; give --value-range LO,HI to scale them "
                        f"linearly to 0..255, e.g. {hint}")
        if ds.width < tile_px or ds.height < tile_px:
            raise _fail(path, f"is {ds.width} x {ds.height} px, smaller than one {tile_px}-px tile")
        scale = _ground_scale(path, crs, ds)
        try:  # decode one block so unsupported codecs fail here, not halfway through
            ds.read(rgb[0], window=Window(ds.width // 2, ds.height // 2, 1, 1))
        except RasterioError as exc:
            raise _fail(path, f"pixels cannot be decoded ({_first_line(exc)}); "
                        "the file is corrupt or uses an unsupported compression") from None
        res_x, res_y = ds.transform.a, -ds.transform.e
        gsd = res_x * unit_to_m / scale
        if abs(scale - 1) > 0.02:
            log.warning("%s: map pixels are %.3g m but ground pixels are %.3g m (%s distorts scale)",
                        path, res_x * unit_to_m, gsd, crs.name)
        return OrthoInfo(
            path=path, width=ds.width, height=ds.height, count=ds.count, dtype=dtype,
            crs_wkt=ds.crs.to_wkt(), epsg=ds.crs.to_epsg(), transform=ds.transform,
            res_x=res_x, res_y=res_y, unit_to_m=unit_to_m, gsd_m=gsd,
            block_shape=tuple(ds.block_shapes[0]), rgb_bands=rgb, alpha_band=alpha,
            mask_kind=_mask_kind(ds, alpha), value_range=value_range,
        )


def _read_inside(ds: rasterio.DatasetReader, info: OrthoInfo, win: Window) -> tuple[np.ndarray, np.ndarray]:
    """RGB (raw dtype) and validity for a window inside the raster, decoding each block once.

    Colour and alpha are read in one call: separate calls decode every DEFLATE block twice.
    """
    bands = list(info.rgb_bands) + ([info.alpha_band] if info.mask_kind == "alpha" and info.alpha_band else [])
    # Band-sequential output: GDAL fills it ~25 % faster than a pixel-interleaved buffer.
    data = ds.read(bands, window=win)
    rgb = data[:3]
    if info.mask_kind == "alpha":
        valid = data[3] > 0
    elif info.mask_kind == "mask":
        valid = ds.read_masks(info.rgb_bands[0], window=win) > 0
    elif info.mask_kind == "nodata":
        valid = np.zeros(rgb.shape[1:], dtype=bool)
        for band, idx in zip(rgb, info.rgb_bands, strict=True):
            nodata = ds.nodatavals[idx - 1]
            if nodata is None:
                valid[:] = True
            elif np.isnan(nodata):
                valid |= ~np.isnan(band)
            else:
                valid |= band != nodata
    else:
        valid = np.ones(rgb.shape[1:], dtype=bool)
    if rgb.dtype.kind == "f":
        valid &= np.isfinite(rgb).all(axis=0)
    return rgb, valid


def read_rgb(ds: rasterio.DatasetReader, info: OrthoInfo,
             window: Window) -> tuple[np.ndarray, np.ndarray, int]:
    """Return (3, h, w) uint8 RGB, an (h, w) bool validity mask (outside the raster is invalid)
    and the number of valid pixels clipped by --value-range scaling.

    Windows may extend past the raster: the inside part is read and the rest padded as invalid,
    which is much cheaper than GDAL's boundless (VRT) reads.
    """
    h, w = int(window.height), int(window.width)
    c0, r0 = int(window.col_off), int(window.row_off)
    cc0, rr0 = max(c0, 0), max(r0, 0)
    cc1, rr1 = min(c0 + w, info.width), min(r0 + h, info.height)
    dtype = np.uint8 if info.dtype == "uint8" else np.float64
    rgb = np.zeros((3, h, w), dtype=dtype)
    valid = np.zeros((h, w), dtype=bool)
    try:
        if cc1 > cc0 and rr1 > rr0:
            part, ok = _read_inside(ds, info, Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
            if part.shape[1:] == (h, w):
                rgb, valid = part.astype(dtype, copy=False), ok
            else:
                rgb[:, rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = part
                valid[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = ok
    except RasterioError as exc:
        raise _fail(info.path, f"read failed at window {window} ({_first_line(exc)}); "
                    "the file is truncated or corrupt") from None
    if info.dtype == "uint8":
        return rgb, valid, 0
    assert info.value_range is not None
    lo, hi = info.value_range
    data = np.nan_to_num(rgb)
    clipped = int((((data < lo) | (data > hi)).any(axis=0) & valid).sum())
    scaled = (data - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8), valid, clipped


def strip_cache_mb(info: OrthoInfo, rows: int) -> int:
    """GDAL block cache (MB) that decodes every block once when strips `rows` high are read across
    the whole raster: all bands of the block rows one strip can touch. With less, each block is
    decoded again for every strip that touches it (250-px strips over 512-px DEFLATE blocks: 2.4x
    the decoding CPU).
    """
    block_h, block_w = info.block_shape
    block_rows = -(-rows // block_h) + 1
    width = -(-info.width // block_w) * block_w
    nbytes = block_rows * block_h * width * info.count * np.dtype(info.dtype).itemsize
    return -(-nbytes // 2**20) + 16


@contextmanager
def gdal_session(cache_mb: int) -> Iterator[None]:
    """GDAL settings for a run, entered once per thread (entering is not free: ~ms).

    GDAL sizes its block cache once, at the first block read of the process (default 5 % of RAM),
    so the whole run, header probes included, must execute inside this context.
    """
    # rasterio hands an integer straight to GDALSetCacheMax64, i.e. in bytes (256 would be 256 B).
    with rasterio.Env(GDAL_CACHEMAX=cache_mb * 1024 * 1024, GDAL_NUM_THREADS="ALL_CPUS",
                      GDAL_TIFF_INTERNAL_MASK=True):
        yield


class OrthoReader:
    """Thread-safe windowed reader: one GDAL handle per thread, all closed together.

    Windows are plain (col_off, row_off, width, height) tuples so callers never need rasterio.
    """

    def __init__(self, info: OrthoInfo) -> None:
        self.info = info
        self._local = threading.local()
        self._handles: list[rasterio.DatasetReader] = []
        self._lock = threading.Lock()

    def _dataset(self) -> rasterio.DatasetReader:
        ds = getattr(self._local, "ds", None)
        if ds is None:
            ds = rasterio.open(self.info.path)
            self._local.ds = ds
            with self._lock:
                self._handles.append(ds)
        return ds

    def read(self, col_off: int, row_off: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray, int]:
        return read_rgb(self._dataset(), self.info, Window(col_off, row_off, width, height))

    def close(self) -> None:
        with self._lock:
            for ds in self._handles:
                ds.close()
            self._handles.clear()

    def __enter__(self) -> OrthoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
