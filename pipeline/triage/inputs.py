"""Reading what the triage compares: labels, the model's objects, attribution and flags.

The labels are required; the map is preferred, predict's polygons stand in without it; the
attribution and the audit's flags are used when present.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio

from pipeline.errors import LabelsError, MissingArtifactError
from pipeline.paths import RunPaths
from pipeline.triage.objects import ObjectSource, Scene, from_map, from_predicted

#: The summary's words when there is no map.
NO_MAP_NOTE = (
    "no map (map/farms.gpkg): triaged the predicted patches only (predict/farms.gpkg); "
    "farms outside the patches are not compared. Run `make map` for a wall-to-wall triage"
)


@dataclass(frozen=True)
class Objects:
    """The model's objects, where they come from, and a note when that is not the map."""

    frame: gpd.GeoDataFrame
    source: ObjectSource
    note: str


def read_optional(path: Path, layer: str) -> gpd.GeoDataFrame:
    """Layer ``layer`` of ``path`` in EPSG:4326 (no rows when the file does not exist)."""
    if not path.is_file():
        return gpd.GeoDataFrame(geometry=[], crs=4326)
    frame = gpd.read_file(path, layer=layer)
    return frame.to_crs(4326) if frame.crs is not None else frame.set_crs(4326)


def read_labels(paths: RunPaths, run: str) -> gpd.GeoDataFrame:
    """``labels/farms.gpkg`` in EPSG:4326.

    Raises:
        MissingArtifactError: the labels stage has not run.
        LabelsError: the layer has no ``farm_id`` column.
    """
    if not paths.farms.is_file():
        raise MissingArtifactError("the labelled farms", paths.farms, f"labels RUN={run}")
    labels = read_optional(paths.farms, "farms")
    if "farm_id" not in labels:
        raise LabelsError(
            f"{paths.farms} has no farm_id column (columns: {list(labels.columns)}); re-run "
            f"`make labels RUN={run}` to rewrite it"
        )
    return labels.reset_index(drop=True)


def read_objects(paths: RunPaths, run: str) -> Objects:
    """The map's farms, else predict's polygons (merged across patches), with a note.

    Raises:
        MissingArtifactError: neither the map nor predict has written its farms.
    """
    if paths.map_farms.is_file():
        frame = from_map(read_optional(paths.map_farms, "farms"))
        frame["quicklook"] = [_existing(paths, paths.map_patch(f)) for f in frame["object_id"]]
        return Objects(frame, "map", "")
    if paths.predicted_farms.is_file():
        frame = from_predicted(read_optional(paths.predicted_farms, "farms"), read_scenes(paths))
        if len(frame):
            frame["quicklook"] = [_existing(paths, paths.image(p)) for p in frame["patch_id"]]
        return Objects(frame, "predict", NO_MAP_NOTE)
    raise MissingArtifactError(
        "the model's farms (map/farms.gpkg or predict/farms.gpkg)",
        paths.map_farms,
        f"map RUN={run}",
    )


def _existing(paths: RunPaths, path: Path) -> str:
    """Run-relative ``path`` when the file exists, else ""."""
    return paths.relative(path) if path.is_file() else ""


def read_scenes(paths: RunPaths) -> dict[str, Scene]:
    """Each fetched patch's acquisition ``(item id, ISO day)`` from ``fetch/index.gpkg``."""
    if not paths.fetch_index.is_file():
        return {}
    index = pyogrio.read_dataframe(paths.fetch_index, read_geometry=False)
    ok = index[index["status"] == "ok"]
    return {
        str(p): (str(i), str(d)[:10])
        for p, i, d in zip(ok["patch_id"], ok["item_id"], ok["datetime"], strict=True)
    }


def label_quicklooks(paths: RunPaths, farm_ids: pd.Series) -> pd.Series:
    """Run-relative path of the first attribution quicklook of each label farm that has one
    (``attribute/quicklooks/``; "" when none), same index as ``farm_ids``."""
    found: dict[str, str] = {}
    if paths.attribution_index.is_file():
        index = pd.read_csv(paths.attribution_index, dtype=str, keep_default_na=False)
        rows = index[(index["target"] == "label_farms") & (index["status"] == "ok")]
        for fid, method, path in zip(rows["target_id"], rows["method"], rows["path"], strict=True):
            png = paths.quicklook(method, "label_farms", Path(path).stem)
            if fid not in found and png.is_file():
                found[fid] = paths.relative(png)
    return farm_ids.astype(str).map(lambda f: found.get(f, ""))
