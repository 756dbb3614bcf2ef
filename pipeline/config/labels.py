"""``labels:`` section: where OSM solar farms come from and how patches are planned."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from pipeline.config.base import Section
from pipeline.config.feedback import HardNegativesConfig
from pipeline.config.tiles import DEFAULT_BLOCK_SIZE_M


class LabelsConfig(Section):
    """OSM source, AOI, farm geometry rules and patch plan.

    Attributes:
        source: ``file`` reads a local ``.osm``/``.osm.pbf``/``.osm.bz2`` extract with pyosmium;
            ``overpass`` queries an Overpass API endpoint.
        osm_file: The extract, when ``source`` is ``file``; with a ``world:`` section it defaults
            to that demo world's extract (``WorldPaths.osm``).
        overpass_url: Overpass API interpreter endpoint.
        overpass_format: Response format asked of Overpass (``json`` or ``xml``); both parse
            to the same features.
        timeout_s: Overpass server-side query timeout and client read timeout, seconds.
        retries: Extra attempts after a 429, a 5xx, a timeout or a dropped connection.
        backoff_s: First retry delay in seconds; doubles on each retry (a ``Retry-After``
            header, when sent, wins).
        max_backoff_s: Upper bound of any single retry delay, seconds.
        overpass_cache: Keep each response under ``<data_root>/cache/overpass/<sha256>``
            so a re-run with the same query does not query again.
        aoi_bbox: ``[minx, miny, maxx, maxy]`` in ``aoi_crs``; or give ``aoi_file``. Without
            either (file source only) the AOI is the extract's header box, else the farms' bounds.
        aoi_crs: CRS of ``aoi_bbox`` (any string pyproj accepts).
        aoi_file: A GeoJSON / GeoPackage polygon AOI (any CRS it declares).
        min_area_m2: Farms smaller than this (rooftop arrays) are rejected; 5000 m² = 0.5 ha.
        generator_merge_fraction: A generator whose area lies at least this share inside a plant
            is merged into that plant (no area counted twice).
        generator_cluster_gap_m: Stand-alone generators (panel rows) closer than this are
            merged into one farm.
        patch_size: Patch side in pixels.
        gsd: Pixel size in metres.
        negatives_per_positive: Ratio of random negative to positive patches.
        negative_buffer_m: Negatives keep at least this distance from any farm.
        negative_max_overlap: Largest share of a negative patch's area it may share with
            another negative (0 keeps negatives disjoint).
        block_size_m: Keep patches inside the split blocks of this side (metres) whenever a farm
            fits in one. Defaults to ``tiles.block_size_m``, so set the block size once, under
            ``tiles``; set this only to differ (``null`` places patches freely). Patches of
            different blocks then never overlap, so the tiles stage's split groups (patches
            joined by overlap or a shared farm) stay small.
        hard_negatives_file: Optional vector file (e.g. a previous run's
            ``predict/false_positives.gpkg``, or roads/water/roof samples) whose features become
            extra negative patches centred on them (kept ``negative_buffer_m`` from farms).
        max_hard_negatives: At most this many hard negatives are planned.
        hard_negatives: Negative patches on the mapped objects an earlier run's label triage
            judges not to be farms, in training blocks only
            (:class:`~pipeline.config.feedback.HardNegativesConfig`; the review file's path
            alone will do; its split settings follow ``tiles``). ``None`` (default): none.
    """

    digest_optional: ClassVar[frozenset[str]] = frozenset({"hard_negatives"})

    source: Literal["file", "overpass"] = "file"
    osm_file: Path | None = None
    overpass_url: str = "https://overpass-api.de/api/interpreter"
    overpass_format: Literal["json", "xml"] = "json"
    timeout_s: float = Field(default=180.0, gt=0)
    retries: int = Field(default=5, ge=0)
    backoff_s: float = Field(default=2.0, ge=0)
    max_backoff_s: float = Field(default=120.0, ge=0)
    overpass_cache: bool = True
    aoi_bbox: tuple[float, float, float, float] | None = None
    aoi_crs: str = "EPSG:4326"
    aoi_file: Path | None = None
    min_area_m2: float = Field(default=5000.0, ge=0)
    generator_merge_fraction: float = Field(default=0.5, gt=0, le=1)
    generator_cluster_gap_m: float = Field(default=10.0, ge=0)
    patch_size: int = Field(default=256, ge=32)
    gsd: float = Field(default=10.0, gt=0)
    negatives_per_positive: float = Field(default=1.0, ge=0)
    negative_buffer_m: float = Field(default=500.0, ge=0)
    negative_max_overlap: float = Field(default=0.25, ge=0, le=1)
    block_size_m: float | None = Field(default=DEFAULT_BLOCK_SIZE_M, gt=0)
    hard_negatives_file: Path | None = None
    max_hard_negatives: int = Field(default=100, ge=0)
    hard_negatives: HardNegativesConfig | None = None

    @model_validator(mode="after")
    def _source_complete(self) -> LabelsConfig:
        if self.source == "file" and self.osm_file is None:
            raise ValueError(
                "labels.source is 'file' but labels.osm_file is not set; "
                "set labels.osm_file to an .osm/.osm.pbf/.osm.bz2 path"
            )
        if self.aoi_bbox is None and self.aoi_file is None and self.source == "overpass":
            raise ValueError(
                "labels.source is 'overpass' but no AOI is given; "
                "set labels.aoi_bbox or labels.aoi_file"
            )
        if self.aoi_bbox is not None and self.aoi_file is not None:
            raise ValueError(
                "labels.aoi_bbox and labels.aoi_file are both set; keep only one of them"
            )
        if self.aoi_bbox is not None:
            minx, miny, maxx, maxy = self.aoi_bbox
            if not (minx < maxx and miny < maxy):
                raise ValueError(
                    f"labels.aoi_bbox {list(self.aoi_bbox)} is empty: it must be "
                    "[minx, miny, maxx, maxy] with minx < maxx and miny < maxy"
                )
        return self
