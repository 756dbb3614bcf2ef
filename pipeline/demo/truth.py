"""Ground truth of a demo world: what was planted where (``<world>/truth/``).

The pipeline never reads it; tests and the shortcut experiment score against it.

- ``farms.gpkg`` (layer ``farms``, EPSG:32618): ``farm_id`` (``w<id>``/``r<id>``, the OSM
  object the labels stage will report), ``osm_ids`` (JSON list of way ids), ``role``, ``shape``,
  ``area_m2``, ``split`` and ``block`` (by :mod:`pipeline.geo.splits` at the centroid),
  ``pv_cover``, ``row_azimuth_deg``, ``row_pitch_m``, ``gain`` (the panel rows as rendered by
  :func:`pipeline.demo.render.plant_farm`), ``snow_planted`` (snow was planted for it),
  ``snow_beside`` (snow within 500 m of its edge), ``distance_to_snow_m`` (NaN without snow).
- ``snow.gpkg`` (layer ``snow``): ``snow_id``, ``near_farm`` (farm_id or ""), ``area_m2``.
- ``distractors.gpkg`` (layer ``distractors``): ``distractor_id``, ``kind``, ``cover``, ``area_m2``.
- ``snow.tif``: uint8 mask (1 = at least half the 10 m pixel under snow) on the world 10 m grid.
- ``truth.json``: counts, ids of the special OSM objects, seed, mode, item ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd

from pipeline.errors import MissingArtifactError
from pipeline.io import atomic_path, write_json

CRS = "EPSG:32618"
FILES = ("farms.gpkg", "snow.gpkg", "distractors.gpkg", "snow.tif", "truth.json")


@dataclass(frozen=True)
class Truth:
    """A demo world's ground truth.

    Attributes:
        farms: Planted farms (EPSG:32618), columns as in the module docstring.
        snow: Snow blobs (EPSG:32618).
        distractors: Unlabelled look-alikes (EPSG:32618).
        snow_mask: Path of ``snow.tif`` (uint8, world 10 m grid).
        summary: Contents of ``truth.json``.
        root: The ``truth/`` folder.
    """

    farms: gpd.GeoDataFrame
    snow: gpd.GeoDataFrame
    distractors: gpd.GeoDataFrame
    snow_mask: Path
    summary: dict[str, Any]
    root: Path


def write_layer(path: Path, frame: gpd.GeoDataFrame, layer: str) -> Path:
    """Write ``frame`` as a one-layer GeoPackage, atomically."""
    with atomic_path(path) as tmp:
        frame.to_file(tmp, layer=layer, driver="GPKG")
    return path


def write_truth(
    folder: Path,
    farms: gpd.GeoDataFrame,
    snow: gpd.GeoDataFrame,
    distractors: gpd.GeoDataFrame,
    summary: dict[str, Any],
) -> None:
    """Write the vector layers and ``truth.json`` into ``folder`` (``snow.tif`` is separate)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_layer(folder / "farms.gpkg", farms, "farms")
    write_layer(folder / "snow.gpkg", snow, "snow")
    write_layer(folder / "distractors.gpkg", distractors, "distractors")
    write_json(folder / "truth.json", summary)


def load_truth(world: Path) -> Truth:
    """Read the truth of the demo world folder ``world`` (``data/worlds/<name>``).

    Raises:
        MissingArtifactError: the world or one of its truth files is missing.
    """
    root = Path(world) / "truth"
    for name in FILES:
        if not (root / name).is_file():
            raise MissingArtifactError(
                f"demo-world truth file {name}", root / name, "world RUN=<run>"
            )
    return Truth(
        farms=gpd.read_file(root / "farms.gpkg", layer="farms"),
        snow=gpd.read_file(root / "snow.gpkg", layer="snow"),
        distractors=gpd.read_file(root / "distractors.gpkg", layer="distractors"),
        snow_mask=root / "snow.tif",
        summary=json.loads((root / "truth.json").read_text()),
        root=root,
    )
