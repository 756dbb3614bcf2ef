"""Fetching planned patches: one Dask task per patch that never raises, and the index it feeds.

:class:`PatchFetcher` holds what every patch of a run shares (the settings, the provider, the
output paths) and is sent with each task. :meth:`PatchFetcher.reused` tells (on the client)
whether a patch's files carry this run's digest; :meth:`PatchFetcher.fetch` does one patch from
its candidate items (picked from the one search of all patches,
:func:`pipeline.stac.candidates.footprint_candidates`): screen and read the scene
(:func:`pipeline.stac.patch.fetch_patch`, reads on a thread pool) and write the image and SCL
COGs. :func:`fetch_on` runs the tasks on a Dask client. Each patch
becomes one row of ``fetch/index.gpkg`` (:data:`INDEX_COLUMNS`, :func:`index_row`);
:func:`summarize` counts them for the manifest and ``fetch/summary.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import geopandas as gpd
import numpy as np
import pystac
import rasterio
import requests
from rasterio.errors import RasterioError
from shapely.geometry.base import BaseGeometry

from pipeline.bands import BANDS
from pipeline.compute import run_tasks, worker_count
from pipeline.config.compute import ComputeConfig
from pipeline.config.fetch import RUNTIME_FIELDS, FetchConfig
from pipeline.errors import MissingArtifactError, PipelineError
from pipeline.geo.gdal_env import gdal_env
from pipeline.geo.styles import (
    patch_style,
    scl_style,
    write_patch_cogs,
    write_style,
)
from pipeline.net import RetryPolicy
from pipeline.paths import RunPaths
from pipeline.stac.alternates import (
    alternates_current,
    alternates_digest,
    listed,
    write_alternates,
)
from pipeline.stac.assets import Provider, signer_for
from pipeline.stac.patch import PatchSpec, ReadSettings, fetch_patch
from pipeline.stac.read import gdal_options
from pipeline.stac.source import ItemQuery, ItemSource, StacApiSource, StaticCatalogSource

log = logging.getLogger(__name__)

#: Columns of ``fetch/index.gpkg`` (layer ``patches``, EPSG:4326), besides the geometry.
INDEX_COLUMNS: Final[tuple[str, ...]] = (
    "patch_id",
    "status",
    "reason",
    "image",
    "scl",
    "item_id",
    "datetime",
    "platform",
    "processing_baseline",
    "harmonization",
    "clear_fraction",
    "snow_fraction",
    "alternates",
)
#: Fetch settings kept out of a patch's digest: they add files beside the patch (its other
#: acquisitions, with a digest of their own) and never change the patch's own files.
BESIDE_FIELDS: Final[frozenset[str]] = frozenset({"alternates"})
#: Version of the patch files' layout, part of every patch digest: patches written by an older
#: layout (no band scale, colour table or style) are fetched again rather than reused.
PATCH_FORMAT: Final[int] = 2

#: Errors that fail one patch (recorded) rather than the stage.
PATCH_ERRORS = (PipelineError, RasterioError, requests.RequestException, OSError)

Row = dict[str, Any]


def read_plan(path: Path) -> list[PatchSpec]:
    """Patch specs of ``plan.gpkg`` (layer ``plan``), footprints in EPSG:4326.

    Raises:
        MissingArtifactError: the plan does not exist.
    """
    if not path.is_file():
        raise MissingArtifactError("the patch plan", path, "labels")
    frame = gpd.read_file(path, layer="plan").to_crs(4326)
    return [
        PatchSpec(
            str(r.patch_id),
            int(r.epsg),
            float(r.x0),
            float(r.y0),
            int(r.size),
            float(r.gsd),
            r.geometry,
        )
        for r in frame.itertuples()
    ]


def catalog_stamp(catalog: str) -> str | None:
    """Fingerprint of a local static catalog's files (path, size, modification time).

    A catalog rebuilt at the same path (a demo world re-planted) must not be served from the
    patches of the old one. ``None`` for a STAC API or a remote catalog, whose items are taken
    as immutable, as published Sentinel-2 items are.
    """
    if "://" in catalog and not catalog.startswith("file://"):
        return None
    path = Path(catalog.removeprefix("file://"))
    if not path.is_file():
        return None
    root = path.parent
    digest = hashlib.sha256()
    for f in sorted(q for q in root.rglob("*") if q.is_file()):
        st = f.stat()
        digest.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def output_settings(fc: FetchConfig) -> dict[str, Any]:
    """What changes the written patches: the fetch settings but :data:`RUNTIME_FIELDS` and
    :data:`BESIDE_FIELDS`, and the
    :func:`catalog_stamp` of a local static catalog."""
    skip = RUNTIME_FIELDS | BESIDE_FIELDS
    out = {k: v for k, v in fc.model_dump(mode="json").items() if k not in skip}
    return {**out, "catalog_stamp": catalog_stamp(fc.catalog), "format": PATCH_FORMAT}


def open_source(fc: FetchConfig, provider: str) -> ItemSource:
    """The item source of ``fetch.catalog`` (a static catalog is loaded now, once).

    Raises:
        FetchError: a static catalog is missing or unreadable.
    """
    policy = RetryPolicy(fc.retries, fc.backoff_s)
    if provider == "static":
        static = StaticCatalogSource(fc.catalog)
        static.load()  # a missing catalog is one stage error, not one error per patch
        return static
    return StacApiSource(fc.catalog, policy=policy, timeout_s=fc.timeout_s, page_size=fc.page_size)


def item_query(fc: FetchConfig, geometry: BaseGeometry) -> ItemQuery:
    """The search of ``geometry`` in the fetch settings' collection, dates and cloud cover."""
    return ItemQuery(geometry, fc.collection, fc.datetime, fc.max_cloud_cover, fc.max_items)


