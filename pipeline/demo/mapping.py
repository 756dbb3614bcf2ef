"""The demo world as OpenStreetMap maps it: which farms are drawn, where, and when edited.

Every planted farm is drawn (:func:`pipeline.demo.osm.draw_farms`), a shifted one at its moved
outline; then the ghost labels and the removed farm are drawn after the rooftop, and the
unmapped farms are dropped, so every other object keeps the id it has in a world without label
errors. In a world with a history, each farm's OSM edit falls between the last acquisition
before it was built and the snapshot (:data:`~pipeline.demo.label_errors.OSM_SNAPSHOT`); the
extended farm's outline was redrawn after the extension (version 2 or more); the removed farm
was last edited before it was removed. Without a history, farms keep version 1 at
:data:`~pipeline.demo.osm.TIMESTAMP`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from shapely.geometry import Polygon

from pipeline.demo import label_errors
from pipeline.demo.calendar import Acquisition
from pipeline.demo.history import EXTENDED_IN, HistoryPlan
from pipeline.demo.label_errors import GhostPlan, LabelErrors
from pipeline.demo.layout import FarmPlan
from pipeline.demo.osm import PLANT_TAGS, OsmDraft, OsmFarm, draw_farms, draw_sites

Edit = tuple[int, dt.datetime]
#: A site to draw: outline, kind, tags, edit, last day standing.
SiteDraft = tuple[Polygon, str, dict[str, str], Edit, dt.date | None]


@dataclass(frozen=True)
class OsmSite:
    """An OSM farm with nothing standing in January: a ghost label or the removed farm.

    Attributes:
        ghost_id: ``g01``, ``g02``, ... (the removed farm last).
        way_id: Its closed way's id (the labels stage reports ``w<way_id>``).
        kind: ``planned``, ``construction`` (ghost labels) or ``removed`` (the removed farm).
        geometry: Outline (EPSG:32618).
        tags: The way's tags.
        edit: ``(version, timestamp)`` of the way.
        planted_until: Last acquisition day it stands in (the removed farm), else ``None``.
    """

    ghost_id: str
    way_id: int
    kind: str
    geometry: Polygon
    tags: dict[str, str]
    edit: Edit
    planted_until: dt.date | None = None


@dataclass(frozen=True)
class Mapped:
    """What the OSM file holds.

    Attributes:
        draft: The objects to write.
        farms: Per planted farm (planting order), how it was drawn (its ids; dropped when
            unmapped).
        ids: Farm index -> the truth's ``farm_id``: the OSM object the labels stage reports
            (``w<id>``/``r<id>``), or ``u<index>`` (3 digits) for an unmapped farm.
        edits: Farm index -> ``(version, timestamp)`` of its OSM object (mapped farms).
        sites: Ghost labels and the removed farm.
        roof: The rooftop generator's way id.
    """

    draft: OsmDraft
    farms: list[OsmFarm]
    ids: dict[int, str]
    edits: dict[int, Edit] = field(default_factory=dict)
    sites: list[OsmSite] = field(default_factory=list)
    roof: int | None = None


def window_span(acquisitions: Sequence[Acquisition], window: int) -> tuple[dt.datetime, ...]:
    """Sensing times of the acquisitions of ``window``."""
    return tuple(a.when for a in acquisitions if a.window == window)


def farm_edit(
    rng: np.random.Generator,
    farm: FarmPlan,
    history: HistoryPlan,
    acquisitions: Sequence[Acquisition],
) -> Edit:
    """When a standing farm was last edited: after the last acquisition without it (its
    extension, for the extended farm), before the snapshot."""
    built = history.built[farm.index]
    least, after = 1, built - 1
    if farm.index == history.extended:
        least, after = 2, EXTENDED_IN - 1
    start = max(window_span(acquisitions, after)) if after >= 0 else label_errors.MAPPING_START
    when = label_errors.edit_time(rng, start, label_errors.OSM_SNAPSHOT)
    return label_errors.edit_version(rng, least), when


def _name(number: int) -> dict[str, str]:
    return {"name": f"Demo Solar {number:02d}", "operator": "Demo Energy"}


def ghost_sites(
    rng: np.random.Generator,
    ghosts: Sequence[GhostPlan],
    history: HistoryPlan,
    acquisitions: Sequence[Acquisition],
    first_number: int,
) -> list[SiteDraft]:
    """Outline, kind, tags, edit and last day standing of each ghost, then of the removed farm."""
    out: list[SiteDraft] = []
    for g in ghosts:
        tags = {**PLANT_TAGS, **label_errors.GHOST_TAGS[g.kind], **_name(first_number + g.index)}
        start, end = label_errors.GHOST_MAPPED[g.kind]
        version = 1 if g.kind == "planned" else label_errors.edit_version(rng, 2)
        out.append(
            (g.geometry, g.kind, tags, (version, label_errors.edit_time(rng, start, end)), None)
        )
    if history.removed is not None:
        last = max(window_span(acquisitions, history.last_window - 1))
        first = min(window_span(acquisitions, 0))
        when = label_errors.edit_time(rng, label_errors.MAPPING_START, first)
        tags = {**PLANT_TAGS, **_name(first_number + len(ghosts))}
        edit = (label_errors.edit_version(rng, 1), when)
        out.append((history.removed.geometry, "removed", tags, edit, last.date()))
    return out


def map_world(
    farms: Sequence[FarmPlan],
    rooftop: Polygon | None,
    changes: tuple[LabelErrors, HistoryPlan, Sequence[GhostPlan]],
    acquisitions: Sequence[Acquisition],
    rngs: tuple[np.random.Generator, np.random.Generator],
    epsg: int,
) -> Mapped:
    """Draw the OSM file of the world.

    Args:
        farms: The planted farms (EPSG:``epsg``).
        rooftop: The rooftop array, drawn as a generator only.
        changes: The label errors, the history and the ghost labels.
        acquisitions: The world's acquisitions (for edit times).
        rngs: The generator of the drawing (generator sub-arrays) and of the edits.
    """
    errors, history, ghosts = changes
    draw_rng, edit_rng = rngs
    drawn = [label_errors.shifted(f, errors) for f in farms]
    draft, osm, roof = draw_farms(drawn, rooftop, draw_rng, epsg)
    ids = {o.farm_index: o.farm_id for o in osm}
    edits: dict[int, Edit] = {}
    for farm, o in zip(farms, osm, strict=True):
        if farm.index in errors.unmapped:
            ids[farm.index] = f"u{farm.index:03d}"
            continue
        if history.last_window == 0:
            continue
        edits[farm.index] = farm_edit(edit_rng, farm, history, acquisitions)
        for way in o.way_ids:
            draft.set_edit("w", way, *edits[farm.index])
        if o.relation_id is not None:
            draft.set_edit("r", o.relation_id, *edits[farm.index])
    found = ghost_sites(edit_rng, ghosts, history, acquisitions, len(farms) + 1)
    way_ids = draw_sites(draft, [(g, tags) for g, _, tags, _, _ in found], epsg)
    sites = []
    for i, (way, (geom, kind, tags, edit, until)) in enumerate(zip(way_ids, found, strict=True)):
        draft.set_edit("w", way, *edit)
        sites.append(OsmSite(f"g{i + 1:02d}", way, kind, geom, tags, edit, until))
    draft.drop_ways({w for o in osm if o.farm_index in errors.unmapped for w in o.way_ids})
    return Mapped(draft, osm, ids, edits, sites, roof)
