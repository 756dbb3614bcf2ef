"""Reading the object layers (farms, predictions, errors, analyst polygons) defensively.

These GeoPackages come from other stages, possibly absent or of an older shape; every
problem becomes a recorded reason, never an exception and never a silent skip.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
from shapely.geometry import box

from pipeline.geo.raster import Grid

log = logging.getLogger(__name__)

#: Candidate id columns of each object kind, in order of preference.
ID_COLUMNS: dict[str, tuple[str, ...]] = {
    "predicted_farms": ("pred_id", "id"),
    "label_farms": ("farm_id", "id", "osm_id"),
    "false_positives": ("id", "pred_id"),
    "missed_farms": ("id", "farm_id"),
    "polygon": ("id",),
    "mapped_farms": ("farm_id",),
}

#: Kinds whose every object has a patch of its own, named by the object's id (the map stage
#: cuts one around each mapped farm): such an object is a target on that patch only.
OWN_PATCH: frozenset[str] = frozenset({"mapped_farms"})


@dataclass
class ObjectLayer:
    """One kind of object polygons, with a string id per row.

    Attributes:
        kind: Target name (``predicted_farms``, ``label_farms``, ``polygon``, ...).
        frame: Polygons with columns ``target_id`` and, when the source has one, ``patch_id``.
        by_crs: Cache of the frame reprojected to each patch CRS.
    """

    kind: str
    frame: gpd.GeoDataFrame
    by_crs: dict[str, gpd.GeoDataFrame] = field(default_factory=dict)

    def in_crs(self, crs: object) -> gpd.GeoDataFrame:
        key = str(crs)
        if key not in self.by_crs:
            self.by_crs[key] = self.frame.to_crs(crs)
        return self.by_crs[key]

    def for_patch(self, patch_id: str, grid: Grid) -> gpd.GeoDataFrame:
        """Rows of this patch, in the patch CRS: by ``patch_id`` when the layer has one (rows
        then keep their assignment even when they miss the patch, to be reported), else every
        polygon intersecting the patch footprint."""
        frame = self.in_crs(grid.crs)
        if "patch_id" in frame.columns:
            return frame[frame["patch_id"].astype(str) == patch_id]
        return frame[frame.intersects(box(*grid.bounds))]


def read_layer(kind: str, path: Path | None) -> tuple[ObjectLayer | None, str]:
    """Read one object layer; returns ``(layer or None, reason when None)``."""
    if path is None:
        return None, "no path configured"
    if not Path(path).is_file():
        return None, f"{path} does not exist (upstream stage not run or still being built)"
    try:
        frame = gpd.read_file(path)
    except Exception as err:  # pyogrio raises several types for unreadable files
        return None, f"{path} is unreadable: {err}"
    if frame.crs is None:
        return None, f"{path} has no CRS; it must be EPSG:4326 (or any declared CRS)"
    column = next((c for c in ID_COLUMNS.get(kind, ("id",)) if c in frame.columns), None)
    ids = frame[column].astype(str) if column is not None else [f"a{i}" for i in range(len(frame))]
    frame = frame.assign(target_id=np.asarray(ids, dtype=object))
    if kind in OWN_PATCH:
        frame = frame.assign(patch_id=frame["target_id"])
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    keep = ["target_id", "geometry"] + (["patch_id"] if "patch_id" in frame.columns else [])
    return ObjectLayer(kind, frame[keep].reset_index(drop=True)), ""


def read_layers(
    sources: Mapping[str, Path | None],
) -> tuple[dict[str, ObjectLayer], dict[str, str]]:
    """Read every object layer of ``sources`` (kind -> file).

    Returns:
        ``(layers by kind, reason by kind for each layer that could not be read)``.
    """
    layers: dict[str, ObjectLayer] = {}
    reasons: dict[str, str] = {}
    for kind, path in sources.items():
        layer, reason = read_layer(kind, path)
        if layer is None:
            reasons[kind] = reason
        else:
            layers[kind] = layer
    return layers, reasons
