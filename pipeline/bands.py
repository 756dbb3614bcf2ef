"""Band order: one constant, written into every GeoTIFF and checked on every read."""

from __future__ import annotations

from typing import Final

#: The ten Sentinel-2 L2A bands the model sees, in this order, everywhere.
BANDS: Final[tuple[str, ...]] = (
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B11",
    "B12",
)

#: Native ground sample distance of each band in metres.
NATIVE_GSD: Final[dict[str, int]] = {
    "B01": 60,
    "B02": 10,
    "B03": 10,
    "B04": 10,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B08": 10,
    "B8A": 20,
    "B09": 60,
    "B10": 60,
    "B11": 20,
    "B12": 20,
    "SCL": 20,
}

#: Earth Search v1 asset keys (common names) for each band id.
EARTH_SEARCH_ASSET: Final[dict[str, str]] = {
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B11": "swir16",
    "B12": "swir22",
    "SCL": "scl",
}

#: Band groups for spectral attribution and audit summaries.
BAND_GROUPS: Final[dict[str, tuple[str, ...]]] = {
    "visible": ("B02", "B03", "B04"),
    "red_edge": ("B05", "B06", "B07"),
    "nir": ("B08", "B8A"),
    "swir": ("B11", "B12"),
}

#: Surface reflectance is stored as uint16 digital numbers: reflectance = DN / 10000.
REFLECTANCE_SCALE: Final[float] = 1e-4

#: Scene classification (SCL) classes of Sen2Cor.
SCL_CLASSES: Final[dict[int, str]] = {
    0: "no_data",
    1: "saturated_or_defective",
    2: "dark_area_pixels",
    3: "cloud_shadows",
    4: "vegetation",
    5: "not_vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud_medium_probability",
    9: "cloud_high_probability",
    10: "thin_cirrus",
    11: "snow",
}
SCL_NOT_CLEAR: Final[frozenset[int]] = frozenset({0, 1, 3, 8, 9, 10})
SCL_SNOW: Final[int] = 11


def band_index(name: str) -> int:
    """Index of ``name`` in :data:`BANDS` (raises ``KeyError`` with the valid names)."""
    try:
        return BANDS.index(name)
    except ValueError as err:
        raise KeyError(f"unknown band {name!r}; expected one of {', '.join(BANDS)}") from err
