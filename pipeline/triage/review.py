"""The review exports: the columns of ``triage/review.gpkg`` and the GeoJSON of review tasks.

One feature per task, its evidence as properties: the shape a JOSM layer or a MapRoulette-style
challenge takes. A candidate's feature carries the suggested OSM tags as plain properties (a
JOSM layer shows them as tags, ready to review); every other property is prefixed ``triage:``
so that it is never mistaken for a tag. Nothing here uploads anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

import geopandas as gpd
import pandas as pd
import shapely

from pipeline.tables import Columns
from pipeline.triage.ranking import SUGGESTED_TAGS

#: The OSM fields a label source may have (text; "" when the source has none).
OSM_FIELDS: Final[tuple[str, ...]] = ("osm_type", "osm_id", "osm_version", "osm_timestamp")

_SHARES = Columns(
    (
        "share_inside",
        "mean share of the attribution mass inside the polygon (0-1; empty: not attributed)",
    ),
    ("share_ring", "mean share on the ring around it (attribute.buffer_m wide)"),
    ("share_outside", "mean share beyond the ring"),
)

#: Columns of the ``candidates`` layer: mapped farms with no OSM farm, strongest first.
CANDIDATE_COLUMNS = Columns(
    ("task_id", "review task id (c0001 = strongest evidence)"),
    ("rank", "rank by score (1 = strongest)"),
    ("object_id", "the mapped farm's farm_id in map/farms.gpkg (pred_ids without a map)"),
    ("source", "map (wall-to-wall map) or predict (predicted patches only: no map)"),
    (
        "score",
        "evidence score: mean_prob x area/(area + triage.half_area_ha) x focus x cue penalty "
        "x standing penalty",
    ),
    ("mean_prob", "mean model probability over the polygon (0-1)"),
    ("max_prob", "highest model probability in the polygon (0-1)"),
    ("area_ha", "area in hectares"),
    ("label_overlap", "share of the polygon covered by OSM farms (below triage.overlap_max)"),
    *_SHARES.pairs(),
    ("focus", "share_inside / (share_inside + share_ring): 1 = evidence inside the polygon"),
    ("cue", "spurious cue the audit confirmed on it (empty: none)"),
    (
        "built",
        "from the map's timeline: new (built during map.windows), standing (a farm since the "
        "first window) or empty (one window, or first seen after a gap)",
    ),
    ("dates", "acquisition dates the map used there"),
    ("acquisitions", "STAC item ids the map used there"),
    ("quicklook", "run-relative path of the mapped farm's composite patch (empty: none)"),
    ("suggested_tags", "OSM tags to review for the new feature (k=v;k=v)"),
)

#: Columns of the ``suspects`` layer: OSM farms the model does not find, most suspect first.
SUSPECT_COLUMNS = Columns(
    ("task_id", "review task id (s0001 = most suspect)"),
    ("rank", "rank by suspicion (1 = most suspect)"),
    ("farm_id", "the label's farm_id in labels/farms.gpkg"),
    ("osm_type", "OSM element type (empty when the label source has none)"),
    ("osm_id", "OSM element id (empty when the label source has none)"),
    ("osm_version", "OSM element version (empty when the label source has none)"),
    ("osm_timestamp", "time of the element's last edit (empty when the label source has none)"),
    ("reason", "not_found, confirmed_cue, surroundings or outline_mismatch"),
    ("suspicion", "reason order plus strength within the reason (higher = more suspect)"),
    ("covered", "share of the label covered by the model's objects (0-1)"),
    ("best_iou", "best IoU of the label with one of the model's objects"),
    ("best_object", "that object's id (empty: none overlaps)"),
    ("map_prob", "mean map probability inside the label (empty: no map there)"),
    ("map_dates", "acquisition dates the map used inside the label"),
    ("quicklook", "run-relative path of an attribution quicklook of the label (empty: none)"),
    *_SHARES.pairs(),
    ("cue", "spurious cue the audit confirmed on it (empty: none)"),
    ("action", "what the reviewer is asked to check"),
)


def osm_fields(labels: pd.DataFrame) -> pd.DataFrame:
    """The :data:`OSM_FIELDS` of each label as text ("" where the source has none)."""
    out = pd.DataFrame(index=labels.index)
    for col in OSM_FIELDS:
        values = (
            labels[col] if col in labels else pd.Series([None] * len(labels), index=labels.index)
        )
        out[col] = [_text(v) for v in values]
    return out


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def layer(frame: gpd.GeoDataFrame, columns: Columns) -> gpd.GeoDataFrame:
    """``frame`` with exactly ``columns`` (missing text columns empty) and its geometry."""
    out = pd.DataFrame(index=frame.index)
    for col in columns:
        out[col] = frame.get(col, "")
    return gpd.GeoDataFrame(out, geometry=list(frame.geometry), crs=frame.crs or 4326)


def _value(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if hasattr(value, "item"):
        return _value(value.item())
    return value


def _feature(row: Mapping[str, Any], geom: Any, tags: Mapping[str, str], task: str) -> dict:
    props: dict[str, Any] = dict(tags)
    props["triage:task"] = task
    props.update({f"triage:{k}": _value(v) for k, v in row.items()})
    return {"type": "Feature", "geometry": shapely.geometry.mapping(geom), "properties": props}


def review_collection(candidates: gpd.GeoDataFrame, suspects: gpd.GeoDataFrame) -> dict:
    """The GeoJSON FeatureCollection of review tasks (EPSG:4326): candidates first
    (``triage:task`` = ``add_missing_farm``, the suggested tags as properties), then suspect
    labels (``check_label``, with the suggested action)."""
    features = [
        _feature(row, geom, SUGGESTED_TAGS, "add_missing_farm")
        for row, geom in zip(
            candidates.drop(columns="geometry").to_dict("records"),
            candidates.to_crs(4326).geometry,
            strict=True,
        )
    ]
    features += [
        _feature(row, geom, {}, "check_label")
        for row, geom in zip(
            suspects.drop(columns="geometry").to_dict("records"),
            suspects.to_crs(4326).geometry,
            strict=True,
        )
    ]
    return {"type": "FeatureCollection", "features": features}


def geojson_text(collection: Mapping[str, Any]) -> str:
    """The collection as compact JSON text (no NaN: missing values are ``null``)."""
    return json.dumps(collection, allow_nan=False, separators=(",", ":"))
