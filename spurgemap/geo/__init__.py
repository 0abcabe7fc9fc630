"""The geo layer: the only code that touches rasterio, GDAL or geopandas."""
