"""GDAL options, set in one visible place for every remote or local raster read."""

from __future__ import annotations

from typing import Final

import rasterio

#: Options for reading COGs over HTTP with as few requests as possible.
GDAL_OPTIONS: Final[dict[str, str | int | float | bool]] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.jp2",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_VERSION": "2TLS",
    "GDAL_HTTP_MAX_RETRY": 5,
    "GDAL_HTTP_RETRY_DELAY": 0.5,
    "GDAL_HTTP_TIMEOUT": 30,
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": 64 * 1024 * 1024,
    "GDAL_CACHEMAX": 256,
    "GDAL_NUM_THREADS": 1,  # window reads are small; threads cost more than they save
    "CPL_VSIL_CURL_CHUNK_SIZE": 16384,
}


def gdal_env(**extra: str | int | float | bool) -> rasterio.Env:
    """A ``rasterio.Env`` with :data:`GDAL_OPTIONS` plus ``extra`` overrides."""
    return rasterio.Env(**{**GDAL_OPTIONS, **extra})
