"""``labels:`` section: where OSM solar farms come from and how patches are planned."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import Section


class LabelsConfig(Section):
    """OSM source, AOI and patch plan.

    Attributes:
        source: ``file`` reads a local ``.osm``/``.osm.pbf``/``.osm.bz2`` extract with pyosmium;
            ``overpass`` queries an Overpass API endpoint.
        osm_file: The extract, when ``source`` is ``file``.
        overpass_url: Overpass API interpreter endpoint.
        aoi_bbox: ``[minx, miny, maxx, maxy]`` in ``aoi_crs``; or give ``aoi_file``.
        aoi_file: A GeoJSON / GeoPackage polygon AOI (any CRS it declares).
        min_area_m2: Farms smaller than this (rooftop arrays) are rejected.
        patch_size: Patch side in pixels.
        gsd: Pixel size in metres.
        negatives_per_positive: Ratio of negative to positive patches.
        negative_buffer_m: Negatives keep at least this distance from any farm.
    """

    source: Literal["file", "overpass"] = "file"
    osm_file: Path | None = None
    overpass_url: str = "https://overpass-api.de/api/interpreter"
    timeout_s: float = Field(default=180.0, gt=0)
    retries: int = Field(default=5, ge=0)
    aoi_bbox: tuple[float, float, float, float] | None = None
    aoi_crs: str = "EPSG:4326"
    aoi_file: Path | None = None
    min_area_m2: float = Field(default=5000.0, ge=0)
    patch_size: int = Field(default=256, ge=32)
    gsd: float = Field(default=10.0, gt=0)
    negatives_per_positive: float = Field(default=1.0, ge=0)
    negative_buffer_m: float = Field(default=500.0, ge=0)

    @model_validator(mode="after")
    def _source_complete(self) -> LabelsConfig:
        if self.source == "file" and self.osm_file is None:
            raise ValueError("labels.source is 'file' but labels.osm_file is not set; "
                             "set labels.osm_file to an .osm/.osm.pbf/.osm.bz2 path")
        if self.aoi_bbox is None and self.aoi_file is None and self.source == "overpass":
            raise ValueError("labels.source is 'overpass' but no AOI is given; "
                             "set labels.aoi_bbox or labels.aoi_file")
        return self
