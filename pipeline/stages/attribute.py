"""attribute stage: explain every configured target of every patch with every method.

Reads ``train/model.pt``, ``tiles/index.gpkg`` with its patches, (when present) the
predicted masks and object layers of ``predict/`` and ``labels/``, and for the
``mapped_farms`` target ``map/farms.gpkg`` and the patches the map stage cut around them.
Writes one float32 COG per (patch, method, target[, object]) under
``attribute/<method>/<target>/``, the index CSV, the per-farm GeoPackage
``attribute/farms.gpkg``, PNG quicklooks under ``attribute/quicklooks/``
and, when ``attribute.stitch`` is set, mosaics under ``attribute/scene/``. Each patch is one
Dask task on the ``compute:`` cluster (:mod:`pipeline.attribution.tasks`), which never changes
what is written; the work per patch is :func:`pipeline.attribution.patches.explain_patch`; the
tables are :mod:`pipeline.attribution.ledger`'s.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyogrio

from pipeline.attribution.ledger import (
    PatchRecords,
    combine,
    farms_frame,
    index_frame,
    mean_agreement,
    tally,
)
from pipeline.attribution.patches import object_layers
from pipeline.attribution.stitch import attribution_vrts, stitch_scenes
from pipeline.attribution.tasks import (
    AttributeSpec,
    missing_patches,
    patch_tasks,
    run_patches,
)
from pipeline.compute import open_client
from pipeline.config import RunConfig
from pipeline.config.attribute import AttributeConfig
from pipeline.errors import MissingArtifactError
from pipeline.geo.styles import style_path
from pipeline.io import atomic_path, sha256_file
from pipeline.mapping.chunks import ModelRef
from pipeline.model.io import load_model
from pipeline.model.window import resolve_device
from pipeline.paths import RunPaths
from pipeline.stages.base import StageOutput

log = logging.getLogger(__name__)


def read_tiles(paths: RunPaths, cfg: AttributeConfig) -> pd.DataFrame:
    """The patches to explain: tiles index rows of the configured splits, by patch id (none
    when ``mapped_farms`` is the only target and no analyst polygons are configured: those
    targets live on the map's patches only).

    Raises:
        MissingArtifactError: no tiles index.
    """
    if set(cfg.targets) == {"mapped_farms"} and cfg.analyst_polygons is None:
        return pd.DataFrame(columns=["patch_id", "split"])
    if not paths.tiles_index.is_file():
        raise MissingArtifactError("the tiles index", paths.tiles_index, "tiles")
    frame = pyogrio.read_dataframe(paths.tiles_index, layer="tiles", read_geometry=False)
    frame = frame[frame["split"].isin(cfg.splits)].sort_values("patch_id")
    if cfg.max_patches is not None:
        frame = frame.head(cfg.max_patches)
    return frame.reset_index(drop=True)


def read_mapped(paths: RunPaths, cfg: AttributeConfig) -> pd.DataFrame | None:
    """``map/patches.gpkg`` when ``mapped_farms`` is a target and the map stage cut patches
    (else ``None``; a missing ``map/farms.gpkg`` is recorded as an unavailable layer)."""
    if "mapped_farms" not in cfg.targets or not paths.map_patches_index.is_file():
        return None
    return pyogrio.read_dataframe(paths.map_patches_index, layer="patches", read_geometry=False)


def write_tables(paths: RunPaths, records: PatchRecords) -> list[Path]:
    """``attribute/index.csv`` and ``attribute/farms.gpkg``, each written atomically."""
    with atomic_path(paths.attribution_index) as tmp:
        index_frame(records.rows).to_csv(tmp, index=False)
    with atomic_path(paths.attribution_farms) as tmp:
        farms_frame(records.farms).to_file(tmp, layer="farms", driver="GPKG")
    return [paths.attribution_index, paths.attribution_farms]


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    """Explain the configured targets of every patch; see the module docstring.

    Raises:
        MissingArtifactError: no trained model or no tiles index.
    """
    acfg = cfg.attribute
    if not paths.model.is_file():
        raise MissingArtifactError("the trained model", paths.model, "train")
    model_sha = sha256_file(paths.model)
    tiles = read_tiles(paths, acfg)
    tasks = patch_tasks(tiles, read_mapped(paths, acfg), paths)
    layers, layer_skips = object_layers(acfg, paths)
    model = ModelRef(str(paths.model.resolve()), model_sha, load_model)
    threads = cfg.compute.threads_per_worker
    spec = AttributeSpec(acfg, cfg.run.seed, model, acfg.device, threads, paths, layers)
    with open_client(cfg.compute) as client:
        patch_records, patches_done = run_patches(client, spec, tasks, cfg.compute.retries)
    missing = missing_patches(layers, tasks, paths)
    records = combine([layer_skips, missing, *patch_records])
    scenes, stitch_notes = (
        stitch_scenes(records.rows, paths, acfg.stitch_max_pixels) if acfg.stitch else ([], {})
    )
    styles = [style_path(p) for p in records.outputs if p.suffix == ".tif"]
    vrts = attribution_vrts(records.rows, paths)
    outputs = [*records.outputs, *styles, *scenes, *vrts, *write_tables(paths, records)]
    counts = tally(records)
    log.info(
        "attribute: %d attributions written, %d skipped (%s), %d failed",
        counts["attributions"],
        counts["skipped"],
        ", ".join(f"{k}: {v}" for k, v in counts["skip_reasons"].items()) or "none",
        counts["failed"],
    )
    summary = {
        "patches": patches_done,
        "patches_in_index": len(tiles),
        "mapped_farm_patches": len(tasks) - len(tiles),
        **counts,
        "methods": list(acfg.methods),
        "targets": list(acfg.targets),
        "object_layers": sorted(layers),
        "device": str(resolve_device(acfg.device)),
        "model_sha256": model_sha,
        "quicklooks": records.quicklooks,
        "stitch_skips": stitch_notes,
        "predicted_mask_iou_with_predict": mean_agreement(records),
    }
    return StageOutput(outputs=outputs, summary=summary)
