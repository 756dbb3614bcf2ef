"""The report's sections that read the run's files: farm cards, model quality, overview map.

Each builder reads what its section shows through :class:`~pipeline.paths.RunPaths` and hands
plain values to :mod:`pipeline.report.html`; the pictures themselves are drawn by
:mod:`pipeline.report.cards`, :mod:`pipeline.report.quality` and :mod:`pipeline.report.overview`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from shapely.geometry.base import BaseGeometry

from pipeline.audit.patches import PatchData, Polygons, load_patch, read_attribution, target_mask
from pipeline.bands import BANDS
from pipeline.config import RunConfig
from pipeline.geo.crs import to_epsg
from pipeline.geo.masks import rasterize_mask
from pipeline.geo.raster import Grid
from pipeline.paths import RunPaths
from pipeline.report import overview
from pipeline.report.cards import (
    attribution_maps,
    card_patches,
    card_views,
    focus_method,
    make_card,
    records,
)
from pipeline.report.html import BeforeAfter, Card, CardViews, Figure, Quality, TimelineView
from pipeline.report.images import data_uri, jpeg_uri, outline, rgb_composite
from pipeline.report.inputs import (
    OVERVIEW_PATCH_SIDE,
    read_csv,
    read_json,
    read_layer,
    read_training_log,
    read_truecolour,
    truecolour_sources,
    zones,
)
from pipeline.report.quality import epoch_curves, quality_rows, training_curve_png


@dataclass
class Pictures:
    """Reads what the farm cards show: each patch once, and each farm's attribution maps."""

    cfg: RunConfig
    paths: RunPaths
    index: pd.DataFrame
    polygons: Polygons
    patches: dict[str, PatchData] = field(default_factory=dict)

    def views(self, pid: str, key: tuple[str, str], focus: str) -> CardViews | None:
        """The card pictures of farm ``key`` on patch ``pid`` (``None``: no such patch)."""
        if not pid or not self.paths.patch_files(pid).image.is_file():
            return None
        if pid not in self.patches:
            self.patches[pid] = load_patch(self.paths, self.cfg, pid, {}, self.polygons)
        p = self.patches[pid]
        maps = [
            (method, read_attribution(self.paths.resolve(path))[1])
            for method, path in attribution_maps(self.index, pid, key)
        ]
        return card_views(p, target_mask(*key, p, self.polygons), maps, focus)

    def links(self, pid: str, key: tuple[str, str]) -> list[tuple[str, str]]:
        """``(label, href from report/)`` of the files behind a card."""
        patch = self.paths.patch_files(pid)
        files = [("patch", patch.image), ("probability", patch.probability)]
        files += [
            (method, self.paths.resolve(path))
            for method, path in attribution_maps(self.index, pid, key)
        ]
        files.append(("flags.gpkg", self.paths.flags_gpkg))
        return [(label, "../" + self.paths.relative(f)) for label, f in files if f.exists()]


def farm_cards(
    ordered: list[dict], flags: pd.DataFrame, pictures: Pictures, cfg: RunConfig
) -> list[Card]:
    """The cards of the ``ordered`` farms (already capped), ranked from 1."""
    by_farm = dict(iter(flags.groupby(["target", "target_id"])))
    cards = []
    for rank, farm in enumerate(ordered, start=1):
        key = (str(farm["target"]), str(farm["target_id"]))
        rows = by_farm[key]
        pid, _ = card_patches(rows)
        views = pictures.views(pid, key, focus_method(farm))
        cards.append(make_card(rank, farm, rows, views, pictures.links(pid, key), cfg.audit))
    return cards


def model_quality(paths: RunPaths, cfg: RunConfig) -> Quality:
    metrics = read_json(paths.metrics, {})
    curve = training_curve_png(epoch_curves(read_training_log(paths)))
    figure = None
    if curve is not None:
        caption = (
            "Loss per epoch on the training crops and the validation patches, and validation "
            "IoU; the dashed line marks the checkpoint kept (lowest validation loss)."
        )
        figure = Figure(caption, data_uri(curve))
    note = (
        f"Probability threshold {metrics.get('threshold', '–')} "
        f"({metrics.get('threshold_rule', 'unknown rule')}); a labelled farm counts as found "
        f"when a predicted polygon overlaps it with IoU >= {metrics.get('match_iou', '–')}. "
        "Scores from predict/metrics.json."
    )
    return Quality(quality_rows(metrics), figure, note)


def flag_layers(farms: pd.DataFrame, polygons: Polygons) -> list[overview.MapLayer]:
    layers = []
    for verdict, label, colour in (
        ("unconfirmed", "flagged, not confirmed", "#fd8d3c"),
        ("confirmed", "confirmed: leans on a cue", "#e31a1c"),
    ):
        keys = farms.loc[farms["verdict"] == verdict, ["target", "target_id"]].itertuples(
            index=False
        )
        geoms = [polygons[k] for k in (tuple(map(str, k)) for k in keys) if k in polygons]
        frame = gpd.GeoDataFrame(geometry=geoms, crs=4326)
        layers.append(overview.MapLayer(label, frame, "black", colour, 0.6))
    return layers


