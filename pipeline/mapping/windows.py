"""Mapping at several date windows: one search, items split per window, the same chunks.

Every window is mapped by :func:`~pipeline.mapping.region.map_region` with the same chunk grid,
model and cluster (the model stays loaded in every worker), so the windows' mosaics stack pixel
for pixel. The latest window writes the usual ``map/`` outputs; each earlier one writes
``map/windows/<name>/`` (:meth:`~pipeline.paths.RunPaths.for_map_window`) and cuts its farm
patches around the *latest* window's farms (the before pictures). A window without any
acquisition is a gap in every chunk (``gaps.gpkg`` lists them), never "no farm".
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import pystac

from pipeline.config.fetch import FetchConfig
from pipeline.config.map import MapConfig
from pipeline.errors import ConfigError, MapError
from pipeline.io import write_json
from pipeline.mapping.gaps import gap_frame, write_gaps
from pipeline.mapping.grid import plan_chunks
from pipeline.mapping.region import MapRequest, map_region
from pipeline.paths import RunPaths
from pipeline.stac.assets import Signer
from pipeline.stac.scene import item_datetime
from pipeline.stac.source import in_interval, interval_bounds

log = logging.getLogger(__name__)

#: Name of the one window of a map without ``map.windows``.
DEFAULT_WINDOW = "latest"


@dataclass(frozen=True)
class Window:
    """One date window.

    Attributes:
        name: Folder and column suffix.
        datetime: RFC 3339 interval (``None``: any date).
        target_date: Clear-share ties go to the acquisition nearest it (``None``: most recent).
    """

    name: str
    datetime: str | None
    target_date: date | None


@dataclass(frozen=True)
class WindowRun:
    """Where one mapped window's outputs are.

    Attributes:
        window: The window.
        paths: Its paths (the run's own for the latest window).
        acquisitions: Acquisitions found in it (0: every chunk is a gap).
    """

    window: Window
    paths: RunPaths
    acquisitions: int


def _start(interval: str | None) -> datetime:
    start, _ = interval_bounds(interval)
    return start or datetime.min.replace(tzinfo=UTC)


def windows_of(mc: MapConfig, fc: FetchConfig) -> list[Window]:
    """The map's windows, earliest first (the last is the latest).

    Without ``map.windows``: one window of ``map.datetime`` (else ``fetch.datetime``). The latest
    window's target date falls back to ``map.target_date`` / ``fetch.target_date``.

    Raises:
        ConfigError: two windows overlap (an item would belong to both).
    """
    fallback = mc.target_date or fc.target_date
    if not mc.windows:
        return [Window(DEFAULT_WINDOW, mc.datetime or fc.datetime, fallback)]
    ordered = sorted(mc.windows, key=lambda w: _start(w.datetime))
    out = [Window(w.name, w.datetime, w.target_date) for w in ordered]
    for a, b in itertools.pairwise(out):
        end, (start, _) = interval_bounds(a.datetime)[1], interval_bounds(b.datetime)
        if end is None or start is None or end >= start:
            raise ConfigError(
                f"map.windows {a.name} ({a.datetime}) and {b.name} ({b.datetime}) overlap; make "
                "every window end before the next one starts"
            )
    last = out[-1]
    return [*out[:-1], replace(last, target_date=last.target_date or fallback)]


def union_interval(windows: Sequence[Window]) -> str | None:
    """The interval of the one search: from the first window's start to the last one's end."""
    first, last = windows[0].datetime, windows[-1].datetime
    if len(windows) == 1 or first is None or last is None:
        return first if len(windows) == 1 else None
    return f"{first.partition('/')[0]}/{last.partition('/')[2] or last}"


def split_items(
    items: Sequence[pystac.Item], windows: Sequence[Window]
) -> dict[str, list[pystac.Item]]:
    """``{window name: its items}`` (an item outside every window is dropped)."""
    return {
        w.name: [it for it in items if in_interval(item_datetime(it), w.datetime)] for w in windows
    }


def for_window(request: MapRequest, window: Window) -> MapRequest:
    """``request`` with ``window``'s interval and target date (in the chunk digests too)."""
    scenes = list(request.digest["scenes"])
    scenes[2], scenes[3] = str(window.target_date), window.datetime
    return replace(
        request,
        query=replace(request.query, datetime=window.datetime),
        settings=replace(request.settings, target_date=window.target_date),
        digest={**request.digest, "scenes": scenes},
    )


def _empty_window(request: MapRequest, paths: RunPaths, window: Window) -> int:
    """Write the gaps of a window without acquisitions (every chunk); returns their count."""
    chunks = plan_chunks(request.query.area, request.chunk_px, request.halo_px, request.gsd)
    reason = f"no acquisition in window {window.name} ({window.datetime})"
    write_gaps(paths.map_gaps, gap_frame([(c, reason) for c in chunks]))
    write_json(paths.map_summary, {"acquisitions": 0, "chunks": {"gaps": len(chunks)}})
    return len(chunks)


def map_windows(
    request: MapRequest,
    windows: Sequence[Window],
    items: Sequence[pystac.Item],
    paths: RunPaths,
    client: Any,
    signer: Signer,
    labels: gpd.GeoDataFrame,
) -> tuple[list[Path], dict[str, Any], list[WindowRun]]:
    """Map every window from ``items`` (the one search); latest first, then the others.

    Returns:
        ``(outputs, summary, runs)``: the summary is the latest window's, with ``windows``
        (per window: acquisitions, chunk counts, farms) added; ``runs`` is earliest first.

    Raises:
        MapError: the latest window has no acquisition, or chunks of a window failed.
    """
    by_window = split_items(items, windows)
    latest = windows[-1]
    if not by_window[latest.name]:
        raise MapError(
            f"no Sentinel-2 item of the search falls in the latest window {latest.name} "
            f"({latest.datetime}): widen that window in map.windows"
        )
    outputs, summary = map_region(
        for_window(request, latest), by_window[latest.name], paths, client, signer, labels
    )
    runs = {latest.name: WindowRun(latest, paths, summary["acquisitions"])}
    per: dict[str, Any] = {latest.name: _brief(summary)}
    if len(windows) > 1:
        farms = gpd.read_file(paths.map_farms)
        for window in windows[:-1]:
            wpaths = paths.for_map_window(window.name)
            if not by_window[window.name]:
                gaps = _empty_window(request, wpaths, window)
                per[window.name] = {"acquisitions": 0, "gaps": gaps, "mapped_farms": 0}
                runs[window.name] = WindowRun(window, wpaths, 0)
                continue
            _, wsummary = map_region(
                for_window(request, window),
                by_window[window.name],
                wpaths,
                client,
                signer,
                labels,
                patch_farms=farms,
            )
            per[window.name] = _brief(wsummary)
            runs[window.name] = WindowRun(window, wpaths, wsummary["acquisitions"])
        outputs.append(paths.map_windows_dir)
        summary["windows"] = {w.name: per[w.name] for w in windows}
    return outputs, summary, [runs[w.name] for w in windows]


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "acquisitions": summary["acquisitions"],
        "gaps": summary["chunks"]["gaps"],
        "mapped_farms": summary.get("mapped_farms", 0),
    }
