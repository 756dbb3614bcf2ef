"""The timeline scored against a demo world's planted history (``truth/history.csv``).

Never used by the timeline itself. A site matches the planted farm covering the largest share
of it (at least :data:`HIT_SHARE`); the planted area of a window is the area of the farms
standing in any of its acquisitions. Scores:

- construction window: share of the matched sites the map maps whose construction window is
  the first window the farm stands in;
- installed area per window: the mapped sites' area against (a) the whole planted area of the
  farms the model maps in some window (``planted``, ``error``) and, with the footprint phases,
  (b) the part of it inside the sites' footprints (``visible``, ``visible_error``): the
  planted area the model can see, which leaves out the parts of farms it never maps;
- the removed farm: whether its site is flagged ``disappeared`` (and with which reason).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely

from pipeline.paths import RunPaths, WorldPaths
from pipeline.stac.source import in_interval
from pipeline.timeline.tables import per_window

#: A site matches a planted farm covering at least this share of its footprint.
HIT_SHARE = 0.25


@dataclass(frozen=True)
class TimelineScore:
    """How the timeline meets the planted history.

    Attributes:
        sites: Sites mapped in some window.
        matched: Of those, the ones matching a planted farm.
        construction_right: Matched sites whose construction window is right.
        construction_share: ``construction_right / matched`` (``None``: none matched).
        wrong: ``(site, planted farm, ours, truth)`` of the wrong ones.
        area_ha: Per window ``{"mapped": ha, "planted": ha, "error": relative}``.
        removed: The removed farms and, per farm, ``disappeared`` / ``gone_reason`` of its
            site (``"unmatched"`` when no site matches it).
    """

    sites: int
    matched: int
    construction_right: int
    construction_share: float | None
    wrong: list[tuple[str, str, str, str]] = field(default_factory=list)
    area_ha: dict[str, dict[str, float]] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def planted_windows(
    history: pd.DataFrame, windows: Sequence[tuple[str, str | None]]
) -> pd.DataFrame:
    """Per planted farm and window: ``present`` (any acquisition) and ``area_m2`` (largest)."""
    when = [datetime.fromisoformat(str(d)).replace(tzinfo=UTC) for d in history["date"]]
    names = [next((n for n, iv in windows if in_interval(t, iv)), "") for t in when]
    frame = history.assign(map_window=names)
    frame = frame[frame["map_window"] != ""]
    frame = frame.assign(
        present=frame["present"].astype(str).str.lower() == "true",
        area_m2=frame["area_m2"].astype(float),
    )
    frame = frame.assign(area_m2=frame["area_m2"].where(frame["present"], 0.0))
    return frame.groupby(["farm_id", "map_window"], as_index=False).agg(
        present=("present", "any"), area_m2=("area_m2", "max")
    )


def match_sites(sites: gpd.GeoDataFrame, planted: gpd.GeoDataFrame) -> dict[str, str]:
    """``{site_id: planted farm_id}`` for the sites a planted farm covers enough of."""
    planted = planted.to_crs(sites.crs) if planted.crs != sites.crs else planted
    local = sites.estimate_utm_crs()
    mine, theirs = sites.to_crs(local), planted.to_crs(local)
    tree = shapely.STRtree(list(theirs.geometry))
    out = {}
    for sid, geom in zip(mine["site_id"], mine.geometry, strict=True):
        best, share = "", 0.0
        for k in tree.query(geom, predicate="intersects"):
            cover = shapely.intersection(geom, theirs.geometry.iloc[int(k)]).area / geom.area
            if cover > share:
                best, share = str(theirs["farm_id"].iloc[int(k)]), cover
        if share >= HIT_SHARE:
            out[str(sid)] = best
    return out


def visible_ha(
    sites: gpd.GeoDataFrame,
    match: dict[str, str],
    footprints: gpd.GeoDataFrame,
    history: pd.DataFrame,
    window: tuple[str, str | None],
) -> float:
    """Planted area (ha) of the matched farms standing in ``window`` that lies inside their
    sites' footprints: the part of the planted area the model can see.

    Args:
        sites: The timeline's sites (EPSG:4326).
        match: ``{site_id: planted farm_id}``.
        footprints: ``truth/footprints.gpkg`` (``farm_id``, ``first_date``, ``last_date``: the
            footprint phases).
        history: ``truth/history.csv``.
        window: ``(name, interval)``.
    """
    local = sites.to_crs(footprints.crs)
    dates = [datetime.fromisoformat(str(d)).replace(tzinfo=UTC) for d in history["date"]]
    inside = [in_interval(t, window[1]) for t in dates]
    standing = history[pd.Series(inside, index=history.index)]
    standing = standing[standing["present"].astype(str).str.lower() == "true"]
    total = 0.0
    for fid, rows in standing.groupby("farm_id"):
        day = str(max(rows["date"]))
        phases = footprints[footprints["farm_id"] == fid]
        ends = phases["last_date"].fillna("").astype(str)
        phases = phases[(phases["first_date"].astype(str) <= day) & ((ends == "") | (ends >= day))]
        ids = [sid for sid, f in match.items() if f == fid]
        seen = local[local["site_id"].astype(str).isin(ids)]
        if len(phases) and len(seen):
            total += shapely.intersection(phases.geometry.iloc[0], seen.union_all()).area
    return total / 1e4


def score_timeline(
    sites: gpd.GeoDataFrame,
    history: pd.DataFrame,
    planted: gpd.GeoDataFrame,
    windows: Sequence[tuple[str, str | None]],
    removed: Sequence[str],
    footprints: gpd.GeoDataFrame | None = None,
) -> TimelineScore:
    """Score ``sites`` (``map/sites.gpkg``) against the planted history.

    Args:
        sites: The timeline's sites.
        history: ``truth/history.csv``.
        planted: Every planted farm's full footprint (``farm_id``, any CRS).
        windows: ``(name, interval)`` of the map's windows, earliest first.
        removed: Planted farms removed during the windows.
        footprints: The planted footprint phases (``truth/footprints.gpkg``): adds each
            window's ``visible`` planted area (:func:`visible_ha`) and the error against it.
    """
    names = [n for n, _ in windows]
    truth = planted_windows(history, windows)
    standing = truth[truth["present"]]
    first = {fid: min(g["map_window"], key=names.index) for fid, g in standing.groupby("farm_id")}
    mapped = sites[sites["construction_window"].fillna("") != ""]
    match = match_sites(mapped, planted) if len(mapped) else {}
    wrong = []
    for row in mapped.itertuples():
        fid = match.get(str(row.site_id))
        if fid is not None and first.get(fid) != row.construction_window:
            wrong.append((str(row.site_id), fid, str(row.construction_window), first.get(fid, "")))
    seen = set(match.values())
    area = {}
    for name in names:
        ours = mapped[mapped["site_id"].astype(str).isin(match)]
        ours = ours[ours[per_window("status", name)] == "farm"]
        theirs = truth[(truth["map_window"] == name) & truth["farm_id"].isin(seen)]
        got, want = ours[per_window("area_m2", name)].sum() / 1e4, theirs["area_m2"].sum() / 1e4
        error = abs(got - want) / want if want else 0.0
        area[name] = {"mapped": round(got, 3), "planted": round(want, 3), "error": round(error, 4)}
        if footprints is not None:
            seen_ha = visible_ha(mapped, match, footprints, history, (name, dict(windows)[name]))
            area[name]["visible"] = round(seen_ha, 3)
            area[name]["visible_error"] = round(abs(got - seen_ha) / seen_ha, 4) if seen_ha else 0.0
    by_farm = {fid: sid for sid, fid in match.items()}
    gone = {}
    for fid in removed:
        sid = by_farm.get(fid)
        row = mapped[mapped["site_id"].astype(str) == sid] if sid else mapped.iloc[0:0]
        gone[fid] = (
            f"disappeared={bool(row['disappeared'].iloc[0])} "
            f"reason={row['gone_reason'].iloc[0] or '-'} site={sid}"
            if len(row)
            else "unmatched"
        )
    n = len(match)
    return TimelineScore(
        sites=len(mapped),
        matched=n,
        construction_right=n - len(wrong),
        construction_share=(n - len(wrong)) / n if n else None,
        wrong=wrong,
        area_ha=area,
        removed=gone,
    )


def score_world(
    paths: RunPaths, world: WorldPaths, windows: Sequence[tuple[str, str | None]]
) -> TimelineScore:
    """:func:`score_timeline` of a run's ``map/sites.gpkg`` against a demo world's truth
    (``farms.gpkg``, the removed farm in ``ghosts.gpkg``, ``history.csv``, ``truth.json``)."""
    truth = json.loads((world.truth / "truth.json").read_text())
    farms = gpd.read_file(world.truth / "farms.gpkg")
    ghosts = gpd.read_file(world.truth / "ghosts.gpkg").to_crs(farms.crs)
    gone = ghosts[ghosts["kind"] == "removed"]
    planted = gpd.GeoDataFrame(
        pd.concat([farms[["farm_id", "geometry"]], gone[["farm_id", "geometry"]]]),
        geometry="geometry",
        crs=farms.crs,
    )
    history = pd.read_csv(world.truth / "history.csv", dtype={"farm_id": str})
    removed = [str(truth["removed_farm"])] if truth.get("removed_farm") else []
    footprints = gpd.read_file(world.truth / "footprints.gpkg")
    sites = gpd.read_file(paths.map_sites)
    return score_timeline(sites, history, planted, windows, removed, footprints)


def main(argv: Sequence[str] | None = None) -> TimelineScore:
    """``python -m pipeline.timeline.truth --config configs/demo.yaml``: print the score of the
    run's timeline against its world's truth (as JSON)."""
    import argparse

    from pipeline.config import load_config
    from pipeline.mapping.windows import windows_of

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    if cfg.world is None:
        raise SystemExit(f"{args.config} has no world: section, so there is no truth to score")
    paths = RunPaths(cfg.run.data_root, cfg.run.name)
    windows = [(w.name, w.datetime) for w in windows_of(cfg.map, cfg.fetch)]
    score = score_world(paths, WorldPaths(cfg.run.data_root, cfg.world.name), windows)
    print(json.dumps(score.as_dict(), indent=2))
    return score


if __name__ == "__main__":
    main()
