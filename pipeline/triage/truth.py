"""The triage scored against a demo world's planted truth (:mod:`pipeline.demo.truth`).

Never used by the triage itself: the score ranks on the model's evidence only; this module
says how well that ranking finds the world's label errors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import geopandas as gpd
import shapely

#: A candidate hits an unmapped farm when that farm covers at least this share of it.
HIT_SHARE = 0.25


@dataclass(frozen=True)
class TriageScore:
    """How the triage's lists meet the planted label errors.

    Attributes:
        k: Number of unmapped farms (the candidates scored: the top ``k``).
        top_k_unmapped: Distinct unmapped farms among the top ``k`` candidates.
        top_k_share: ``top_k_unmapped / k`` (``None`` when ``k`` is 0).
        unmapped_listed: Distinct unmapped farms among all candidates.
        candidates: Number of candidates.
        ghosts: Number of ghost labels (planned or under construction).
        ghosts_listed: Ghost labels among the suspects.
        removed_listed: Removed farms still in OSM among the suspects (of ``removed``).
        removed: Removed farms still in OSM.
        shifted_listed: Shifted outlines among the suspects (of ``shifted``).
        shifted: Shifted outlines.
        suspects: Number of suspects.
    """

    k: int
    top_k_unmapped: int
    top_k_share: float | None
    unmapped_listed: int
    candidates: int
    ghosts: int
    ghosts_listed: int
    removed_listed: int
    removed: int
    shifted_listed: int
    shifted: int
    suspects: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _unmapped_hits(candidates: gpd.GeoDataFrame, unmapped: gpd.GeoDataFrame) -> list[set[str]]:
    """Per candidate (in order), the unmapped farms covering >= :data:`HIT_SHARE` of it."""
    geoms = list(unmapped.geometry)
    tree = shapely.STRtree(geoms)
    out = []
    for geom in candidates.geometry:
        hits = {
            str(unmapped["farm_id"].iloc[int(i)])
            for i in tree.query(geom, predicate="intersects")
            if geom.area > 0
            and shapely.intersection(geom, geoms[int(i)]).area / geom.area >= HIT_SHARE
        }
        out.append(hits)
    return out


def score_triage(
    candidates: gpd.GeoDataFrame,
    suspects: gpd.GeoDataFrame,
    farms: gpd.GeoDataFrame,
    ghosts: gpd.GeoDataFrame,
) -> TriageScore:
    """Score ranked ``candidates`` and ``suspects`` (the review layers) against the truth's
    ``farms`` and ``ghosts`` layers (any CRS; compared in the farms' CRS)."""
    crs = farms.crs
    unmapped = farms[farms["label_error"] == "unmapped"]
    cands = candidates.sort_values("rank").to_crs(crs) if len(candidates) else candidates
    hits = _unmapped_hits(cands, unmapped) if len(cands) and len(unmapped) else []
    k = len(unmapped)
    top = set().union(*hits[:k]) if hits else set()
    listed = set(suspects["farm_id"].astype(str)) if len(suspects) else set()
    ghost_ids = set(ghosts.loc[ghosts["kind"] != "removed", "farm_id"].astype(str))
    removed_ids = set(ghosts.loc[ghosts["kind"] == "removed", "farm_id"].astype(str))
    shifted_ids = set(farms.loc[farms["label_error"] == "shifted", "farm_id"].astype(str))
    return TriageScore(
        k=k,
        top_k_unmapped=len(top),
        top_k_share=len(top) / k if k else None,
        unmapped_listed=len(set().union(*hits)) if hits else 0,
        candidates=len(candidates),
        ghosts=len(ghost_ids),
        ghosts_listed=len(ghost_ids & listed),
        removed_listed=len(removed_ids & listed),
        removed=len(removed_ids),
        shifted_listed=len(shifted_ids & listed),
        shifted=len(shifted_ids),
        suspects=len(suspects),
    )


#: A mapped object lies on a farm when planted farms cover at least this share of it; a planted
#: farm is found when mapped objects cover at least this share of it.
ON_FARM_SHARE = 0.25


@dataclass(frozen=True)
class MapScore:
    """A wall-to-wall map's objects against the planted farms standing in January.

    Attributes:
        objects: Mapped objects.
        on_farm: Objects that lie on a planted farm (:data:`ON_FARM_SHARE`).
        precision: ``on_farm / objects`` (``None`` without objects).
        farms: Planted farms (unmapped ones included; ghost labels are no farms).
        found: Farms the objects cover by at least :data:`ON_FARM_SHARE`.
        recall: ``found / farms``.
        unmapped: Planted farms missing from OSM.
        unmapped_found: Those found.
        unmapped_found_ids: Their farm ids.
        unmapped_train: Unmapped farms in training blocks (``split`` of the truth).
        unmapped_train_found: Those found.
    """

    objects: int
    on_farm: int
    precision: float | None
    farms: int
    found: int
    recall: float | None
    unmapped: int
    unmapped_found: int
    unmapped_found_ids: list[str]
    unmapped_train: int
    unmapped_train_found: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _covered_shares(these: gpd.GeoDataFrame, those: gpd.GeoDataFrame) -> list[float]:
    """Per row of ``these``, the share of its area ``those`` cover (one metric CRS)."""
    cover = shapely.union_all(list(those.geometry)) if len(those) else None
    out = []
    for geom in these.geometry:
        if cover is None or geom.area <= 0:
            out.append(0.0)
        else:
            out.append(float(shapely.intersection(geom, cover).area / geom.area))
    return out


def score_map(objects: gpd.GeoDataFrame, farms: gpd.GeoDataFrame) -> MapScore:
    """Object precision and farm recall of ``objects`` (e.g. ``map/farms.gpkg``) against the
    truth's ``farms`` layer (any CRS; compared in the farms' CRS), and the unmapped farms found."""
    objs = objects.to_crs(farms.crs) if len(objects) else objects
    on_farm = sum(s >= ON_FARM_SHARE for s in _covered_shares(objs, farms))
    found = [s >= ON_FARM_SHARE for s in _covered_shares(farms, objs)]
    unmapped = (farms["label_error"] == "unmapped").to_numpy()
    train = (farms["split"].astype(str) == "train").to_numpy() & unmapped
    ids = farms["farm_id"].astype(str).to_numpy()
    hit = [bool(f) for f in found]
    return MapScore(
        objects=len(objs),
        on_farm=int(on_farm),
        precision=on_farm / len(objs) if len(objs) else None,
        farms=len(farms),
        found=sum(hit),
        recall=sum(hit) / len(farms) if len(farms) else None,
        unmapped=int(unmapped.sum()),
        unmapped_found=sum(h for h, u in zip(hit, unmapped, strict=True) if u),
        unmapped_found_ids=[str(i) for i, h, u in zip(ids, hit, unmapped, strict=True) if h and u],
        unmapped_train=int(train.sum()),
        unmapped_train_found=sum(h for h, t in zip(hit, train, strict=True) if t),
    )
