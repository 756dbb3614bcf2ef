"""Map a whole area: one search, the chunk plan, the Dask run, then mosaics, farms, catalog.

:func:`map_region` is the stage's body without the config: it takes a :class:`MapRequest`, a
Dask client, an item source and the labels, and writes every output under ``map/``. Outputs
that span chunks (mosaics, farms, catalog, farm patches) are published only when every chunk
succeeded; otherwise it raises :class:`~pipeline.errors.MapError` and keeps the finished chunks
for the re-run.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import pystac
import shapely

from pipeline.bands import BANDS
from pipeline.errors import MapError
from pipeline.geo.masks import farms_on_grid, grid_footprint_lonlat
from pipeline.io import atomic_path, write_json
from pipeline.mapping.catalog import ZoneOutputs, build_catalog
from pipeline.mapping.chunks import ChunkResult, ChunkSettings, chunk_digest
from pipeline.mapping.engine import ChunkPlan, EngineReport, run_chunks
from pipeline.mapping.farms import FarmRules, farm_frame, merge_pieces
from pipeline.mapping.gaps import gap_frame, write_gaps
from pipeline.mapping.grid import Zone, plan_chunks, split_zones
from pipeline.mapping.mosaic import write_zone_mosaic
from pipeline.mapping.patches import PatchItem, PatchJob, cut_farm_patch, patch_grid
from pipeline.mapping.provenance import (
    Acquisition,
    acquisitions,
    provenance_dtype,
    write_acquisitions,
)
from pipeline.mapping.search import AreaQuery, chunk_candidates
from pipeline.osm.geometry import utm_epsg
from pipeline.paths import RunPaths
from pipeline.stac.assets import Signer, band_hrefs
from pipeline.stac.radiometry import harmonization_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MapRequest:
    """One area to map and how.

    Attributes:
        query: The area and its one catalog search.
        chunk_px: Chunk core side in pixels.
        halo_px: Halo in pixels.
        gsd: Pixel size in metres.
        settings: Chunk task settings (threshold and model resolved).
        rules: How pieces become farms.
        farm_patches: Cut a patch around every mapped farm.
        patch_px: Side of a farm patch in pixels.
        retries: Retries of a failing Dask task.
        digest: What every chunk digest starts from (settings that change chunk files).
        config_digest: The stage's config digest (STAC property).
    """

    query: AreaQuery
    chunk_px: int
    halo_px: int
    gsd: float
    settings: ChunkSettings
    rules: FarmRules
    farm_patches: bool
    patch_px: int
    retries: int
    digest: Mapping[str, Any]
    config_digest: str


def plan_area(
    request: MapRequest, table: Sequence[Acquisition], paths: RunPaths, signer: Signer
) -> tuple[list[Zone], ChunkPlan]:
    """Zones, chunks, their candidate items, hrefs and digests (client side, no task yet)."""
    area = request.query.area
    zones = split_zones(area)
    chunks = plan_chunks(area, request.chunk_px, request.halo_px, request.gsd)
    if not chunks:
        raise MapError(
            f"the area {[round(v, 5) for v in area.bounds]} has no extent to map; "
            "check map.area_bbox / map.area_file"
        )
    items = [item for acq in table for item in acq.items]
    hrefs = {
        (item.id, band): href
        for item in items
        for band, href in band_hrefs(item, (*BANDS, "SCL"), signer).items()
    }
    offsets = {item.id: harmonization_for(item).offset_dn for item in items}
    candidates = {c.chunk_id: chunk_candidates(c, table) for c in chunks}
    keys = {a.index: a.key for a in table}
    digests = {
        c.chunk_id: chunk_digest(
            {
                **request.digest,
                "chunk": c.chunk_id,
                "area_piece": shapely.to_wkb(c.piece, hex=True),
                "acquisitions": [
                    [i, keys[i], list(candidates[c.chunk_id].items[i])]
                    for i in candidates[c.chunk_id].acquisitions
                ],
            }
        )
        for c in chunks
    }
    outputs = {
        c.chunk_id: (str(paths.map_chunk(c.chunk_id)), str(paths.map_chunk_provenance(c.chunk_id)))
        for c in chunks
    }
    plan = ChunkPlan(chunks, table, candidates, hrefs, offsets, digests, outputs)
    return zones, plan


def _failure_message(report: EngineReport, total: int) -> str:
    shown = "; ".join(f"{cid}: {msg}" for cid, msg in sorted(report.failures.items())[:5])
    return (
        f"{len(report.failures)} of {total} chunks failed ({shown}). No mosaic was published; "
        "the finished chunks are kept. Fix the cause and re-run `make map`: finished chunks "
        "are reused"
    )


def _mosaics(
    zones: Sequence[Zone],
    plan: ChunkPlan,
    report: EngineReport,
    paths: RunPaths,
    request: MapRequest,
) -> list[ZoneOutputs]:
    tags = {
        "model_sha256": request.settings.model.sha256,
        "config_digest": request.config_digest,
        "acquisitions": paths.map_acquisitions.name,
    }
    table = {a.index: a for a in plan.table}
    out = []
    for zone in zones:
        chunks = [c for c in plan.chunks if c.epsg == zone.epsg]
        if not chunks:
            continue
        done = [c.chunk_id for c in chunks if c.chunk_id in report.results]
        prob = {cid: Path(plan.outputs[cid][0]) for cid in done}
        prov = {cid: Path(plan.outputs[cid][1]) for cid in done}
        write_zone_mosaic(
            chunks,
            prob,
            paths.map_probability(zone.epsg),
            dtype="float32",
            band_name="probability",
            nodata=float("nan"),
            tags=tags,
        )
        write_zone_mosaic(
            chunks,
            prov,
            paths.map_provenance(zone.epsg),
            dtype=request.settings.provenance_dtype,
            band_name="acquisition",
            nodata=0,
            tags=tags,
        )
        used = sorted({i for cid in done for i in report.results[cid].used})
        out.append(
            ZoneOutputs(
                zone,
                paths.map_probability(zone.epsg),
                paths.map_provenance(zone.epsg),
                [table[i] for i in used] or list(plan.table),
            )
        )
    return out


def write_gpkg(frame: gpd.GeoDataFrame, path: Path, layer: str) -> Path:
    """``frame`` as a one-layer GeoPackage, atomically (an empty frame as Polygon)."""
    with atomic_path(path) as tmp:
        frame.to_file(
            tmp, layer=layer, driver="GPKG", geometry_type="Polygon" if frame.empty else None
        )
    return path


def _patch_jobs(
    farms: gpd.GeoDataFrame,
    table: Sequence[Acquisition],
    plan: ChunkPlan,
    labels: gpd.GeoDataFrame,
    paths: RunPaths,
    request: MapRequest,
) -> list[PatchJob]:
    scenes = {
        a.index: [
            PatchItem(
                item.id,
                plan.offsets[item.id],
                {b: plan.hrefs[(item.id, b)] for b in (*BANDS, "SCL")},
            )
            for item in a.items
        ]
        for a in table
    }
    jobs = []
    for row in farms.itertuples():
        zones = [int(z) for z in str(row.epsg).split(";")]
        c = row.geometry.centroid
        zone = utm_epsg(c.x, c.y) if utm_epsg(c.x, c.y) in zones else zones[0]
        grid = patch_grid(row.geometry, zone, request.patch_px, request.gsd)
        _, label_geoms = farms_on_grid(labels, grid) if len(labels) else ([], [])
        fid = str(row.farm_id)
        jobs.append(
            PatchJob(
                fid,
                grid,
                scenes,
                str(paths.map_probability(zone)),
                str(paths.map_provenance(zone)),
                label_geoms,
                {
                    "image": str(paths.map_patch(fid)),
                    "scl": str(paths.map_patch_scl(fid)),
                    "prob": str(paths.map_patch_probability(fid)),
                    "mask": str(paths.map_patch_mask(fid)),
                },
                {"model_sha256": request.settings.model.sha256},
            )
        )
    return jobs


def cut_patches(
    client: Any, jobs: Sequence[PatchJob], paths: RunPaths, request: MapRequest
) -> gpd.GeoDataFrame:
    """Cut every farm patch on Dask and index them (``patches.gpkg`` rows).

    Raises:
        MapError: a patch cannot be read or written.
    """
    shutil.rmtree(paths.map_patches_dir, ignore_errors=True)  # farms of an earlier run
    token = uuid.uuid4().hex[:8]
    futures = [
        client.submit(
            cut_farm_patch,
            job,
            request.settings.policy,
            dict(request.settings.gdal),
            key=f"patch-{job.farm_id}-{token}",
            retries=request.retries,
        )
        for job in jobs
    ]
    try:
        client.gather(futures)
    except Exception as err:
        raise MapError(
            f"cutting the mapped farms' patches failed ({type(err).__name__}: {err}); the "
            "mosaics and farms.gpkg are written. Re-run `make map` (finished chunks are reused)"
        ) from err
    rows = [
        {
            "patch_id": job.farm_id,
            "farm_id": job.farm_id,
            "epsg": int(job.grid.crs.to_epsg()),
            **{k: paths.relative(Path(v)) for k, v in job.out.items()},
            "geometry": grid_footprint_lonlat(job.grid),
        }
        for job in jobs
    ]
    columns = ["patch_id", "farm_id", "epsg", "image", "scl", "prob", "mask", "geometry"]
    return gpd.GeoDataFrame(rows, columns=columns, geometry="geometry", crs=4326)


def _summary(
    zones: Sequence[Zone], plan: ChunkPlan, report: EngineReport, request: MapRequest
) -> dict[str, Any]:
    pixels = sum(r.pixels for r in report.results.values())
    used = sorted({i for r in report.results.values() for i in r.used})
    return {
        "zones": [z.epsg for z in zones],
        "chunks": {"total": len(plan.chunks), **report.counts()},
        "gaps": dict(sorted(report.gaps.items())),
        "failures": dict(sorted(report.failures.items())),
        "acquisitions": len(plan.table),
        "acquisitions_used": used,
        "catalog_searches": 1,
        "block_tasks": report.block_tasks,
        "pixels_mapped": pixels,
        "km2_mapped": round(pixels * request.gsd**2 / 1e6, 4),
        "engine_seconds": round(report.seconds, 3),
    }


def map_region(
    request: MapRequest,
    items: Sequence[pystac.Item],
    paths: RunPaths,
    client: Any,
    signer: Signer,
    labels: gpd.GeoDataFrame,
    *,
    on_result: Callable[[ChunkResult, EngineReport], None] | None = None,
    patch_farms: gpd.GeoDataFrame | None = None,
) -> tuple[list[Path], dict[str, Any]]:
    """Map ``request``'s area from ``items`` (its one search); returns ``(outputs, summary)``.

    ``patch_farms`` (an earlier window of a map over time): cut the farm patches around these
    farms (the latest window's) instead of the ones mapped here.

    Raises:
        MapError: some chunks failed (named, with the fix); finished chunks are kept.
    """
    table = acquisitions(items)
    settings = replace(request.settings, provenance_dtype=provenance_dtype(len(table)))
    request = replace(request, settings=settings)
    zones, plan = plan_area(request, table, paths, signer)
    log.info(
        "map: %d chunk(s) in %d zone(s), %d acquisition(s) from one search",
        len(plan.chunks),
        len(zones),
        len(table),
    )
    report = run_chunks(client, plan, settings, retries=request.retries, on_result=on_result)
    summary = _summary(zones, plan, report, request)
    summary["workers"] = len(client.nthreads())
    write_json(paths.map_summary, summary)
    if report.failures:
        raise MapError(_failure_message(report, len(plan.chunks)))
    write_acquisitions(paths.map_acquisitions, table)
    zone_outputs = _mosaics(zones, plan, report, paths, request)
    by_id = {c.chunk_id: c for c in plan.chunks}
    gaps = gap_frame([(by_id[cid], reason) for cid, reason in sorted(report.gaps.items())])
    write_gaps(paths.map_gaps, gaps)
    pieces = [
        p
        for c in plan.chunks
        if c.chunk_id in report.results
        for p in report.results[c.chunk_id].pieces
    ]
    farms = farm_frame(merge_pieces(pieces, table, request.rules), labels, request.rules.match_iou)
    write_gpkg(farms, paths.map_farms, "farms")
    build_catalog(
        paths.map_catalog,
        zone_outputs,
        farms=paths.map_farms,
        acquisitions_csv=paths.map_acquisitions,
        model_sha256=settings.model.sha256,
        config_digest=request.config_digest,
    )
    outputs = [
        *(z.probability for z in zone_outputs),
        *(z.provenance for z in zone_outputs),
        paths.map_farms,
        paths.map_gaps,
        paths.map_acquisitions,
        paths.map_catalog,
        paths.map_chunks_dir,
        paths.map_summary,
    ]
    around = farms if patch_farms is None else patch_farms
    if request.farm_patches:
        jobs = _patch_jobs(around, table, plan, labels, paths, request)
        index = cut_patches(client, jobs, paths, request)
        outputs += [write_gpkg(index, paths.map_patches_index, "patches")]
        if jobs:
            outputs.append(paths.map_patches_dir)
    summary.update(
        mapped_farms=len(farms),
        in_osm=int(farms["in_osm"].sum()) if len(farms) else 0,
        farm_patches=len(around) if request.farm_patches else 0,
    )
    write_json(paths.map_summary, summary)
    return outputs, summary
