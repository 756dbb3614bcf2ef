"""Scene screening: SCL clear and snow fractions, grouping items into scenes, choosing one.

A *scene* is the set of items of one acquisition (same ``s2:datatake_id``, else same platform
and UTC day): a patch across a tile edge is mosaicked from the scene's items, first valid pixel
wins (items ordered by how much of the patch they cover, then id). Snow (SCL 11) counts as
clear and is reported separately; cloud, shadow, cirrus, saturated/defective and nodata do not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import pystac

from pipeline.bands import SCL_NOT_CLEAR, SCL_SNOW


def scl_fractions(scl: np.ndarray) -> tuple[float, float]:
    """``(clear, snow)`` shares of an SCL patch (snow counts as clear; nodata is not clear)."""
    n = scl.size
    if n == 0:
        return 0.0, 0.0
    not_clear = np.isin(scl, np.fromiter(SCL_NOT_CLEAR, dtype=scl.dtype))
    clear = 1.0 - float(not_clear.sum()) / n
    snow = float((scl == SCL_SNOW).sum()) / n
    return clear, snow


def item_datetime(item: pystac.Item) -> datetime:
    """The item's datetime (start_datetime when ``datetime`` is null), in UTC."""
    when = item.datetime or pystac.utils.str_to_datetime(item.properties["start_datetime"])
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def scene_key(item: pystac.Item) -> str:
    """Items with the same key belong to one acquisition."""
    datatake = item.properties.get("s2:datatake_id")
    if datatake:
        return str(datatake)
    platform = str(item.properties.get("platform", "")).lower()
    return f"{platform}:{item_datetime(item).date().isoformat()}"


def group_scenes(items: Sequence[pystac.Item]) -> list[list[pystac.Item]]:
    """Items grouped by :func:`scene_key`, groups and members ordered by (datetime, id)."""
    groups: dict[str, list[pystac.Item]] = {}
    for item in sorted(items, key=lambda it: (item_datetime(it), it.id)):
        groups.setdefault(scene_key(item), []).append(item)
    return list(groups.values())


def mosaic_first_valid(layers: Sequence[np.ndarray], nodata: int = 0) -> np.ndarray:
    """Fill nodata of the first layer from the next ones, in order (same shape and dtype)."""
    out = layers[0].copy()
    for layer in layers[1:]:
        hole = out == nodata
        if not hole.any():
            break
        out[hole] = layer[hole]
    return out


@dataclass(frozen=True)
class SceneScreen:
    """One candidate scene screened on one patch.

    Attributes:
        items: The scene's items in mosaic order (the first is the primary item).
        when: Datetime of the primary item (UTC).
        clear_fraction: Clear share of the mosaicked SCL window (snow included).
        snow_fraction: Snow share of the window.
        scl: ``(H, W)`` uint8 mosaicked SCL on the patch grid.
    """

    items: tuple[pystac.Item, ...]
    when: datetime
    clear_fraction: float
    snow_fraction: float
    scl: np.ndarray

    @property
    def item_ids(self) -> list[str]:
        return [item.id for item in self.items]


def screen_scene(items: Sequence[pystac.Item], scls: Sequence[np.ndarray]) -> SceneScreen:
    """Order a scene's items by patch coverage and mosaic their SCL windows.

    Args:
        items: The scene's items.
        scls: Each item's SCL on the patch grid (``(H, W)`` uint8, 0 outside the item).
    """
    order = sorted(range(len(items)), key=lambda i: (-int((scls[i] != 0).sum()), items[i].id))
    used = [i for i in order if (scls[i] != 0).any()] or order[:1]
    scl = mosaic_first_valid([scls[i] for i in used])
    clear, snow = scl_fractions(scl)
    chosen = tuple(items[i] for i in used)
    return SceneScreen(chosen, item_datetime(chosen[0]), clear, snow, scl)


def choose_scene(
    screens: Sequence[SceneScreen],
    *,
    min_clear: float,
    target: date | None,
    tie: float,
) -> tuple[SceneScreen | None, str]:
    """The clearest scene with ``clear_fraction >= min_clear``, or None and the reason.

    Clear fractions in the same ``tie``-wide bucket are ties; they go to the scene nearest
    ``target`` (most recent when ``target`` is None), then to the lowest item id.
    """
    if not screens:
        return None, "no STAC item matched the patch footprint, dates and cloud-cover filter"
    passing = [s for s in screens if s.clear_fraction >= min_clear]
    if not passing:
        best = max(screens, key=lambda s: s.clear_fraction)
        return None, (
            f"no scene has clear fraction >= {min_clear:g} (best {best.clear_fraction:.3f} in "
            f"{best.items[0].id}; {len(screens)} candidate scene(s))"
        )

    def key(s: SceneScreen) -> tuple[float, float, str]:
        bucket = -math.floor(s.clear_fraction / tie + 1e-9)
        distance = (
            -s.when.timestamp() if target is None else float(abs((s.when.date() - target).days))
        )
        return (bucket, distance, s.items[0].id)

    best = min(passing, key=key)
    return best, f"clearest of {len(screens)} candidate scene(s)"


def other_scenes(
    screens: Sequence[SceneScreen], chosen: SceneScreen, count: int
) -> list[SceneScreen]:
    """Up to ``count`` scenes other than ``chosen`` with any clear pixel, clearest first
    (ties: nearest ``chosen`` in time, then lowest item id): the patch's other acquisitions.

    Cue-free is not asked here: which pixels of which date are clear of a cue is the audit's
    question (they are kept with their SCL).
    """
    others = [s for s in screens if s is not chosen and s.clear_fraction > 0]
    others.sort(
        key=lambda s: (
            -s.clear_fraction,
            abs((s.when - chosen.when).total_seconds()),
            s.items[0].id,
        )
    )
    return others[:count]
