"""What the report reads: the audit's tables, the model's scores and log, the run's layers.

Every reader takes :class:`~pipeline.paths.RunPaths` and returns an empty value when an
optional input is missing (a run without a training log, without a map), so the page can say
so instead of failing. Only the audit's flag table is required.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
from affine import Affine
from rasterio.errors import RasterioError

from pipeline.errors import MissingArtifactError
from pipeline.geo.raster import Grid, read_decimated
from pipeline.paths import RunPaths
from pipeline.report.cards import records
from pipeline.report.html import TriageView

log = logging.getLogger(__name__)

#: Largest side (pixels) a patch is read at for the overview mosaic.
OVERVIEW_PATCH_SIDE = 128


def read_csv(path: Path) -> pd.DataFrame:
    """A table, empty when the file is missing or empty; ids read as text."""
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path, dtype={"patch_id": str, "target_id": str})
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def read_json(path: Path, default: Any) -> Any:
    """A JSON file, or ``default`` when it is missing."""
    return json.loads(path.read_text()) if path.is_file() else default


def read_flags(paths: RunPaths, run: str) -> pd.DataFrame:
    """The audit's flag table, ``audit/flags.csv`` (``target_id`` ``""`` when none).

    Raises:
        MissingArtifactError: the audit has not run.
    """
    if not paths.flags.is_file():
        raise MissingArtifactError("the audit's flags", paths.flags, f"audit RUN={run}")
    flags = read_csv(paths.flags)
    if not flags.empty:
        flags["target_id"] = flags["target_id"].fillna("").astype(str)
    return flags


def read_attribution_rows(paths: RunPaths) -> pd.DataFrame:
    """The attribution index rows that have a raster (skipped rows have none)."""
    index = read_csv(paths.attribution_index)
    if index.empty:
        return index
    index["target_id"] = index["target_id"].fillna("").astype(str)
    return index[(index["status"] == "ok") & index["path"].notna()]


def read_training_log(paths: RunPaths) -> pd.DataFrame:
    """Lightning's CSV log of the training run (empty when there is none)."""
    return read_csv(paths.train_metrics)


def read_layer(path: Path) -> gpd.GeoDataFrame:
    """A polygon layer in EPSG:4326 (empty when the file is missing or has no rows)."""
    if not path.is_file():
        return gpd.GeoDataFrame(geometry=[], crs=4326)
    frame = gpd.read_file(path)
    return frame.to_crs(4326) if frame.crs is not None else frame.set_crs(4326)


def fetched_patch_ids(paths: RunPaths) -> list[str]:
    """Ids of the patches the fetch stage wrote (status ``ok``), sorted."""
    if not paths.fetch_index.is_file():
        return []
    index = pyogrio.read_dataframe(paths.fetch_index, read_geometry=False)
    return sorted(index.loc[index["status"] == "ok", "patch_id"].astype(str))


def _decimated_truecolour(path: Path, side: int) -> tuple[np.ndarray, Grid] | None:
    """B04, B03, B02 of a raster read at most ``side`` pixels a side, and that read's grid."""
    try:
        with rasterio.open(path) as src:
            names = [d or "" for d in src.descriptions]
            full = Grid(src.crs, src.transform, src.height, src.width)
        if all(b in names for b in ("B04", "B03", "B02")):
            bands = [names.index(b) + 1 for b in ("B04", "B03", "B02")]
        else:
            bands = [1, 2, 3]  # a plain RGB mosaic
        array, _ = read_decimated(path, bands, side)
    except (RasterioError, OSError, ValueError) as err:
        log.warning("%s left out of the overview: %s", path, err)
        return None
    scale = Affine.scale(full.width / array.shape[2], full.height / array.shape[1])
    return array, Grid(full.crs, full.transform @ scale, array.shape[1], array.shape[2])


def truecolour_sources(paths: RunPaths, epsgs: set[int]) -> tuple[list[Path], str]:
    """The rasters the overview's background is made of, and how to say where it comes from.

    The map stage's true-colour mosaics when the run has them (one per UTM zone in
    ``epsgs``), else every fetched patch.
    """
    mosaics = [paths.map_truecolour(e) for e in sorted(epsgs) if paths.map_truecolour(e).is_file()]
    if mosaics:
        return mosaics, "the map's true-colour mosaic (B04 B03 B02)"
    patches = [paths.image(p) for p in fetched_patch_ids(paths) if paths.image(p).is_file()]
    return patches, "true colour (B04 B03 B02) of the fetched patches; grey: not fetched"


def read_truecolour(files: list[Path], side: int) -> Iterator[tuple[np.ndarray, Grid]]:
    """Each file's true colour read small (a generator: one file in memory at a time)."""
    for path in files:
        found = _decimated_truecolour(path, side)
        if found is not None:
            yield found


def zones(paths: RunPaths) -> set[int]:
    """EPSG codes of the run's patch grids (from the plan)."""
    if not paths.plan.is_file():
        return set()
    plan = pyogrio.read_dataframe(paths.plan, read_geometry=False, columns=["epsg"])
    return {int(e) for e in plan["epsg"].dropna().unique()}


def read_triage(paths: RunPaths, rows: int) -> TriageView | None:
    """The first ``rows`` candidates and suspects of ``triage/review.gpkg`` and a note on the
    lists (``None`` when the triage has not run)."""
    if not paths.triage_review.is_file():
        return None
    layers = {
        name: pyogrio.read_dataframe(paths.triage_review, layer=name, read_geometry=False)
        for name in ("candidates", "suspects")
    }
    summary = read_json(paths.manifest("triage"), {}).get("summary", {})
    note = (
        f"{len(layers['candidates'])} mapped farm(s) with no OpenStreetMap farm (strongest "
        f"evidence first) and {len(layers['suspects'])} OpenStreetMap farm(s) the model does "
        f"not find or finds only from their surroundings; the first {rows} of each. Exports "
        "for human review, never an upload: triage/review.gpkg and triage/review.geojson."
    )
    if summary.get("note"):
        note += f" Note: {summary['note']}."
    return TriageView(
        records(layers["candidates"].head(rows)), records(layers["suspects"].head(rows)), note
    )
