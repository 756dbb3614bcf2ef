"""fetch stage: plan.gpkg -> one cloud-screened, harmonized 10-band COG (+ SCL) per patch.

For each planned patch, in a thread pool: search candidate items (footprint, dates, cloud
cover), screen each candidate scene on the patch's SCL window, choose the clearest, read its
bands into the patch grid, harmonize and write ``paths.image(pid)`` and ``paths.scl(pid)``
(:meth:`pipeline.stac.fetch.PatchFetcher.fetch`). A patch whose files carry this run's
``fetch_digest`` tag is reused. Patches that fail after retries are listed in
``fetch/index.gpkg`` and ``fetch/summary.json``; the stage then raises
:class:`~pipeline.errors.FetchError` (non-zero exit) after finishing every other patch.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, as_completed

from pipeline.config import RunConfig
from pipeline.config.fetch import FetchConfig
from pipeline.errors import FetchError
from pipeline.geo.styles import patch_file_style, scl_style, style_path
from pipeline.geo.vrt import zone_vrts
from pipeline.io import atomic_path, write_json
from pipeline.paths import RunPaths
from pipeline.progress import Progress
from pipeline.stac.assets import Provider, resolve_provider, signer_for
from pipeline.stac.fetch import (
    FetchedPatch,
    PatchFetcher,
    index_frame,
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
    specs: list[PatchSpec], fc: FetchConfig, paths: RunPaths, provider: Provider
) -> list[FetchedPatch]:
    """Every patch of ``specs`` through a pool of ``fc.workers`` (reads on ``fc.read_threads``).

    Returns:
        One result per patch, by patch id.
    """
    source = open_source(fc, provider)
    done: list[FetchedPatch] = []
    with (
        ThreadPoolExecutor(fc.workers, thread_name_prefix="fetch-patch") as pool,
        ThreadPoolExecutor(fc.read_threads, thread_name_prefix="fetch-read") as reads,
        Progress("fetch", len(specs), "patches", bar=None if fc.progress else False) as bar,
    ):
        fetcher = PatchFetcher(
            source,
            fc,
            read_settings(fc),
            signer_for(provider),
            reads.submit,
            paths,
            output_settings(fc),
        )
        for fut in as_completed([pool.submit(fetcher.fetch, spec) for spec in specs]):
            done.append(fut.result())
            bar.update(1)
    return sorted(done, key=lambda p: p.row["patch_id"])


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    """Fetch every planned patch.

    Raises:
        MissingArtifactError: no plan.
        FetchError: one or more patches failed after retries (raised after all others finish;
            index.gpkg and summary.json list them).
    """
    fc = cfg.fetch
    specs = read_plan(paths.plan)
    provider = resolve_provider(fc.provider, fc.catalog)
    patches = fetch_all(specs, fc, paths, provider)
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
    images, scls = [paths.image(p) for p in ok], [paths.scl(p) for p in ok]
    outputs = [
        paths.fetch_index,
        paths.fetch_summary,
        *zone_vrts(images, paths.patches_vrt, patch_file_style),
        *zone_vrts(scls, paths.scl_vrt, lambda _vrt: scl_style()),
    ]
    for raster in (*images, *scls):
        outputs += [raster, style_path(raster)]
    return StageOutput(outputs=outputs, summary=summary)
