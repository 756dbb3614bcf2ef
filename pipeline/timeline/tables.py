"""The timeline's tables (their columns declared once) and its chart.

``map/site_windows.csv`` has one row per site and window; ``map/sites.gpkg`` one row per site
(every farm over time, disappeared ones included) with :data:`SITE_COLUMNS` and, per window,
``area_m2_<window>`` and ``status_<window>``; ``map/farms.gpkg`` gains the same columns for the
latest window's farms; ``map/timeline.csv`` totals each window (:func:`window_totals`) and
``map/timeline.png`` draws them (:func:`timeline_png`). Pure functions but the chart's bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.tables import Columns

SITE_WINDOW_COLUMNS = Columns(
    ("site_id", "the site: a latest farm's farm_id, or e0001... for a site the latest misses"),
    ("window", "the date window (map.windows name)"),
    ("status", "farm, clear (seen, not a farm), missed (clear between farm windows), unseen"),
    ("clear_fraction", "share of the footprint with a clear acquisition in the window (0-1)"),
    ("mean_prob", "mean probability of the footprint's clear pixels"),
    ("area_m2", "mapped area inside the footprint (pixels at or above the threshold), m²"),
)

SITE_COLUMNS = Columns(
    ("site_id", "the site: a latest farm's farm_id, or e0001... for a site the latest misses"),
    ("farm_id", "the latest window's farm (empty for an e site)"),
    ("construction_window", "first window mapping the site as a farm (empty: never)"),
    (
        "clear_before",
        "last earlier window that saw the site clear and not a farm: built between the two",
    ),
    ("new", "built during the windows (clear_before is set; not after a gap, not from the first)"),
    ("first_area_m2", "area in the construction window, m²"),
    ("last_area_m2", "area in the last window mapping it as a farm, m²"),
    ("extended", "the area grew by 20 % or more (timeline.history.GROWTH_SHARE)"),
    ("disappeared", "a farm once, seen clear and not a farm later, and never a farm again"),
    ("gone_window", "first window it was seen clear and not a farm after being one"),
    (
        "gone_reason",
        "likelier cause: decommissioned, or model_miss (probability near the threshold or the "
        "window only partly clear)",
    ),
    ("land_cover_before", "land it replaced (new farms; empty: unknown)"),
    ("land_cover_share", "share of the footprint's classed pixels in that class"),
    ("land_cover_source", "land-cover collection item, or the spectral window, or why unknown"),
    ("area_m2_<window>", "mapped area inside the footprint in each window, m²"),
    ("status_<window>", "the site's status in each window (as in site_windows.csv)"),
)

WINDOW_COLUMNS = Columns(
    ("window", "the date window (map.windows name), earliest first"),
    ("datetime", "its RFC 3339 interval"),
    ("acquisitions", "acquisitions found in it (0: every chunk is a gap)"),
    ("farms", "sites mapped as farms in it"),
    ("installed_area_ha", "their mapped area, ha"),
    ("new_farms", "sites whose construction window it is and that are new"),
    ("disappeared_farms", "sites that disappear in it (gone_window)"),
    ("unseen_sites", "sites with too little clear footprint in it (gaps, not 'no farm')"),
)


def per_window(name: str, window: str) -> str:
    """A per-window column name: ``area_m2`` and ``2015-07`` -> ``area_m2_2015-07``."""
    return f"{name}_{window}"


def window_totals(
    windows: Sequence[tuple[str, str | None, int]],
    site_windows: Sequence[Mapping[str, Any]],
    sites: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Rows of ``timeline.csv``.

    Args:
        windows: ``(name, interval, acquisitions)`` earliest first.
        site_windows: Rows of ``site_windows.csv``.
        sites: Rows with ``construction_window``, ``new``, ``gone_window``.
    """
    out = []
    for name, interval, acquisitions in windows:
        rows = [r for r in site_windows if r["window"] == name]
        farms = [r for r in rows if r["status"] == "farm"]
        out.append(
            {
                "window": name,
                "datetime": interval or "",
                "acquisitions": acquisitions,
                "farms": len(farms),
                "installed_area_ha": round(sum(float(r["area_m2"]) for r in farms) / 1e4, 4),
                "new_farms": sum(1 for s in sites if s["new"] and s["construction_window"] == name),
                "disappeared_farms": sum(1 for s in sites if s["gone_window"] == name),
                "unseen_sites": sum(1 for r in rows if r["status"] == "unseen"),
            }
        )
    return out


def timeline_png(totals: Sequence[Mapping[str, Any]]) -> bytes:
    """Bars of installed area and a line of the farm count per window (PNG bytes)."""
    from pipeline.report.images import figure_png, plt

    names = [str(t["window"]) for t in totals]
    fig, ax = plt.subplots(figsize=(6, 3))
    xs = list(range(len(names)))
    ax.bar(xs, [float(t["installed_area_ha"]) for t in totals], color="#3b6ea5", width=0.6)
    ax.set_ylabel("installed area (ha)", fontsize=9, color="#3b6ea5")
    ax.set_xticks(xs, names, fontsize=8)
    twin = ax.twinx()
    twin.plot(xs, [int(t["farms"]) for t in totals], color="#c0392b", marker="o")
    twin.set_ylabel("farms", fontsize=9, color="#c0392b")
    twin.set_ylim(bottom=0)
    ax.set_title("Solar farms mapped per window", fontsize=10)
    return figure_png(fig, dpi=90)
