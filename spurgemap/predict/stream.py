"""The tile grid over a whole orthomosaic and a bounded read-ahead of its tiles.

Tiles start on the raster's pixel grid every `stride` pixels from the top-left corner; the last row
and column extend past the raster and are padded as invalid, never shifted inward, so each map cell
is exactly `stride` raster pixels and the map's transform is a scaled copy of the raster's.

Coverage: a tile is predicted when any of its cells has at least `min_valid` valid pixels; its
invalid pixels (collar, beyond the raster edge) are filled by mirroring the valid image across the
collar edge, which keeps the local texture instead of adding a flat or black patch the model never saw.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

from spurgemap.geo.raster import OrthoReader, gdal_session

_DONE = object()


@dataclass(frozen=True)
class Grid:
    width: int  # raster size in px
    height: int
    tile: int  # tile edge in raster px
    stride: int  # cell edge in raster px; divides `tile`

    @property
    def per_tile(self) -> int:
        return self.tile // self.stride

    @property
    def cell_rows(self) -> int:
        return math.ceil(self.height / self.stride)

    @property
    def cell_cols(self) -> int:
        return math.ceil(self.width / self.stride)

    @property
    def tile_rows(self) -> int:
        return max(self.cell_rows - self.per_tile + 1, 1)

    @property
    def tile_cols(self) -> int:
        return max(self.cell_cols - self.per_tile + 1, 1)

    @property
    def n_tiles(self) -> int:
        return self.tile_rows * self.tile_cols


@dataclass
class TileBatchItem:
    row: int  # tile index = top-left cell index
    col: int
    pixels: np.ndarray  # (3, tile, tile) uint8, channels first as GDAL reads them fastest


def fill_invalid(pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(3, h, w) tile with its invalid pixels filled by mirroring the valid image across the nearest
    valid edge (p -> 2 * nearest_valid(p) - p), or the nearest valid pixel where the mirror lands on
    invalid ground. Mirroring keeps the local texture; see benchmarks/collar_bias.py for the figures.
    """
    if valid.all() or not valid.any():
        return pixels
    near = distance_transform_edt(~valid, return_distances=False, return_indices=True)
    size = np.array(valid.shape)[:, None, None]
    ref = np.clip(2 * near - np.indices(valid.shape), 0, size - 1)
    ok = valid[ref[0], ref[1]]
    return np.ascontiguousarray(pixels[:, np.where(ok, ref[0], near[0]), np.where(ok, ref[1], near[1])])


class TileStream:
    """Reads tile rows in a background thread (GDAL releases the GIL) into a bounded queue.

    Also records each cell's share of valid pixels, so cells under `min_valid` stay nodata on the
    map; the fill runs here too, so it overlaps inference.
    """

    def __init__(self, reader: OrthoReader, grid: Grid, min_valid: float, keep: np.ndarray,
                 start: tuple[int, int], maxsize: int, cache_mb: int,
                 on_position: Callable[[int], None] | None = None, preview_px: int = 1200) -> None:
        self.reader, self.grid, self.min_valid, self.keep = reader, grid, min_valid, keep
        self.start = start
        self.cell_valid = np.zeros((grid.cell_rows, grid.cell_cols), dtype=np.float32)
        # a nearest-neighbour preview sampled from the strips as they pass: no second read of the raster
        self.scale = max(grid.width, grid.height) / preview_px
        shape = (max(int(grid.height / self.scale), 1), max(int(grid.width / self.scale), 1))
        self.preview = np.full((*shape, 3), 255, dtype=np.uint8)
        self.preview_valid = np.zeros(shape, dtype=bool)
        self.queue: queue.Queue[object] = queue.Queue(maxsize=maxsize)
        self.error: BaseException | None = None
        self.on_position = on_position
        self._cache_mb = cache_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spurgemap-reader", daemon=True)

    def _run(self) -> None:
        try:
            with gdal_session(self._cache_mb):
                self._read_all()
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self.error = exc
        finally:
            self.queue.put(_DONE)

    def _read_all(self) -> None:
        g, s, t = self.grid, self.grid.stride, self.grid.tile
        for r in range(g.tile_rows):
            if self._stop.is_set():
                return
            cols = np.flatnonzero(self.keep[r])
            if r < self.start[0] or not len(cols):
                if self.on_position and r >= self.start[0]:
                    self.on_position(g.tile_cols)
                continue
            c_lo, c_hi = int(cols.min()), int(cols.max())
            x0 = c_lo * s
            rgb, valid, _ = self.reader.read(x0, r * s, (c_hi - c_lo) * s + t, t)
            share = self._record_cells(r, c_lo, c_hi, valid)
            self._sample_preview(rgb, valid, x0, r * s)
            for c in cols:
                if (r, c) < self.start:
                    continue
                best = share[:, c - c_lo:c - c_lo + g.per_tile].max()
                if best > 0 and best >= self.min_valid:
                    x = (c - c_lo) * s
                    pixels = rgb[:, :, x:x + t]  # a view: the batch is stacked once
                    self.queue.put(TileBatchItem(r, int(c), fill_invalid(pixels, valid[:, x:x + t])))
                elif self.on_position:
                    self.on_position(1)
            if self.on_position:
                self.on_position(g.tile_cols - len(cols))

    def _record_cells(self, r: int, c_lo: int, c_hi: int, valid: np.ndarray) -> np.ndarray:
        g, s = self.grid, self.grid.stride
        n_rows, n_cols = g.per_tile, c_hi - c_lo + g.per_tile
        # column counts first: integer sums over rows are ~3x cheaper than a float mean over (s, s) blocks
        cols = valid[:n_rows * s, :n_cols * s].reshape(n_rows, s, n_cols * s).sum(axis=1, dtype=np.int32)
        share = cols.reshape(n_rows, n_cols, s).sum(axis=2) / (s * s)
        rows, cols = min(n_rows, g.cell_rows - r), min(n_cols, g.cell_cols - c_lo)
        self.cell_valid[r:r + rows, c_lo:c_lo + cols] = share[:rows, :cols]
        return share

    def _sample_preview(self, rgb: np.ndarray, valid: np.ndarray, x0: int, y0: int) -> None:
        h, w = valid.shape
        rows = np.arange(self.preview.shape[0])
        cols = np.arange(self.preview.shape[1])
        ys = ((rows + 0.5) * self.scale).astype(int) - y0
        xs = ((cols + 0.5) * self.scale).astype(int) - x0
        ri, ci = rows[(ys >= 0) & (ys < h)], cols[(xs >= 0) & (xs < w)]
        if len(ri) and len(ci):
            yy, xx = ys[ri], xs[ci]
            self.preview[np.ix_(ri, ci)] = rgb[:, yy][:, :, xx].transpose(1, 2, 0)
            self.preview_valid[np.ix_(ri, ci)] = valid[np.ix_(yy, xx)]

    def __enter__(self) -> TileStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        while self._thread.is_alive():  # drain so the reader can finish its put()
            with contextlib.suppress(queue.Empty):
                self.queue.get(timeout=0.1)
        self._thread.join()

    def batches(self, size: int) -> Iterator[list[TileBatchItem]]:
        batch: list[TileBatchItem] = []
        while True:
            item = self.queue.get()
            if item is _DONE:
                break
            assert isinstance(item, TileBatchItem)
            batch.append(item)
            if len(batch) == size:
                yield batch
                batch = []
        if self.error is not None:
            raise self.error
        if batch:
            yield batch
