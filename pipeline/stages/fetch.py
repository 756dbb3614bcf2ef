"""fetch stage: plan.gpkg -> one cloud-screened, harmonized 10-band COG (+ SCL) per patch.

For each planned patch, in a thread pool: search candidate items (footprint, dates, cloud
cover), screen each candidate scene on the patch's SCL window, choose the clearest, read its
bands into the patch grid, harmonize and write ``paths.image(pid)`` and ``paths.scl(pid)``.
A patch whose files carry this run's ``fetch_digest`` tag is reused. Patches that fail after
retries are listed in ``fetch/index.gpkg`` and ``fetch/summary.json``; the stage then raises
:class:`~pipeline.errors.FetchError` (non-zero exit) after finishing every other patch.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import geopandas as gpd
import rasterio
import requests
from rasterio.errors import RasterioError
from tqdm import tqdm

from pipeline.bands import BANDS
from pipeline.config import RunConfig
from pipeline.config.fetch import RUNTIME_FIELDS, FetchConfig
from pipeline.errors import FetchError, MissingArtifactError, PipelineError
from pipeline.geo.gdal_env import gdal_env
from pipeline.geo.raster import write_cog
from pipeline.io import atomic_path, write_json
from pipeline.net import RetryPolicy
from pipeline.paths import RunPaths
from pipeline.stac.assets import Signer, resolve_provider, signer_for
from pipeline.stac.patch import PatchSpec, ReadSettings, Submit, fetch_patch
from pipeline.stac.read import gdal_options
from pipeline.stac.source import ItemQuery, ItemSource, StacApiSource, StaticCatalogSource
from pipeline.stages.base import StageOutput

log = logging.getLogger(__name__)

INDEX_COLUMNS = (
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
)
#: Errors that fail one patch (recorded) rather than the stage.
PATCH_ERRORS = (PipelineError, RasterioError, requests.RequestException, OSError)


def read_plan(path: Path) -> list[PatchSpec]:
    """Patch specs of ``plan.gpkg`` (layer ``plan``).

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


def output_settings(fc: FetchConfig) -> dict[str, Any]:
    """What changes the written patches: the fetch settings but :data:`RUNTIME_FIELDS`, and the
    :func:`catalog_stamp` of a local static catalog."""
    out = {k: v for k, v in fc.model_dump(mode="json").items() if k not in RUNTIME_FIELDS}
    return {**out, "catalog_stamp": catalog_stamp(fc.catalog)}


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


def open_source(fc: FetchConfig, provider: str) -> ItemSource:
    """The item source of ``fetch.catalog``."""
    policy = RetryPolicy(fc.retries, fc.backoff_s)
    if provider == "static":
        static = StaticCatalogSource(fc.catalog)
        static.load()  # a missing catalog is one stage error, not one error per patch
        return static
    return StacApiSource(fc.catalog, policy=policy, timeout_s=fc.timeout_s, page_size=fc.page_size)


def read_settings(fc: FetchConfig) -> ReadSettings:
    return ReadSettings(
        min_clear=fc.min_clear_fraction,
        target_date=fc.target_date,
        clear_tie=fc.clear_tie,
        double_correction_warn=fc.double_correction_warn,
        policy=RetryPolicy(fc.retries, fc.backoff_s),
        gdal=gdal_options(
            retries=fc.retries, retry_delay_s=fc.gdal_retry_delay_s, timeout_s=fc.timeout_s
        ),
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


def _row(
    spec: PatchSpec, status: str, reason: str, paths: RunPaths | None, tags: dict[str, str]
) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in INDEX_COLUMNS}
    row.update(patch_id=spec.patch_id, status=status, reason=reason, geometry=spec.footprint)
    if paths is not None:
        row["image"] = paths.relative(paths.image(spec.patch_id))
        row["scl"] = paths.relative(paths.scl(spec.patch_id))
    for key in ("item_id", "datetime", "platform", "processing_baseline", "harmonization"):
        row[key] = tags.get(key)
    for key in ("clear_fraction", "snow_fraction"):
        row[key] = float(tags[key]) if key in tags else None
    return row