def fetch_cluster(fc: FetchConfig, cc: ComputeConfig) -> ComputeConfig:
    """The cluster of a fetch: a local one runs ``fetch.workers`` patches at once, spread over
    its workers as threads (fetching is I/O bound); an existing cluster runs as many as it has
    threads."""
    if cc.scheduler is not None:
        return cc
    per_worker = max(cc.threads_per_worker, math.ceil(fc.workers / worker_count(cc)))
    return cc.model_copy(update={"threads_per_worker": per_worker})


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def read_pool(threads: int) -> ThreadPoolExecutor:
    """This process's pool of ``threads`` band-read threads, shared by every patch task in it
    and kept for the process's life: a thread's GDAL and PROJ state is set up once, not once
    per patch (fresh threads per patch cost about 40 % more CPU on the demo)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="fetch-read")
        return pool


def fetch_on(
    client: Any,
    fetcher: PatchFetcher,
    jobs: Sequence[tuple[PatchSpec, list[dict[str, Any]]]],
    *,
    retries: int,
    bar: bool | None = None,
) -> list[FetchedPatch]:
    """Every ``(patch, candidate item dicts)`` of ``jobs`` as one Dask task on ``client``
    (:func:`pipeline.compute.run_tasks`), in the order of ``jobs``.

    A task that raises (it should not) or is lost with its workers after ``retries`` retries
    becomes a failed row, like any patch error; the others go on.
    """
    return run_tasks(
        client,
        fetcher.fetch,
        jobs,
        what="fetch",
        unit="patches",
        retries=retries,
        on_error=lambda i, err: fetcher.failed(jobs[i][0], err),
        bar=bar,
    )


def read_settings(fc: FetchConfig) -> ReadSettings:
    """Scene screening, retries and GDAL options of every patch read."""
    return ReadSettings(
        min_clear=fc.min_clear_fraction,
        target_date=fc.target_date,
        clear_tie=fc.clear_tie,
        double_correction_warn=fc.double_correction_warn,
        policy=RetryPolicy(fc.retries, fc.backoff_s),
        gdal=gdal_options(
            retries=fc.retries, retry_delay_s=fc.gdal_retry_delay_s, timeout_s=fc.timeout_s
        ),
        alternates=fc.alternates,
    )


def existing_tags(paths: RunPaths, pid: str, digest: str) -> dict[str, str] | None:
    """Tags of a finished patch written with ``digest``, else None (then it is fetched)."""
    image, scl = paths.image(pid), paths.scl(pid)
    if not (image.is_file() and scl.is_file()):
        return None
    try:
        with rasterio.open(image) as src, rasterio.open(scl) as ssrc:
            tags = src.tags()
            ok = (
                tags.get("fetch_digest") == digest
                and ssrc.tags().get("fetch_digest") == digest
                and tuple(src.descriptions) == BANDS
            )
    except RasterioError:
        return None
    return tags if ok else None


def index_row(
    spec: PatchSpec,
    status: str,
    reason: str,
    files: tuple[str, str] | None = None,
    tags: dict[str, str] | None = None,
    alternates: Sequence[str] = (),
) -> Row:
    """One row of the fetch index (:data:`INDEX_COLUMNS` and the EPSG:4326 footprint).

    Args:
        spec: The planned patch.
        status: ``ok``, ``skipped`` or ``failed``.
        reason: Why (the scene chosen, the skip or the error).
        files: ``(image, scl)`` relative to the run folder, for written patches.
        tags: The patch image's tags (scene, platform, harmonization, clear and snow shares).
        alternates: Item ids of the patch's other acquisitions kept (``fetch.alternates``).
    """
    tags = tags or {}
    row: Row = {c: None for c in INDEX_COLUMNS}
    row.update(patch_id=spec.patch_id, status=status, reason=reason, geometry=spec.footprint)
    if files is not None:
        row["image"], row["scl"] = files
    for key in ("item_id", "datetime", "platform", "processing_baseline", "harmonization"):
        row[key] = tags.get(key)
    for key in ("clear_fraction", "snow_fraction"):
        row[key] = float(tags[key]) if key in tags else None
    row["alternates"] = json.dumps(list(alternates))
    return row


def error_text(err: BaseException) -> str:
    """``Type: first line of the message`` (for the index and the summary)."""
    first = str(err).strip().splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {first}"


@dataclass(frozen=True)
class FetchedPatch:
    """What one patch gave: its index row, scene warnings, and whether its files were reused."""

    row: Row
    warnings: list[str] = field(default_factory=list)
    reused: bool = False


@dataclass(frozen=True)
class PatchFetcher:
    """Everything the patches of one fetch share; sent to every Dask task (small, picklable).

    Attributes:
        fc: The ``fetch`` section.
        settings: Scene screening and read settings.
        provider: Signs asset URLs (Planetary Computer) or passes them through.
        paths: Where the patch files go.
        out_settings: :func:`output_settings`, hashed into each patch's digest.
    """

    fc: FetchConfig
    settings: ReadSettings
    provider: Provider
    paths: RunPaths
    out_settings: dict[str, Any]

    def files(self, pid: str) -> tuple[str, str]:
        """The patch's image and SCL paths relative to the run folder."""
        return self.paths.relative(self.paths.image(pid)), self.paths.relative(self.paths.scl(pid))

    def reused(self, spec: PatchSpec) -> FetchedPatch | None:
        """The patch's result when its files carry this run's digest, else None."""
        digest = spec.digest(self.out_settings)
        tags = existing_tags(self.paths, spec.patch_id, digest)
        if tags is None:
            return None
        if not alternates_current(self.paths, spec.patch_id, digest, self.fc.alternates):
            return None
        reason = "reused (files match this config and plan row)"
        row = index_row(spec, "ok", reason, self.files(spec.patch_id), tags, self.kept(spec))
        return FetchedPatch(row, [], reused=True)

    def kept(self, spec: PatchSpec) -> list[str]:
        """Item ids of the patch's alternates on disk (none when ``fetch.alternates`` is 0)."""
        if self.fc.alternates == 0:
            return []
        doc = listed(self.paths, spec.patch_id) or {}
        return [str(a["item_id"]) for a in doc.get("alternates", [])]

    def failed(self, spec: PatchSpec, err: BaseException) -> FetchedPatch:
        """The failed row of a patch (logged)."""
        msg = error_text(err)
        log.error("patch %s failed: %s", spec.patch_id, msg)
        return FetchedPatch(index_row(spec, "failed", msg[:500]))

    def fetch(self, spec: PatchSpec, items: Sequence[dict[str, Any]]) -> FetchedPatch:
        """Fetch one patch from its candidate items (:func:`~pipeline.stac.candidates.portable`
        dicts) and write its files, reads on the process's :func:`read_pool`; a Dask task that
        never raises for a patch error. Files are written atomically, so a task run twice (a
        retry, a worker lost mid-write) leaves one whole pair of files."""
        digest = spec.digest(self.out_settings)
        try:
            candidates = [pystac.Item.from_dict(doc) for doc in items]
            reads = read_pool(self.fc.read_threads)
            result = fetch_patch(
                spec, candidates, self.settings, signer_for(self.provider), reads.submit
            )
        except PATCH_ERRORS as err:
            return self.failed(spec, err)
        image, scl = result.image, result.scl
        if result.status != "ok" or image is None or scl is None:
            log.info("patch %s skipped: %s", spec.patch_id, result.reason)
            return FetchedPatch(index_row(spec, "skipped", result.reason))
        tags = {**result.tags, "fetch_digest": digest, "patch_id": spec.patch_id}
        self.write(spec, image, scl, tags)
        kept = []
        if self.fc.alternates:
            alt_digest = alternates_digest(digest, self.fc.alternates)
            with gdal_env(**self.settings.gdal):
                entries = write_alternates(
                    self.paths, spec.patch_id, spec.grid, result.alternates, alt_digest
                )
            kept = [str(e["item_id"]) for e in entries]
        row = index_row(spec, "ok", result.reason, self.files(spec.patch_id), tags, kept)
        return FetchedPatch(row, result.warnings)

    def write(
        self, spec: PatchSpec, image: np.ndarray, scl: np.ndarray, tags: dict[str, str]
    ) -> None:
        """The patch's SCL ``(H, W)`` and 10-band ``(C, H, W)`` uint16 COGs on its grid, each
        with its GDAL encoding (reflectance scale; SCL colour table and class names) and its
        QGIS style beside it."""
        scl_path, image_path = self.paths.scl(spec.patch_id), self.paths.image(spec.patch_id)
        with gdal_env(**self.settings.gdal):  # single-threaded compression: patches in parallel
            write_patch_cogs(image_path, scl_path, image, scl, spec.grid, tags)
        write_style(scl_path, scl_style())
        write_style(image_path, patch_style(image, BANDS))


