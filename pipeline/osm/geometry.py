"""From OSM solar features to farm polygons: repair, merge, measure, filter.

All geometries enter and leave in EPSG:4326 (lon/lat). Areas are measured in the UTM zone of
each farm's centroid (:func:`pipeline.geo.crs.area_m2`), the CRS patches use too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from pipeline.geo.crs import area_m2, to_epsg, utm_epsg
from pipeline.osm.features import OsmFeature

FARM_COLUMNS = (
    "farm_id",
    "osm_id",
    "osm_type",
    "tags",
    "area_m2",
    "source",
    "n_generators_merged",
    "repaired",
    "osm_version",
    "osm_timestamp",
)
#: ``osm_version``/``osm_timestamp`` (the lead object's version and last edit, ISO 8601 UTC) are
#: null where the source has no metadata (Overpass ``out geom``, hand-made files).
REJECT_COLUMNS = ("osm_id", "osm_type", "reason")


def polygonal(geom: BaseGeometry) -> BaseGeometry:
    """Only the polygonal parts of ``geom`` (make_valid can yield lines and points too)."""
    if isinstance(geom, Polygon | MultiPolygon):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon | MultiPolygon)]
    return unary_union(parts) if parts else Polygon()


def repair(geom: BaseGeometry) -> tuple[BaseGeometry, bool]:
    """Drop repeated nodes and ``make_valid`` an invalid polygon.

    Returns:
        ``(polygonal geometry, possibly empty; True when it had to be repaired)``.
    """
    geom = shapely.remove_repeated_points(geom)
    if geom.is_valid:
        return polygonal(geom), False
    return polygonal(shapely.make_valid(geom)), True


def as_multipolygon(geom: BaseGeometry) -> MultiPolygon:
    """Every farm is written as a MultiPolygon (one GeoPackage geometry type)."""
    if isinstance(geom, MultiPolygon):
        return geom
    if isinstance(geom, Polygon):
        return MultiPolygon([geom])
    return MultiPolygon([g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon)])


@dataclass
class _Farm:
    lead: OsmFeature
    geometry: BaseGeometry
    members: list[OsmFeature] = field(default_factory=list)
    repaired: bool = False


@dataclass(frozen=True)
class FarmRules:
    """How features become farms.

    Attributes:
        min_area_m2: Smaller farms are rejected (rooftop arrays).
        merge_fraction: A generator at least this share inside a plant merges into it; a plant
            at least this share inside a bigger plant merges too (duplicate mapping).
        cluster_gap_m: Stand-alone generators closer than this form one farm.
        source: Written to the ``source`` column (e.g. ``osm-file:world.osm.pbf``).
    """

    min_area_m2: float = 5000.0
    merge_fraction: float = 0.5
    cluster_gap_m: float = 10.0
    source: str = "osm"


@dataclass(frozen=True)
class FarmResult:
    """Output of :func:`build_farms`.

    Attributes:
        farms: GeoDataFrame (EPSG:4326) with :data:`FARM_COLUMNS`.
        rejected: GeoDataFrame (EPSG:4326, geometry may be null) with :data:`REJECT_COLUMNS`.
        counts: Counts for the manifest summary.
    """

    farms: gpd.GeoDataFrame
    rejected: gpd.GeoDataFrame
    counts: dict[str, Any]


def _reject(
    rows: list[dict[str, Any]], f: OsmFeature, reason: str, geom: BaseGeometry | None = None
) -> None:
    rows.append({"osm_id": f.osm_id, "osm_type": f.osm_type, "reason": reason, "geometry": geom})


def _overlap_share(small: BaseGeometry, big: BaseGeometry) -> float:
    a = small.area
    return 0.0 if a == 0 else small.intersection(big).area / a


def _merge_into_plants(plants: list[_Farm], gens: list[_Farm], share: float) -> list[_Farm]:
    """Merge nested plants and contained generators; return generators left stand-alone."""
    plants.sort(key=lambda p: (-p.geometry.area, p.lead.farm_id))
    kept: list[_Farm] = []
    for plant in plants:
        host = next((k for k in kept if _overlap_share(plant.geometry, k.geometry) >= share), None)
        if host is None:
            kept.append(plant)
        else:
            host.geometry = unary_union([host.geometry, plant.geometry])
            host.members.append(plant.lead)
            host.repaired |= plant.repaired
    plants[:] = kept
    if not plants:
        return gens
    tree = shapely.STRtree([p.geometry for p in plants])
    alone = []
    for gen in gens:
        best, best_share = None, 0.0
        for i in tree.query(gen.geometry, predicate="intersects"):
            s = _overlap_share(gen.geometry, plants[int(i)].geometry)
            if s > best_share:
                best, best_share = plants[int(i)], s
        if best is not None and best_share >= share:
            best.geometry = unary_union([best.geometry, gen.geometry])
            best.members.append(gen.lead)
            best.repaired |= gen.repaired
        else:
            alone.append(gen)
    return alone


def _cluster_generators(gens: list[_Farm], gap_m: float) -> list[_Farm]:
    """Union stand-alone generators within ``gap_m`` of each other (panel rows -> one farm)."""
    if len(gens) < 2:
        return gens
    c = unary_union([g.geometry for g in gens]).centroid
    epsg = utm_epsg(c.x, c.y)
    metric = [to_epsg(g.geometry, epsg).buffer(gap_m / 2) for g in gens]
    tree = shapely.STRtree(metric)
    parent = list(range(len(gens)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, geom in enumerate(metric):
        for j in tree.query(geom, predicate="intersects"):
            a, b = find(i), find(int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[_Farm]] = {}
    for i, g in enumerate(gens):
        groups.setdefault(find(i), []).append(g)
    out = []
    for members in groups.values():
        members.sort(key=lambda g: (g.lead.osm_type, g.lead.osm_id))
        lead = members[0]
        for other in members[1:]:
            lead.geometry = unary_union([lead.geometry, other.geometry])
            lead.members.append(other.lead)
            lead.repaired |= other.repaired
        out.append(lead)
    return out


def build_farms(
    features: Iterable[OsmFeature], rules: FarmRules, aoi: BaseGeometry | None = None
) -> FarmResult:
    """Repair, merge and filter solar features into farms.

    Steps: features with a problem are rejected with it; invalid rings are repaired with
    ``make_valid`` (counted) or rejected when nothing polygonal survives; plants nested in
    bigger plants and generators inside plants are merged into them (their area is counted
    once, in the union); remaining generators within ``cluster_gap_m`` are merged into one
    farm; farms not intersecting ``aoi`` are counted (not listed) as outside; farms below
    ``min_area_m2`` (measured in local UTM) are rejected.

    Args:
        features: Solar features in EPSG:4326.
        rules: Thresholds and the ``source`` label.
        aoi: Area of interest in EPSG:4326, or ``None`` for no spatial filter.

    Returns:
        Farms, rejected features and counts.
    """
    rejected: list[dict[str, Any]] = []
    plants: list[_Farm] = []
    gens: list[_Farm] = []
    counts: dict[str, Any] = {
        "features": 0,
        "plants": 0,
        "generators": 0,
        "repaired": 0,
        "broken": 0,
        "unrepairable": 0,
    }
    seen: set[str] = set()
    for f in features:
        if f.farm_id in seen:
            continue
        seen.add(f.farm_id)
        counts["features"] += 1
        if f.geometry is None or f.problem:
            counts["broken"] += 1
            _reject(rejected, f, f.problem or "no geometry")
            continue
        geom, fixed = repair(f.geometry)
        if geom.is_empty or geom.area == 0:
            counts["unrepairable"] += 1
            _reject(rejected, f, "invalid geometry: nothing polygonal left after make_valid")
            continue
        counts["repaired"] += int(fixed)
        farm = _Farm(f, geom, repaired=fixed)
        if f.kind == "plant":
            counts["plants"] += 1
            plants.append(farm)
        else:
            counts["generators"] += 1
            gens.append(farm)
    alone = _merge_into_plants(plants, gens, rules.merge_fraction)
    counts["generators_merged_into_plants"] = counts["generators"] - len(alone)
    counts["plants_merged_into_plants"] = counts["plants"] - len(plants)
    clusters = _cluster_generators(alone, rules.cluster_gap_m)
    counts["generator_farms"] = len(clusters)
    rows = []
    counts["outside_aoi"] = 0
    counts["below_min_area"] = 0
    for farm in [*plants, *clusters]:
        if aoi is not None and not farm.geometry.intersects(aoi):
            counts["outside_aoi"] += 1
            continue
        area = area_m2(farm.geometry)
        if area < rules.min_area_m2:
            counts["below_min_area"] += 1
            _reject(
                rejected,
                farm.lead,
                f"area {area:.0f} m2 below labels.min_area_m2={rules.min_area_m2:g}",
                as_multipolygon(farm.geometry),
            )
            continue
        lead = farm.lead
        rows.append(
            {
                "farm_id": lead.farm_id,
                "osm_id": lead.osm_id,
                "osm_type": lead.osm_type,
                "tags": json.dumps(dict(lead.tags), sort_keys=True),
                "area_m2": area,
                "source": rules.source,
                "n_generators_merged": sum(m.kind == "generator" for m in farm.members),
                "repaired": farm.repaired,
                "osm_version": lead.version,
                "osm_timestamp": lead.timestamp,
                "geometry": as_multipolygon(farm.geometry),
            }
        )
    farms = farm_frame(rows)
    counts["farms"] = len(farms)
    counts["rejected"] = len(rejected)
    counts["farm_area_m2_total"] = float(farms["area_m2"].sum()) if len(farms) else 0.0
    return FarmResult(farms, reject_frame(rejected), counts)


def farm_frame(rows: Sequence[dict[str, Any]]) -> gpd.GeoDataFrame:
    """Farms rows -> GeoDataFrame with the contract's columns and dtypes, sorted by farm_id."""
    df = pd.DataFrame(list(rows), columns=[*FARM_COLUMNS, "geometry"])
    df = df.astype(
        {
            "farm_id": str,
            "osm_id": "int64",
            "osm_type": str,
            "tags": str,
            "area_m2": "float64",
            "source": str,
            "n_generators_merged": "int64",
            "repaired": bool,
            "osm_version": "Int64",
            "osm_timestamp": object,
        }
    )
    gdf = gpd.GeoDataFrame(df, geometry="geometry", crs="EPSG:4326")
    return gdf.sort_values("farm_id", kind="stable").reset_index(drop=True)


def reject_frame(rows: Sequence[dict[str, Any]]) -> gpd.GeoDataFrame:
    """Rejected rows -> GeoDataFrame (geometry may be null), sorted by type and id."""
    df = pd.DataFrame(list(rows), columns=[*REJECT_COLUMNS, "geometry"])
    df = df.astype({"osm_id": "int64", "osm_type": str, "reason": str})
    gdf = gpd.GeoDataFrame(
        df, geometry=gpd.GeoSeries(list(df["geometry"]), crs="EPSG:4326"), crs="EPSG:4326"
    )
    return gdf.sort_values(["osm_type", "osm_id"], kind="stable").reset_index(drop=True)
