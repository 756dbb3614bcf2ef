"""Ground truth of a demo world: what was planted where (``<world>/truth/``).

The pipeline never reads it; tests, the shortcut experiment, the label triage and the farms
over time score against it. All layers are EPSG:32618; dates are ISO days of acquisitions.

- ``farms.gpkg`` (layer ``farms``): one row per planted farm (standing in January).
  ``farm_id`` (``w<id>``/``r<id>``, the OSM object the labels stage will report; ``u<index>``
  for an unmapped farm, which has none), ``osm_ids`` (JSON list of way ids, ``[]`` when
  unmapped), ``role``, ``shape``, ``area_m2``, ``split`` and ``block`` (by
  :mod:`pipeline.geo.splits` at the centroid), ``pv_cover``, ``row_azimuth_deg``,
  ``row_pitch_m``, ``gain`` (the panel rows as rendered by
  :func:`pipeline.demo.render.plant_farm`), ``snow_planted`` (snow was planted for it),
  ``snow_beside`` (snow within 500 m of its edge), ``distance_to_snow_m`` (NaN without snow);
  label errors: ``in_osm`` (bool), ``label_error`` (``none``/``unmapped``/``shifted``),
  ``shift_dx_m``/``shift_dy_m`` (how far its OSM outline is moved; 0 unless shifted),
  ``osm_version``/``osm_timestamp`` (of its OSM object; 0 and "" when unmapped); history:
  ``built`` (first acquisition it is planted in), ``built_after`` (the last acquisition before
  it, "" when it stands from the first), ``extended_on`` (first acquisition with its full
  footprint, for the extended farm; else ""). The geometry is the January footprint.
- ``ghosts.gpkg`` (layer ``ghosts``): the OSM farms with nothing standing in January:
  ``ghost_id``, ``farm_id`` (``w<id>``, as the labels stage reports it), ``osm_type``,
  ``osm_id``, ``kind`` (``planned``/``construction``: ghost labels; ``removed``: the removed
  farm, still mapped), ``tags`` (JSON), ``osm_version``, ``osm_timestamp``, ``area_m2``,
  ``split``, ``block``, ``planted_until`` (last acquisition showing it; "" for ghost labels).
- ``footprints.gpkg`` (layer ``footprints``): one row per farm (the removed farm included) and
  footprint phase: ``farm_id``, ``phase`` (``full``; ``first`` for the extended farm's partial
  first footprint), ``first_date``, ``last_date`` ("" while it stands in the last
  acquisition), ``area_m2``.
- ``history.csv``: one row per farm (the removed farm included) and acquisition: ``farm_id``,
  ``item_id``, ``date``, ``role``, ``window``, ``present``, ``area_m2`` (planted footprint, 0
  when absent).
- ``snow.gpkg`` (layer ``snow``): ``snow_id``, ``near_farm`` (farm_id or ""), ``area_m2``.
- ``distractors.gpkg`` (layer ``distractors``): ``distractor_id``, ``kind``, ``cover``, ``area_m2``.
- ``snow.tif``: uint8 mask (1 = at least half the 10 m pixel under snow) on the world 10 m grid;
  the snow is in the ``clear`` and ``cloudy`` items only.
- ``truth.json``: counts, ids of the special OSM objects, seed, mode; the label errors
  (``unmapped_farms``, ``shifted_farms``, ``ghost_labels``, ``n_osm_farms``: what the labels
  stage should find); the history (``windows``: days per window, ``extended_farm``,
  ``extended_on``, ``removed_farm``, ``removed_after``); ``snow_item`` and ``snowfree_item``;
  ``items`` (``id``, ``datetime``, ``cloud_cover``, ``role``: clear/cloudy/snowfree/history,
  ``snow``: the planted snow is in it, ``window``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from pipeline.errors import MissingArtifactError
from pipeline.io import atomic_path, write_json

CRS = "EPSG:32618"
#: Vector layers: file name -> layer name.
LAYERS = {
    "farms.gpkg": "farms",
    "ghosts.gpkg": "ghosts",
    "footprints.gpkg": "footprints",
    "snow.gpkg": "snow",
    "distractors.gpkg": "distractors",
}
FILES = (*LAYERS, "history.csv", "snow.tif", "truth.json")


@dataclass(frozen=True)
class TruthTables:
    """The truth as written (columns as in the module docstring)."""

    farms: gpd.GeoDataFrame
    snow: gpd.GeoDataFrame
    distractors: gpd.GeoDataFrame
    ghosts: gpd.GeoDataFrame
    footprints: gpd.GeoDataFrame
    history: pd.DataFrame
    summary: dict[str, Any]


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
        ghosts: OSM farms with nothing standing in January (EPSG:32618).
        footprints: Footprint phases of every farm (EPSG:32618).
        history: Per farm and acquisition, standing or not and the planted area.
    """

    farms: gpd.GeoDataFrame
    snow: gpd.GeoDataFrame
    distractors: gpd.GeoDataFrame
    snow_mask: Path
    summary: dict[str, Any]
    root: Path
    ghosts: gpd.GeoDataFrame
    footprints: gpd.GeoDataFrame
    history: pd.DataFrame


def write_layer(path: Path, frame: gpd.GeoDataFrame, layer: str) -> Path:
    """Write ``frame`` as a one-layer GeoPackage, atomically."""
    with atomic_path(path) as tmp:
        frame.to_file(tmp, layer=layer, driver="GPKG")
    return path


def write_truth(folder: Path, truth: TruthTables) -> None:
    """Write the vector layers, ``history.csv`` and ``truth.json`` into ``folder``
    (``snow.tif`` is separate)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, layer in LAYERS.items():
        write_layer(folder / name, getattr(truth, layer), layer)
    with atomic_path(folder / "history.csv") as tmp:
        truth.history.to_csv(tmp, index=False)
    write_json(folder / "truth.json", truth.summary)


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
    layers = {layer: gpd.read_file(root / name, layer=layer) for name, layer in LAYERS.items()}
    return Truth(
        snow_mask=root / "snow.tif",
        summary=json.loads((root / "truth.json").read_text()),
        root=root,
        history=pd.read_csv(root / "history.csv", keep_default_na=False),
        **layers,
    )
