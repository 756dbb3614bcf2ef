"""fetch stage: plan.gpkg -> one cloud-screened, harmonized 10-band COG (+ SCL) per patch.

A patch whose files carry this run's ``fetch_digest`` tag is reused. The catalog is searched
once for all other patches (their union and the date window), and each patch takes its
candidates from that result (:func:`pipeline.stac.candidates.footprint_candidates`). Each
patch is then one task on the Dask cluster of ``compute:`` (:func:`pipeline.stac.fetch.fetch_on`):
screen every candidate scene on the patch's SCL window, choose the clearest, read its bands into
the patch grid (reads on a thread pool), harmonize and write ``paths.image(pid)`` and
``paths.scl(pid)`` atomically, and with ``fetch.alternates`` the patch's other acquisitions in
the window under ``fetch/alternates/`` (:mod:`pipeline.stac.alternates`). Patches that fail
after retries are listed in ``fetch/index.gpkg`` and ``fetch/summary.json``; the stage then raises
:class:`~pipeline.errors.FetchError` (non-zero exit) after finishing every other patch.
"""

from __future__ import annotations

import logging

from pipeline.compute import open_client
from pipeline.config import RunConfig
from pipeline.errors import FetchError
from pipeline.geo.styles import patch_file_style, scl_style, style_path
from pipeline.geo.vrt import zone_vrts
from pipeline.io import atomic_path, write_json
from pipeline.paths import RunPaths
from pipeline.stac.alternates import alternate_files, drop_alternates
from pipeline.stac.assets import Provider, resolve_provider
from pipeline.stac.candidates import footprint_candidates, portable_all
from pipeline.stac.fetch import (
    PATCH_ERRORS,
    FetchedPatch,
    PatchFetcher,
    fetch_cluster,
    fetch_on,
    index_frame,
    item_query,
    open_source,
    output_settings,
    read_plan,
    read_settings,
    summarize,
)
from pipeline.stac.patch import PatchSpec
from pipeline.stages.base import StageOutput

log = logging.getLogger(__name__)


def fetch_all(
    specs: list[PatchSpec], cfg: RunConfig, paths: RunPaths, provider: Provider
) -> list[FetchedPatch]:
    """Every patch of ``specs``: reused, or searched (once for all) and fetched on Dask.

    Returns:
        One result per patch, by patch id.
    """
    fc = cfg.fetch
    fetcher = PatchFetcher(fc, read_settings(fc), provider, paths, output_settings(fc))
    reuse = {s.patch_id: fetcher.reused(s) for s in specs}
    done = [p for p in reuse.values() if p is not None]
    todo = [s for s in specs if reuse[s.patch_id] is None]
    if todo:
        source = open_source(fc, provider)
        footprints = {s.patch_id: s.footprint for s in todo}
        try:
            candidates = portable_all(
                footprint_candidates(source, item_query(fc, todo[0].footprint), footprints)
            )
        except PATCH_ERRORS as err:  # the one search failed: so did every patch's
            return sorted([*done, *(fetcher.failed(s, err) for s in todo)], key=_pid)
        jobs = [(s, candidates[s.patch_id]) for s in todo]
        cluster = fetch_cluster(fc, cfg.compute)  # I/O bound: local workers are threads
        with open_client(cluster, processes=False) as client:
            bar = None if fc.progress else False
            done += fetch_on(client, fetcher, jobs, retries=cfg.compute.retries, bar=bar)
    return sorted(done, key=_pid)


def _pid(patch: FetchedPatch) -> str:
    return str(patch.row["patch_id"])


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    """Fetch every planned patch.

    Raises:
        MissingArtifactError: no plan.
        FetchError: one or more patches failed after retries (raised after all others finish;
            index.gpkg and summary.json list them).
        ComputeError: the Dask scheduler (``compute.scheduler``) cannot be reached.
    """
    fc = cfg.fetch
    specs = read_plan(paths.plan)
    provider = resolve_provider(fc.provider, fc.catalog)
    patches = fetch_all(specs, cfg, paths, provider)
    rows = [p.row for p in patches]
    with atomic_path(paths.fetch_index) as tmp:
        index_frame(rows).to_file(tmp, layer="patches", driver="GPKG")
    summary = summarize(patches, provider)
    write_json(paths.fetch_summary, summary)
    if summary["failed"]:
        failed = summary["failures"]
        raise FetchError(
            f"{len(failed)} of {len(rows)} patches failed after {fc.retries} retries "
            f"({'; '.join(f'{k}: {v}' for k, v in list(failed.items())[:5])}). The other patches "
            f"are written and listed in {paths.fetch_index}. Check the catalog/network and re-run "
            "`make fetch`: finished patches are reused"
        )
    ok = [row["patch_id"] for row in rows if row["status"] == "ok"]
    if not fc.alternates:  # acquisitions an earlier config kept are not this config's
        drop_alternates(paths, ok)
    images, scls = [paths.image(p) for p in ok], [paths.scl(p) for p in ok]
    outputs = [
        paths.fetch_index,
        paths.fetch_summary,
        *zone_vrts(images, paths.patches_vrt, patch_file_style),
        *zone_vrts(scls, paths.scl_vrt, lambda _vrt: scl_style()),
        *(alternate_files(paths, ok) if fc.alternates else []),
    ]
    for raster in (*images, *scls):
        outputs += [raster, style_path(raster)]
    return StageOutput(outputs=outputs, summary=summary)
