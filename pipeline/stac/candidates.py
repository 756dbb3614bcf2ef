"""One catalog search for many footprints, each footprint then picking its items client-side.

The fetch stage (every planned patch) and the map stage (every chunk) search the catalog once
for the whole area and date window, then take each footprint's candidates from that result by
footprint intersection (:func:`covering`), in the order the source returned them. Both
sources order their results independently of the query geometry (a static catalog by datetime
and id; a STAC API by its own sort key), so a footprint's candidates are the items, and the
order, that its own search would have returned.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

import pystac
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from pipeline.stac.source import ItemQuery, ItemSource

log = logging.getLogger(__name__)

#: Vertices above which the searched area is the footprints' bounding box, not their union
#: (a STAC API request body stays small; items outside every footprint are dropped anyway).
MAX_AREA_VERTICES: Final[int] = 2000


def search_extent(footprints: Iterable[BaseGeometry]) -> BaseGeometry:
    """What one search covers: the union of ``footprints`` (EPSG:4326), or its bounding box
    when the union has more than :data:`MAX_AREA_VERTICES` vertices."""
    area = shapely.union_all(list(footprints))
    return area.envelope if shapely.get_num_coordinates(area) > MAX_AREA_VERTICES else area


def covering(items: Iterable[pystac.Item], footprint: BaseGeometry) -> list[pystac.Item]:
    """The items whose footprint meets ``footprint``, in their given order."""
    shapely.prepare(footprint)
    return [
        item
        for item in items
        if item.geometry is not None and footprint.intersects(shape(item.geometry))
    ]


def footprint_candidates(
    source: ItemSource, query: ItemQuery, footprints: Mapping[str, BaseGeometry]
) -> dict[str, list[pystac.Item]]:
    """``{key: candidate items}`` of every footprint, from one search of their union.

    The search asks for up to ``query.max_items`` per footprint; each footprint keeps its first
    ``query.max_items``, as its own search would. When that cap is reached (the result may be
    cut short) each footprint is searched on its own instead, so candidates never depend on it.

    Raises:
        FetchError: the catalog fails after its retries.
    """
    if not footprints:
        return {}
    cap = query.max_items * len(footprints)
    found = source.search(
        replace(query, geometry=search_extent(footprints.values()), max_items=cap)
    )
    if len(found) >= cap:
        log.warning(
            "the area search returned its cap of %d items; searching each of the %d footprints "
            "on its own (raise fetch.max_items or narrow fetch.datetime)",
            cap,
            len(footprints),
        )
        return {k: source.search(replace(query, geometry=g)) for k, g in footprints.items()}
    return {k: covering(found, g)[: query.max_items] for k, g in footprints.items()}


def portable(item: pystac.Item) -> dict[str, Any]:
    """``item`` as a dict with absolute asset hrefs and no links: small to send to a Dask
    worker (no parent catalog), rebuilt there with ``pystac.Item.from_dict``."""
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    for key, asset in item.assets.items():
        doc["assets"][key]["href"] = asset.get_absolute_href() or asset.href
    doc["links"] = []
    if item.collection_id is not None:
        doc["collection"] = item.collection_id
    return doc


def portable_all(groups: Mapping[str, Sequence[pystac.Item]]) -> dict[str, list[dict[str, Any]]]:
    """:func:`portable` of every group's items (each item converted once)."""
    docs: dict[str, dict[str, Any]] = {}
    out = {}
    for key, items in groups.items():
        out[key] = [docs.setdefault(it.id, portable(it)) for it in items]
    return out