def rank_marks(ordered: list[dict], polygons: Polygons) -> list[overview.Mark]:
    marks = []
    for rank, farm in enumerate(ordered, start=1):
        geom = polygons.get((str(farm["target"]), str(farm["target_id"])))
        if geom is not None and farm["verdict"] in ("confirmed", "unconfirmed"):
            point = geom.representative_point()
            marks.append(overview.Mark(point.x, point.y, f"#{rank}"))
    return marks


def overview_figure(
    paths: RunPaths, farms: pd.DataFrame, polygons: Polygons, ordered: list[dict]
) -> tuple[Figure | None, str]:
    labels, predicted = read_layer(paths.farms), read_layer(paths.predicted_farms)
    mapped, footprints = read_layer(paths.map_farms), read_layer(paths.fetch_index)
    layers = [
        overview.MapLayer("labelled farms (OpenStreetMap)", labels, "#ffd700", width=1.4),
        overview.MapLayer("predicted farms (patches)", predicted, "#ff00ff", width=1.0),
        overview.MapLayer("mapped farms (map stage)", mapped, "#b15cff", width=1.0, style="--"),
        *flag_layers(farms, polygons),
    ]
    extents = [
        tuple(f.total_bounds) for f in (labels, predicted, mapped, footprints) if not f.empty
    ]
    if not extents:
        return None, "No farm layer or patch footprint to draw: run the labels and fetch stages."
    grid = overview.overview_grid(overview.padded_bounds(extents))  # type: ignore[arg-type]
    files, source = truecolour_sources(paths, zones(paths))
    canvas = overview.mosaic(read_truecolour(files, OVERVIEW_PATCH_SIDE), grid)
    background = overview.Background(overview.background_rgb(canvas), grid, source)
    png = overview.overview_png(
        overview.Overview(background, layers, rank_marks(ordered, polygons))
    )
    note = (
        f"Background: {source}. Numbers are the ranks of flagged farms (their cards below). "
        "Coordinates are longitude and latitude (WGS84)."
    )
    return Figure("overview map", data_uri(png)), note


#: Most farms shown with before and after pictures (the largest new farms, then the three
#: largest disappeared sites).
MAX_BEFORE_AFTER = 12


def _quicklook(path: Path, site: BaseGeometry, caption: str) -> Figure | None:
    """True colour of a farm patch with the site outlined in yellow (``None``: no patch)."""
    if not path.is_file():
        return None
    with rasterio.open(path) as src:
        image = src.read()
        grid = Grid(src.crs, src.transform, src.height, src.width)
    if not image.any():
        return None
    rgb = rgb_composite(image, BANDS)
    epsg = int(grid.crs.to_epsg())
    edge = outline(rasterize_mask([to_epsg(site, epsg, max_segment_deg=0)], grid) > 0, 2)
    rgb[edge] = np.array([255, 215, 0], np.uint8)
    return Figure(caption, jpeg_uri(rgb))


def _before_after(paths: RunPaths, site: pd.Series, windows: list[str]) -> BeforeAfter:
    fid = str(site["farm_id"] or "")
    before_window = str(site["clear_before"] or "") or windows[0]
    if site["disappeared"]:
        title = f"site {site['site_id']}: gone in {site['gone_window']} ({site['gone_reason']})"
        line = f"mapped from {site['construction_window']}; seen clear and not a farm later"
    else:
        title = f"farm {fid}: built in {site['construction_window']}"
        line = (
            f"between {site['clear_before']} and {site['construction_window']}; replaced "
            f"{site['land_cover_before'] or 'unknown land'} ({site['land_cover_source']})"
        )
    before = (
        _quicklook(
            paths.for_map_window(before_window).map_patch(fid),
            site.geometry,
            f"before: {before_window}",
        )
        if fid and before_window != windows[-1]
        else None
    )
    after = (
        _quicklook(paths.map_patch(fid), site.geometry, f"after: {windows[-1]}") if fid else None
    )
    return BeforeAfter(title, line, before, after)


def timeline_view(paths: RunPaths) -> TimelineView | None:
    """The farms-over-time section (``None`` without a map over several windows)."""
    totals, sites = read_csv(paths.map_timeline), read_layer(paths.map_sites)
    if totals.empty:
        return None
    windows = [str(w) for w in totals["window"]]
    chart = paths.map_timeline_chart
    figure = (
        Figure("installed area and farms per window", data_uri(chart.read_bytes()))
        if chart.is_file()
        else None
    )
    shown: list[BeforeAfter] = []
    if not sites.empty:
        text = [c for c in sites.columns if sites[c].dtype == object]
        sites = sites.fillna(dict.fromkeys(text, ""))
        new = sites[sites["new"].astype(bool)].sort_values("last_area_m2", ascending=False)
        gone = sites[sites["disappeared"].astype(bool)].sort_values("first_area_m2")[::-1]
        picked = pd.concat([new.iloc[: MAX_BEFORE_AFTER - 3], gone.iloc[:3]])
        shown = [_before_after(paths, row, windows) for _, row in picked.iterrows()]
    note = (
        f"{len(sites)} farm sites over {len(windows)} windows (map/sites.gpkg, "
        "map/timeline.csv). A window in which a site had too little clear view is unseen, "
        "never 'no farm'; a farm first seen after unseen windows is not called new."
    )
    return TimelineView(figure, records(totals), shown[:MAX_BEFORE_AFTER], note)
