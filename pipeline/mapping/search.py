"""One catalog search for the whole area; each chunk then picks its items client-side
(:func:`pipeline.stac.candidates.covering`, shared with the fetch stage)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pystac
from shapely.geometry.base import BaseGeometry

from pipeline.errors import MapError
from pipeline.mapping.grid import Chunk
from pipeline.mapping.provenance import Acquisition
from pipeline.stac.candidates import covering
from pipeline.stac.source import ItemQuery, ItemSource


@dataclass(frozen=True)
class AreaQuery:
    """The one search of an area.

    Attributes:
        area: The area in EPSG:4326.
        catalog: The catalog searched (for messages).
        collection: Collection id.
        datetime: RFC 3339 interval.
        max_cloud_cover: Scene-level cloud cover limit, percent.
        max_items: Most items returned.
    """

    area: BaseGeometry
    catalog: str
    collection: str
    datetime: str | None
    max_cloud_cover: float
    max_items: int


def search_area(source: ItemSource, query: AreaQuery) -> list[pystac.Item]:
    """The items of the whole area and date window (one search).

    Raises:
        MapError: no item intersects the area in the window.
    """
    items = source.search(
        ItemQuery(
            query.area, query.collection, query.datetime, query.max_cloud_cover, query.max_items
        )
    )
    if not items:
        bounds = [round(v, 5) for v in query.area.bounds]
        raise MapError(
            f"no Sentinel-2 item in {query.catalog} (collection {query.collection}, cloud cover "
            f"<= {query.max_cloud_cover:g} %) intersects the area {bounds} between "
            f"{query.datetime or 'any dates'}: widen map.datetime / map.windows (or "
            "fetch.datetime) or check "
            "map.area_bbox / map.area_file"
        )
    return items


@dataclass(frozen=True)
class Candidates:
    """The acquisitions that may cover one chunk, and which of their items do.

    Attributes:
        acquisitions: Acquisition indices, ascending.
        items: ``{index: item ids meeting the chunk's read grid}``.
    """

    acquisitions: tuple[int, ...]
    items: dict[int, tuple[str, ...]]


def chunk_candidates(chunk: Chunk, table: Sequence[Acquisition]) -> Candidates:
    """Acquisitions with at least one item whose footprint meets the chunk's read grid."""
    found: dict[int, tuple[str, ...]] = {}
    for acq in table:
        ids = tuple(item.id for item in covering(acq.items, chunk.read_footprint))
        if ids:
            found[acq.index] = ids
    return Candidates(tuple(sorted(found)), found)
