"""The planted truth as tables: farms, snow, distractors, ghost labels, footprints over time.

Pure functions of the plan, the OSM mapping and the acquisitions; :mod:`pipeline.demo.truth`
writes them and documents their columns.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import pandas as pd
from shapely.geometry import Polygon

from pipeline.demo import layout
from pipeline.demo.calendar import Acquisition
from pipeline.demo.history import EXTENDED_IN, HistoryPlan
from pipeline.demo.label_errors import LabelErrors
from pipeline.demo.mapping import Mapped
from pipeline.demo.truth import CRS

#: ``(block, split)`` of a geometry, as the tiles stage splits (by its centroid).
SplitOf = Callable[[Polygon], tuple[str, str]]


@dataclass(frozen=True)
class Planted:
    """What the truth tables describe.

    Attributes:
        farms: The planted farms (EPSG:32618), planting order.
        splits: ``(block, split)`` per farm.
        snow: The snow blobs.
        distractors: The distractors and look-alikes.
        errors: The label errors.
        history: When each farm stands.
        acquisitions: The world's acquisitions, in time order.
        item_ids: Their STAC item ids, same order.
    """

    farms: Sequence[layout.FarmPlan]
    splits: Sequence[tuple[str, str]]
    snow: Sequence[layout.SnowPlan]
    distractors: Sequence[layout.DistractorPlan]
    errors: LabelErrors
    history: HistoryPlan
    acquisitions: Sequence[Acquisition]
    item_ids: Sequence[str]


FARM_COLUMNS = (
    "farm_id",
    "osm_ids",
    "role",
    "shape",
    "area_m2",
    "split",
    "block",
    "pv_cover",
    "row_azimuth_deg",
    "row_pitch_m",
    "gain",
    "snow_planted",
    "snow_beside",
    "distance_to_snow_m",
    "in_osm",
    "label_error",
    "shift_dx_m",
    "shift_dy_m",
    "osm_version",
    "osm_timestamp",
    "built",
    "built_after",
    "extended_on",
)


def _iso(when: dt.datetime | None) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when is not None else ""


def window_days(planted: Planted, window: int) -> list[dt.date]:
    """Days of the acquisitions of ``window``, in time order."""
    return [a.when.date() for a in planted.acquisitions if a.window == window]


def first_day(planted: Planted, window: int) -> str:
    """ISO day of ``window``'s first acquisition ("" for none)."""
    days = window_days(planted, window)
    return days[0].isoformat() if days else ""


def last_day(planted: Planted, window: int) -> str:
    """ISO day of ``window``'s last acquisition ("" for none)."""
    days = window_days(planted, window)
    return days[-1].isoformat() if days else ""


def farm_history_columns(planted: Planted, index: int) -> dict[str, str]:
    """``built``, ``built_after`` and ``extended_on`` of farm ``index``."""
    built = planted.history.built[index]
    extended = planted.history.extended == index
    return {
        "built": first_day(planted, built),
        "built_after": last_day(planted, built - 1),
        "extended_on": first_day(planted, EXTENDED_IN) if extended else "",
    }


def label_error_of(errors: LabelErrors, index: int) -> str:
    """``unmapped``, ``shifted`` or ``none``."""
    if index in errors.unmapped:
        return "unmapped"
    return "shifted" if errors.shift_of(index) != (0.0, 0.0) else "none"


def farms_frame(planted: Planted, mapped: Mapped) -> gpd.GeoDataFrame:
    """Truth table of the planted farms (EPSG:32618), columns :data:`FARM_COLUMNS`."""
    dists = layout.snow_distances(planted.farms, planted.snow)
    planted_beside = {s.near_farm for s in planted.snow if s.near_farm is not None}
    rows = []
    for farm, o, (block, split), dist in zip(
        planted.farms, mapped.farms, planted.splits, dists, strict=True
    ):
        in_osm = farm.index not in planted.errors.unmapped
        dx, dy = planted.errors.shift_of(farm.index)
        version, when = mapped.edits.get(farm.index, mapped.draft.edit_of(*_lead(o)))
        rows.append(
            {
                "farm_id": mapped.ids[farm.index],
                "osm_ids": json.dumps(list(o.way_ids) if in_osm else []),
                "role": farm.role,
                "shape": farm.shape,
                "area_m2": float(farm.geometry.area),
                "split": split,
                "block": block,
                "pv_cover": farm.pv_cover,
                "row_azimuth_deg": farm.row_azimuth_deg,
                "row_pitch_m": farm.row_pitch_m,
                "gain": farm.gain,
                "snow_planted": farm.index in planted_beside,
                "snow_beside": dist <= layout.SNOW_NEAR_M,
                "distance_to_snow_m": dist if math.isfinite(dist) else math.nan,
                "in_osm": in_osm,
                "label_error": label_error_of(planted.errors, farm.index),
                "shift_dx_m": dx,
                "shift_dy_m": dy,
                "osm_version": version if in_osm else 0,
                "osm_timestamp": _iso(when) if in_osm else "",
                **farm_history_columns(planted, farm.index),
                "geometry": farm.geometry,
            }
        )
    return gpd.GeoDataFrame(rows, columns=[*FARM_COLUMNS, "geometry"], geometry="geometry", crs=CRS)


def _lead(o: Any) -> tuple[str, int]:
    return ("r", o.relation_id) if o.relation_id is not None else ("w", o.way_ids[0])


