"""``map:`` section: wall-to-wall inference over an area, chunked on a fixed grid per UTM zone."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import Section
from pipeline.config.fetch import validate_interval


class MapWindow(Section):
    """One date window of a map over time (``map.windows``).

    Attributes:
        name: Short name (letters, digits, ``_ . -``): the folder ``map/windows/<name>/`` and
            the suffix of the per-window columns, e.g. ``2015-07``.
        datetime: RFC 3339 interval of its acquisitions, e.g. ``2015-07-01/2015-07-31``.
        target_date: Ties in clear share go to the acquisition nearest this date; ``null``
            uses ``map.target_date`` / ``fetch.target_date`` for the latest window and the
            most recent acquisition for the others.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    datetime: str
    target_date: date | None = None

    @field_validator("datetime")
    @classmethod
    def _interval(cls, value: str) -> str:
        return validate_interval(value, "map.windows[].datetime") or value


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
        windows: Date windows mapped with the same chunks and model, so the mosaics stack
            pixel for pixel (farms over time). Empty: the one window of ``map.datetime`` (or
            ``fetch.datetime``). The latest window writes the usual ``map/`` outputs; each
            earlier one writes ``map/windows/<name>/``; with two or more windows the map also
            writes the timeline (``map/timeline.csv``, ``map/sites.gpkg``, ...). Windows must
            not overlap; one catalog search covers them all.
        landcover_collection: A land-cover collection of the catalog (e.g. ``esa-worldcover``
            on Planetary Computer) read for the land each new farm replaced; ``null`` or absent
            from the catalog: spectral indices of the window before the farm appeared.
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
    windows: tuple[MapWindow, ...] = ()
    landcover_collection: str | None = "esa-worldcover"

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
    def _windows(self) -> MapConfig:
        names = [w.name for w in self.windows]
        if len(set(names)) != len(names):
            raise ValueError(f"map.windows names {names} repeat; give every window its own name")
        if self.windows and self.datetime is not None:
            raise ValueError(
                "map.datetime and map.windows are both set; put the interval into the windows "
                "and remove map.datetime"
            )
        return self

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
