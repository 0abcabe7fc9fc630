"""Sample maps for ``check_maps.py --self-test``, written with the system python's GDAL/OGR.

Shaped like ``spurgemap predict``'s outputs (probability COG, paletted class raster, confidence,
tiles GeoJSON, presence GeoPackage and the real ``.qml`` styles), small enough to check by eye.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any


def build_sample(maps_dir: Path, name: str, styles: ModuleType, threshold: float = 0.5) -> dict[str, Any]:
    """Write sample maps shaped like predict's (6 x 5 tiles of 10 m in EPSG:32612) with `styles`
    (spurgemap/predict/styles.py, loaded by check_maps); returns EXPECT for check_maps."""
    import numpy as np
    from osgeo import gdal, ogr, osr

    gdal.UseExceptions()
    ogr.UseExceptions()
    maps_dir.mkdir(parents=True, exist_ok=True)
    epsg, x0, y0, cell = 32612, 500_000.0, 5_000_000.0, 10.0
    prob = np.array(
        [
            [0, 5, 10, 20, 30, 255],
            [5, 60, 80, 40, 20, 255],
            [10, 90, 100, 55, 10, 255],
            [20, 45, 70, 50, 0, 0],
            [255, 255, 0, 10, 95, 0],
        ],
        dtype=np.uint8,
    )
    rows, cols = prob.shape
    threshold_pct = round(threshold * 100)
    cls = np.where(prob == 255, 255, (prob >= threshold_pct).astype(np.uint8)).astype(np.uint8)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    geotransform = (x0, cell, 0.0, y0, 0.0, -cell)

    def raster(path: Path, data: Any, colours: bool) -> None:
        mem = gdal.GetDriverByName("MEM").Create("", cols, rows, 1, gdal.GDT_Byte)
        mem.SetGeoTransform(geotransform)
        mem.SetProjection(srs.ExportToWkt())
        band = mem.GetRasterBand(1)
        band.WriteArray(data)
        band.SetNoDataValue(255)
        if colours:
            table = gdal.ColorTable()
            table.SetColorEntry(0, (200, 230, 200, 255))
            table.SetColorEntry(1, (255, 0, 255, 255))
            table.SetColorEntry(255, (0, 0, 0, 0))
            band.SetRasterColorTable(table)
            band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
            gdal.GetDriverByName("GTiff").CreateCopy(str(path), mem)
        else:
            band.SetDescription("leafy spurge probability (%)")
            gdal.GetDriverByName("COG").CreateCopy(str(path), mem, options=["OVERVIEWS=NONE"])

    raster(maps_dir / f"{name}_prob.tif", prob, colours=False)
    raster(maps_dir / f"{name}_class.tif", cls, colours=True)
    t, p = threshold, prob / 100  # confidence as predict writes it: 0 at the threshold, 100 at p = 0 or 1
    conf = np.rint(np.where(p < t, (t - p) / t, (p - t) / (1 - t)) * 100).clip(0, 100)
    raster(maps_dir / f"{name}_confidence.tif", np.where(prob == 255, 255, conf).astype(np.uint8), colours=False)

    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_4326 = osr.CoordinateTransformation(srs, wgs84)

    def box(r: int, col: int) -> Any:
        xa, ya = x0 + col * cell, y0 - r * cell
        ring = ogr.Geometry(ogr.wkbLinearRing)
        for x, y in ((xa, ya), (xa + cell, ya), (xa + cell, ya - cell), (xa, ya - cell), (xa, ya)):
            ring.AddPoint_2D(x, y)
        poly = ogr.Geometry(ogr.wkbPolygon)
        poly.AddGeometry(ring)
        return poly

    def centre(r: int, col: int) -> list[float]:
        return [x0 + (col + 0.5) * cell, y0 - (r + 0.5) * cell]

    tiles_ds = ogr.GetDriverByName("GeoJSON").CreateDataSource(str(maps_dir / f"{name}_tiles.geojson"))
    tiles = tiles_ds.CreateLayer("tiles", wgs84, ogr.wkbPolygon, options=["RFC7946=YES"])
    for field, kind in (("probability", ogr.OFTReal), ("class", ogr.OFTString), ("row", ogr.OFTInteger)):
        tiles.CreateField(ogr.FieldDefn(field, kind))
    tiles.CreateField(ogr.FieldDefn("col", ogr.OFTInteger))
    present_union = ogr.Geometry(ogr.wkbMultiPolygon)
    expect: dict[str, Any] = {"epsg": epsg, "present_points": [], "absent_points": [], "nodata_points": []}
    for r in range(rows):
        for col in range(cols):
            value = int(prob[r, col])
            if value == 255:
                expect["nodata_points"].append(centre(r, col))
                continue
            is_present = value >= threshold_pct
            expect["present_points" if is_present else "absent_points"].append(centre(r, col))
            if is_present:
                present_union.AddGeometry(box(r, col))
            feature = ogr.Feature(tiles.GetLayerDefn())
            feature.SetField("probability", value / 100)
            feature.SetField("class", "present" if is_present else "absent")
            feature.SetField("row", r)
            feature.SetField("col", col)
            geometry = box(r, col)
            geometry.Transform(to_4326)
            feature.SetGeometry(geometry)
            tiles.CreateFeature(feature)
    tiles_ds = None  # flush

    gpkg = ogr.GetDriverByName("GPKG").CreateDataSource(str(maps_dir / f"{name}_presence.gpkg"))
    layer = gpkg.CreateLayer("presence", srs, ogr.wkbMultiPolygon)
    layer.CreateField(ogr.FieldDefn("area_m2", ogr.OFTReal))
    layer.CreateField(ogr.FieldDefn("area_ha", ogr.OFTReal))
    dissolved = ogr.ForceToMultiPolygon(present_union.UnionCascaded())
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetField("area_m2", dissolved.GetArea())
    feature.SetField("area_ha", dissolved.GetArea() / 10_000)
    feature.SetGeometry(dissolved)
    layer.CreateFeature(feature)
    gpkg = None  # flush

    styles.write_styles(maps_dir, name, threshold)
    extent = [x0, y0 - rows * cell, x0 + cols * cell, y0]
    expect["extent"] = extent
    expect["extent_4326"] = list(to_4326.TransformBounds(*extent, 21))
    return expect