def process_patch(
    spec: PatchSpec,
    *,
    source: ItemSource,
    fc: FetchConfig,
    settings: ReadSettings,
    signer: Signer,
    submit: Submit,
    paths: RunPaths,
    digest: str,
) -> tuple[dict[str, Any], list[str], bool]:
    """Fetch one patch (or reuse it) and write its files; never raises for a patch error.

    Returns:
        ``(index row, warnings, reused)``.
    """
    tags = existing_tags(paths, spec.patch_id, digest)
    if tags is not None:
        return (
            _row(spec, "ok", "reused (files match this config and plan row)", paths, tags),
            [],
            True,
        )
    try:
        query = ItemQuery(
            spec.footprint, fc.collection, fc.datetime, fc.max_cloud_cover, fc.max_items
        )
        items = source.search(query)
        result = fetch_patch(spec, items, settings, signer, submit)
    except PATCH_ERRORS as err:
        msg = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"
        log.error("patch %s failed: %s", spec.patch_id, msg)
        return _row(spec, "failed", msg[:500], None, {}), [], False
    if result.status != "ok" or result.image is None or result.scl is None:
        log.info("patch %s skipped: %s", spec.patch_id, result.reason)
        return _row(spec, "skipped", result.reason, None, {}), [], False
    tags = {**result.tags, "fetch_digest": digest, "patch_id": spec.patch_id}
    grid = spec.grid
    with gdal_env(**settings.gdal):  # single-threaded compression: patches run in parallel
        write_cog(
            paths.scl(spec.patch_id),
            result.scl[None],
            grid,
            band_names=["SCL"],
            nodata=0,
            tags=tags,
            overview_resampling="nearest",
        )
        write_cog(
            paths.image(spec.patch_id), result.image, grid, band_names=BANDS, nodata=0, tags=tags
        )
    return _row(spec, "ok", result.reason, paths, tags), result.warnings, False


def write_index(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``fetch/index.gpkg`` (layer ``patches``, EPSG:4326), written atomically."""
    frame = gpd.GeoDataFrame(
        rows, columns=[*INDEX_COLUMNS, "geometry"], geometry="geometry", crs="EPSG:4326"
    )
    with atomic_path(path) as tmp:
        frame.to_file(tmp, layer="patches", driver="GPKG")
    return path


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
    source = open_source(fc, provider)
    signer = signer_for(provider)
    settings = read_settings(fc)
    out_settings = output_settings(fc)
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    reused = 0
    with (
        ThreadPoolExecutor(fc.workers, thread_name_prefix="fetch-patch") as pool,
        ThreadPoolExecutor(fc.read_threads, thread_name_prefix="fetch-read") as reads,
        tqdm(total=len(specs), desc="fetch", unit="patch", disable=not fc.progress or None) as bar,
    ):
        futures = [
            pool.submit(
                process_patch,
                spec,
                source=source,
                fc=fc,
                settings=settings,
                signer=signer,
                submit=reads.submit,
                paths=paths,
                digest=spec.digest(out_settings),
            )
            for spec in specs
        ]
        for fut in as_completed(futures):
            row, warn, was_reused = fut.result()
            rows.append(row)
            warnings += warn
            reused += was_reused
            bar.update(1)
    rows.sort(key=lambda r: r["patch_id"])
    index = write_index(paths.fetch_index, rows)
    summary = summarize(rows, warnings, reused, provider)
    write_json(paths.stage_dir("fetch") / "summary.json", summary)
    if summary["failed"]:
        failed = summary["failures"]
        raise FetchError(
            f"{len(failed)} of {len(rows)} patches failed after {fc.retries} retries "
            f"({'; '.join(f'{k}: {v}' for k, v in list(failed.items())[:5])}). The other patches "
            f"are written and listed in {paths.fetch_index}. Check the catalog/network and re-run "
            "`make fetch`: finished patches are reused"
        )
    outputs = [index, paths.stage_dir("fetch") / "summary.json"]
    for row in rows:
        if row["status"] == "ok":
            outputs += [paths.image(row["patch_id"]), paths.scl(row["patch_id"])]
    return StageOutput(outputs=outputs, summary=summary)


def summarize(
    rows: list[dict[str, Any]], warnings: list[str], reused: int, provider: str
) -> dict[str, Any]:
    """Counts, skip reasons, failures and warnings for the manifest."""
    by = {s: [r for r in rows if r["status"] == s] for s in ("ok", "skipped", "failed")}
    return {
        "provider": provider,
        "patches": len(rows),
        "ok": len(by["ok"]),
        "reused": reused,
        "skipped": len(by["skipped"]),
        "failed": len(by["failed"]),
        "skips": {r["patch_id"]: r["reason"] for r in by["skipped"]},
        "failures": {r["patch_id"]: r["reason"] for r in by["failed"]},
        "warnings": warnings,
        "harmonization": sorted({str(r["harmonization"]) for r in by["ok"]}),
        "snow_patches": sum(1 for r in by["ok"] if (r["snow_fraction"] or 0) > 0),
        "items_used": sorted({str(r["item_id"]) for r in by["ok"]}),
    }
