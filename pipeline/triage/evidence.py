"""Evidence per object and label: where the attribution lies, and confirmed spurious cues.

Inputs are ``attribute/farms.gpkg`` (one row per object, patch and method with the shares of
the attribution mass inside the polygon, on its ring and beyond) and ``audit/flags.gpkg`` (one
row per farm target with its worst verdict and cue). Labels are matched by id; the model's
objects by overlap with the attributed polygons (predicted farms, false positives).
"""

from __future__ import annotations

from typing import Final

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

#: Shares of the attribution mass (absolute values), as ``attribute/farms.gpkg`` has them.
SHARES: Final[tuple[str, ...]] = ("share_inside", "share_ring", "share_outside")
LABEL_KIND: Final[str] = "label_farms"


def focus(share_inside: float, share_ring: float) -> float:
    """Share of the attribution near a polygon that lies inside it rather than on its ring
    (0-1; NaN when neither has mass or either is unknown)."""
    total = share_inside + share_ring
    return share_inside / total if np.isfinite(total) and total > 0 else float("nan")


def _empty_shares(index: pd.Index) -> pd.DataFrame:
    return pd.DataFrame(np.nan, index=index, columns=list(SHARES))


def label_attribution(attribution: pd.DataFrame, farm_ids: pd.Series) -> pd.DataFrame:
    """Mean shares of each label farm's attribution over its patches and methods (NaN where
    it was not attributed); one row per ``farm_ids``, same index."""
    out = _empty_shares(farm_ids.index)
    if attribution.empty or "kind" not in attribution:
        return out
    rows = attribution[attribution["kind"] == LABEL_KIND]
    means = rows.groupby(rows["farm_id"].astype(str))[list(SHARES)].mean()
    found = farm_ids.astype(str).map(lambda fid: fid in means.index)
    for col in SHARES:
        out.loc[found, col] = farm_ids[found].astype(str).map(means[col]).astype(float)
    return out


def object_attribution(objects: gpd.GeoDataFrame, attribution: gpd.GeoDataFrame) -> pd.DataFrame:
    """Mean shares of the attribution rows of the model's objects (any kind but labels)
    whose polygons overlap each object; both frames in one metric CRS."""
    out = _empty_shares(objects.index)
    if attribution.empty or objects.empty or "kind" not in attribution:
        return out
    rows = attribution[attribution["kind"] != LABEL_KIND]
    if rows.empty:
        return out
    tree = shapely.STRtree(list(rows.geometry))
    for idx, geom in zip(objects.index, objects.geometry, strict=True):
        hits = [int(i) for i in tree.query(geom, predicate="intersects")]
        if hits:
            out.loc[idx, list(SHARES)] = rows.iloc[hits][list(SHARES)].mean().to_numpy()
    return out


def _confirmed(flags: pd.DataFrame) -> pd.DataFrame:
    if flags.empty or "verdict" not in flags:
        return flags.iloc[0:0]
    return flags[flags["verdict"] == "confirmed"]


def label_cues(flags: pd.DataFrame, farm_ids: pd.Series) -> pd.Series:
    """The cue the audit confirmed for each label farm ("" when none), same index."""
    confirmed = _confirmed(flags)
    confirmed = confirmed[confirmed["target"] == LABEL_KIND] if len(confirmed) else confirmed
    cue = dict(zip(confirmed.get("target_id", []), confirmed.get("worst_cue", []), strict=True))
    return farm_ids.astype(str).map(lambda fid: str(cue.get(fid, "")))


def object_cues(objects: gpd.GeoDataFrame, flags: gpd.GeoDataFrame) -> pd.Series:
    """The cue the audit confirmed on a model's polygon overlapping each object ("" when
    none); both frames in one metric CRS."""
    out = pd.Series([""] * len(objects), index=objects.index, dtype=object)
    confirmed = _confirmed(flags)
    if len(confirmed):
        confirmed = confirmed[confirmed["target"] != LABEL_KIND]
        confirmed = confirmed[~confirmed.geometry.is_empty & confirmed.geometry.notna()]
    if not len(confirmed) or objects.empty:
        return out
    tree = shapely.STRtree(list(confirmed.geometry))
    for idx, geom in zip(objects.index, objects.geometry, strict=True):
        hits = sorted(int(i) for i in tree.query(geom, predicate="intersects"))
        if hits:
            out[idx] = ",".join(sorted({str(confirmed["worst_cue"].iloc[i]) for i in hits}))
    return out