def snow_frame(planted: Planted, ids: dict[int, str]) -> gpd.GeoDataFrame:
    """Truth table of the snow blobs (EPSG:32618)."""
    rows = [
        {
            "snow_id": f"s{s.index:03d}",
            "near_farm": ids[s.near_farm] if s.near_farm is not None else "",
            "area_m2": float(s.geometry.area),
            "depth": s.depth,
            "geometry": s.geometry,
        }
        for s in planted.snow
    ]
    return gpd.GeoDataFrame(
        rows,
        columns=["snow_id", "near_farm", "area_m2", "depth", "geometry"],
        geometry="geometry",
        crs=CRS,
    )


DISTRACTOR_COLUMNS = (
    "distractor_id",
    "kind",
    "cover",
    "row_azimuth_deg",
    "row_pitch_m",
    "gain",
    "area_m2",
)


def distractors_frame(planted: Planted) -> gpd.GeoDataFrame:
    """Truth table of the distractors (EPSG:32618)."""
    rows = [
        {
            "distractor_id": f"d{d.index:03d}",
            "kind": d.kind,
            "cover": d.cover,
            "row_azimuth_deg": d.rows[0] if d.rows else float("nan"),
            "row_pitch_m": d.rows[1] if d.rows else float("nan"),
            "gain": d.gain,
            "area_m2": float(d.geometry.area),
            "geometry": d.geometry,
        }
        for d in planted.distractors
    ]
    return gpd.GeoDataFrame(
        rows, columns=[*DISTRACTOR_COLUMNS, "geometry"], geometry="geometry", crs=CRS
    )


GHOST_COLUMNS = (
    "ghost_id",
    "farm_id",
    "osm_type",
    "osm_id",
    "kind",
    "tags",
    "osm_version",
    "osm_timestamp",
    "area_m2",
    "split",
    "block",
    "planted_until",
)


def ghosts_frame(mapped: Mapped, split_of: SplitOf) -> gpd.GeoDataFrame:
    """Truth table of the OSM farms with nothing standing in January (EPSG:32618)."""
    rows = []
    for site in mapped.sites:
        block, split = split_of(site.geometry)
        rows.append(
            {
                "ghost_id": site.ghost_id,
                "farm_id": f"w{site.way_id}",
                "osm_type": "way",
                "osm_id": site.way_id,
                "kind": site.kind,
                "tags": json.dumps(site.tags, sort_keys=True),
                "osm_version": site.edit[0],
                "osm_timestamp": _iso(site.edit[1]),
                "area_m2": float(site.geometry.area),
                "split": split,
                "block": block,
                "planted_until": site.planted_until.isoformat() if site.planted_until else "",
                "geometry": site.geometry,
            }
        )
    return gpd.GeoDataFrame(
        rows, columns=[*GHOST_COLUMNS, "geometry"], geometry="geometry", crs=CRS
    )


def _farm_ids(planted: Planted, mapped: Mapped) -> dict[int, str]:
    ids = dict(mapped.ids)
    removed = planted.history.removed
    site = next((s for s in mapped.sites if s.kind == "removed"), None)
    if removed is not None and site is not None:
        ids[removed.index] = f"w{site.way_id}"
    return ids


def history_frame(planted: Planted, mapped: Mapped) -> pd.DataFrame:
    """Per farm (and the removed farm) and acquisition: whether it stands and its panelled
    footprint's area (m², 0 when absent)."""
    ids = _farm_ids(planted, mapped)
    rows = []
    for farm in planted.history.all_farms(planted.farms):
        for acq, item in zip(planted.acquisitions, planted.item_ids, strict=True):
            geom = planted.history.footprint(farm, acq.window)
            rows.append(
                {
                    "farm_id": ids[farm.index],
                    "item_id": item,
                    "date": acq.when.date().isoformat(),
                    "role": acq.role,
                    "window": acq.window,
                    "present": geom is not None,
                    "area_m2": float(geom.area) if geom is not None else 0.0,
                }
            )
    columns = ["farm_id", "item_id", "date", "role", "window", "present", "area_m2"]
    return pd.DataFrame(rows, columns=columns)


def footprints_frame(planted: Planted, mapped: Mapped) -> gpd.GeoDataFrame:
    """One row per farm and footprint phase (EPSG:32618): ``first_date`` and ``last_date``
    (ISO days of the first and last acquisition it is planted in, ``last_date`` "" while it
    still stands in the last acquisition), ``phase`` (``full`` or ``first`` for the extended
    farm's first, partial footprint) and ``area_m2``."""
    ids = _farm_ids(planted, mapped)
    history = planted.history
    last = history.last_window
    rows = []
    for farm in history.all_farms(planted.farms):
        removed = history.removed is not None and farm.index == history.removed.index
        built = 0 if removed else history.built[farm.index]
        phases = [("full", farm.geometry, built, (last - 1) if removed else None)]
        if farm.index == history.extended and history.first_phase is not None:
            phases = [
                ("first", history.first_phase, built, EXTENDED_IN - 1),
                ("full", farm.geometry, EXTENDED_IN, None),
            ]
        for phase, geom, first, until in phases:
            rows.append(
                {
                    "farm_id": ids[farm.index],
                    "phase": phase,
                    "first_date": first_day(planted, first),
                    "last_date": last_day(planted, until) if until is not None else "",
                    "area_m2": float(geom.area),
                    "geometry": geom,
                }
            )
    return gpd.GeoDataFrame(
        rows,
        columns=["farm_id", "phase", "first_date", "last_date", "area_m2", "geometry"],
        geometry="geometry",
        crs=CRS,
    )