def index_frame(rows: Sequence[Row]) -> gpd.GeoDataFrame:
    """``fetch/index.gpkg`` as a frame (:data:`INDEX_COLUMNS`, EPSG:4326 footprints)."""
    return gpd.GeoDataFrame(
        list(rows), columns=[*INDEX_COLUMNS, "geometry"], geometry="geometry", crs="EPSG:4326"
    )


def summarize(patches: Sequence[FetchedPatch], provider: str) -> dict[str, Any]:
    """Counts, skip reasons, failures and warnings for the manifest and ``summary.json``."""
    rows = [p.row for p in patches]
    by = {s: [r for r in rows if r["status"] == s] for s in ("ok", "skipped", "failed")}
    return {
        "provider": provider,
        "patches": len(rows),
        "ok": len(by["ok"]),
        "reused": sum(p.reused for p in patches),
        "skipped": len(by["skipped"]),
        "failed": len(by["failed"]),
        "skips": {r["patch_id"]: r["reason"] for r in by["skipped"]},
        "failures": {r["patch_id"]: r["reason"] for r in by["failed"]},
        "warnings": [w for p in patches for w in p.warnings],
        "harmonization": sorted({str(r["harmonization"]) for r in by["ok"]}),
        "snow_patches": sum(1 for r in by["ok"] if (r["snow_fraction"] or 0) > 0),
        "items_used": sorted({str(r["item_id"]) for r in by["ok"]}),
        "patches_with_alternates": sum(
            1 for r in by["ok"] if r.get("alternates") not in (None, "", "[]")
        ),
    }
