"""``map:`` section: wall-to-wall inference over an area, chunked on a fixed grid per UTM zone."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import Section
from pipeline.config.fetch import validate_interval


class MapConfig(Section):
    """The area to map, the imagery window and how the work is cut into chunks.

    The catalog, collection and provider come from ``fetch:`` (one catalog for the run).

    Attributes:
        area_bbox: ``[minx, miny, maxx, maxy]`` in ``area_crs``; or give ``area_file``. Without
            either, the labels stage's AOI (``labels/aoi.gpkg``) is mapped.
        area_crs: CRS of ``area_bbox`` (any string pyproj accepts).
        area_file: A vector file (any CRS it declares); the union of its polygons is mapped.
        datetime: RFC 3339 interval searched; ``null`` uses ``fetch.datetime``.
        target_date: Ties in clear share go to the acquisition nearest this date; ``null``
            uses ``fetch.target_date``.
        chunk_px: Side of a chunk's core in pixels (a multiple of 32, at least 256). Chunks are
            the cells of a fixed grid anchored at multiples of ``chunk_px * gsd`` metres in each
            UTM zone.
        halo_px: Pixels read and predicted around each chunk's core and then cropped; at least
            ``predict.overlap`` so no seam is visible.
        gsd: Pixel size in metres.
        max_scenes: Acquisitions considered per chunk for the composite, clearest first.
        max_cloud_cover: Scene-level ``eo:cloud_cover`` pre-filter, percent; ``null`` uses
            ``fetch.max_cloud_cover``.
        max_items: Most items the one catalog search of the area returns.
        threshold: Probability threshold of a farm pixel; ``null`` uses the model's.
        min_area_m2: Mapped farms smaller than this are dropped; ``null`` uses
            ``predict.min_polygon_area_m2``.
        match_iou: A mapped farm is ``in_osm`` when its IoU with a label farm reaches this;
            ``null`` uses ``predict.match_iou``.
        farm_patches: Also cut a composite patch (``labels.patch_size`` pixels) around every
            mapped farm under ``map/patches/`` for the attribute and audit stages.
    """

    area_bbox: tuple[float, float, float, float] | None = None
    area_crs: str = "EPSG:4326"
    area_file: Path | None = None
    datetime: str | None = None
    target_date: date | None = None
    chunk_px: int = Field(default=2048, ge=256)
    halo_px: int = Field(default=64, ge=0)
    gsd: float = Field(default=10.0, gt=0)
    max_scenes: int = Field(default=4, ge=1, le=32)
    max_cloud_cover: float | None = Field(default=None, ge=0, le=100)
    max_items: int = Field(default=10_000, ge=1)
    threshold: float | None = Field(default=None, gt=0, lt=1)
    min_area_m2: float | None = Field(default=None, ge=0)
    match_iou: float | None = Field(default=None, gt=0, le=1)
    farm_patches: bool = True

    @field_validator("datetime")
    @classmethod
    def _interval(cls, value: str | None) -> str | None:
        return validate_interval(value, "map.datetime")

    @field_validator("chunk_px")
    @classmethod
    def _chunk_multiple(cls, value: int) -> int:
        if value % 32:
            raise ValueError(
                f"map.chunk_px {value} is not a multiple of 32; use e.g. {value // 32 * 32}"
            )
        return value

    @model_validator(mode="after")
    def _area(self) -> MapConfig:
        if self.area_bbox is not None and self.area_file is not None:
            raise ValueError("map.area_bbox and map.area_file are both set; keep only one")
        if self.area_bbox is not None:
            minx, miny, maxx, maxy = self.area_bbox
            if not (minx < maxx and miny < maxy):
                raise ValueError(
                    f"map.area_bbox {list(self.area_bbox)} is empty: it must be "
                    "[minx, miny, maxx, maxy] with minx < maxx and miny < maxy"
                )
        return self
