"""map stage: the model applied wall to wall over an area, chunk by chunk on Dask.

Resolves the area (``map.area_*``, else the labels AOI), searches the catalog once, maps every
chunk (:mod:`pipeline.mapping`) and publishes per-zone probability and provenance COGs,
``farms.gpkg``, ``gaps.gpkg``, ``acquisitions.csv``, a STAC catalog and farm patches. With
``map.windows`` every window is mapped on the same chunks (:mod:`pipeline.mapping.windows`) and
the timeline of the farms is written (:mod:`pipeline.timeline`). The Dask cluster comes from
``compute:``, which never changes what is written.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import geopandas as gpd
from shapely.geometry.base import BaseGeometry

from pipeline.bands import BANDS
from pipeline.compute import open_client, worker_count
from pipeline.config import RunConfig, config_digest
from pipeline.errors import LabelsError, MapError, MissingArtifactError
from pipeline.geo.aoi import aoi_from_bbox, aoi_from_file
from pipeline.io import sha256_file
from pipeline.mapping.chunks import ChunkSettings, ModelLoader, ModelRef
from pipeline.mapping.farms import FarmRules
from pipeline.mapping.region import MapRequest
from pipeline.mapping.search import AreaQuery, search_area
from pipeline.mapping.windows import map_windows, union_interval, windows_of
from pipeline.model.io import load_model
from pipeline.model.window import WindowSpec, resolve_device
from pipeline.net import RetryPolicy
from pipeline.paths import RunPaths
from pipeline.stac.assets import resolve_provider, signer_for
from pipeline.stac.fetch import catalog_stamp, open_source
from pipeline.stac.read import gdal_options
from pipeline.stages.base import StageOutput
from pipeline.timeline.build import TimelineSpec, build_timeline
from pipeline.timeline.catalog import collection_lookup

log = logging.getLogger(__name__)

#: Config sections the map's outputs depend on (never ``compute``).
SECTIONS = ("map", "predict", "fetch")


def resolve_area(cfg: RunConfig, paths: RunPaths) -> BaseGeometry:
    """The area in EPSG:4326: ``map.area_bbox``, ``map.area_file``, else the labels AOI.

    Raises:
        MapError: the area is empty or unreadable, or the labels AOI was never written.
    """
    mc = cfg.map
    try:
        if mc.area_bbox is not None:
            return aoi_from_bbox(mc.area_bbox, mc.area_crs)
        if mc.area_file is not None:
            return aoi_from_file(mc.area_file)
    except LabelsError as err:
        raise MapError(str(err).replace("labels.aoi_", "map.area_")) from err
    if not paths.aoi.is_file():
        raise MissingArtifactError(
            "the labels AOI (written by the labels stage since the map stage exists; re-run "
            "labels with --force if it is older)",
            paths.aoi,
            f"labels RUN={cfg.run.name}",
        )
    return gpd.read_file(paths.aoi).to_crs(4326).union_all()


def request_for(
    cfg: RunConfig, paths: RunPaths, area: BaseGeometry, loader: ModelLoader = load_model
) -> MapRequest:
    """The :class:`MapRequest` of the config (loads the model once here for its threshold).

    Args:
        cfg: The run config.
        paths: The run's paths.
        area: The area (EPSG:4326).
        loader: Loads ``model.pt`` (here and once in every worker).
    """
    mc, fc, pc = cfg.map, cfg.fetch, cfg.predict
    sha = sha256_file(paths.model)
    _, meta = loader(paths.model)
    device = resolve_device(pc.device)
    spec = WindowSpec(pc.window, pc.overlap, pc.blend, pc.batch_size)
    target = mc.target_date or fc.target_date
    datetime = mc.datetime or fc.datetime
    settings = ChunkSettings(
        max_scenes=mc.max_scenes,
        clear_tie=fc.clear_tie,
        target_date=target,
        window=spec,
        device=str(device),
        threads=cfg.compute.threads_per_worker,
        threshold=mc.threshold if mc.threshold is not None else float(meta.threshold),
        policy=RetryPolicy(fc.retries, fc.backoff_s),
        provenance_dtype="uint8",
        model=ModelRef(str(paths.model.resolve()), sha, loader),
        gdal=gdal_options(
            retries=fc.retries, retry_delay_s=fc.gdal_retry_delay_s, timeout_s=fc.timeout_s
        ),
    )
    digest = {
        "grid": [mc.chunk_px, mc.halo_px, mc.gsd],
        "scenes": [mc.max_scenes, fc.clear_tie, str(target), datetime, fc.collection],
        "window": [pc.window, pc.overlap, pc.blend],
        "device": device.type,
        "model_sha256": sha,
        "catalog_stamp": catalog_stamp(fc.catalog),
        "bands": list(BANDS),
    }
    query = AreaQuery(
        area,
        fc.catalog,
        fc.collection,
        datetime,
        mc.max_cloud_cover if mc.max_cloud_cover is not None else fc.max_cloud_cover,
        mc.max_items,
    )
    rules = FarmRules(
        mc.gsd,
        mc.min_area_m2 if mc.min_area_m2 is not None else pc.min_polygon_area_m2,
        mc.match_iou if mc.match_iou is not None else pc.match_iou,
    )
    return MapRequest(
        query,
        mc.chunk_px,
        mc.halo_px,
        mc.gsd,
        settings,
        rules,
        mc.farm_patches,
        cfg.labels.patch_size,
        cfg.compute.retries,
        digest,
        config_digest(cfg, SECTIONS),
    )


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    """Map the area (see the module docstring).

    Raises:
        MissingArtifactError: no model, labels or labels AOI.
        MapError: no imagery for the area, or chunks that failed (finished ones are kept).
        ComputeError: the Dask scheduler cannot be reached.
    """
    start = time.perf_counter()
    if not paths.model.is_file():
        raise MissingArtifactError("the trained model", paths.model, f"train RUN={cfg.run.name}")
    area = resolve_area(cfg, paths)
    windows = windows_of(cfg.map, cfg.fetch)
    request = request_for(cfg, paths, area)
    provider = resolve_provider(cfg.fetch.provider, cfg.fetch.catalog)
    source, signer = open_source(cfg.fetch, provider), signer_for(provider)
    query = replace(request.query, datetime=union_interval(windows))
    items = search_area(source, query)  # one search for every window, before any cluster
    labels = (
        gpd.read_file(paths.farms).to_crs(4326) if paths.farms.is_file() else gpd.GeoDataFrame()
    )
    with open_client(cfg.compute) as client:
        outputs, summary, runs = map_windows(request, windows, items, paths, client, signer, labels)
    if len(runs) > 1:
        collection, settings = cfg.map.landcover_collection, request.settings
        lookup = (
            collection_lookup(source, collection, area, signer, settings.policy, settings.gdal)
            if collection
            else None
        )
        spec = TimelineSpec(request.settings.threshold, request.gsd, request.rules.min_area_m2)
        more, summary["timeline"] = build_timeline(runs, paths, spec, lookup)
        outputs += more
    summary.update(
        workers=summary.get("workers", worker_count(cfg.compute)),
        threshold=request.settings.threshold,
        provider=provider,
        seconds=round(time.perf_counter() - start, 2),
    )
    log.info(
        "map: %d farms (%d in OSM), %.1f km² mapped, %d gap chunk(s)",
        summary["mapped_farms"],
        summary["in_osm"],
        summary["km2_mapped"],
        summary["chunks"]["gaps"],
    )
    return StageOutput(outputs=outputs, summary=summary)
