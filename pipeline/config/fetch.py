"""``fetch:`` section: which STAC catalog serves Sentinel-2 L2A and how patches are screened."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field

from pipeline.config.base import Section


class FetchConfig(Section):
    """STAC source and scene selection.

    Attributes:
        catalog: A STAC API root URL (Earth Search, Planetary Computer) or the path/URL of a
            static ``catalog.json`` (the demo world).
        provider: How assets are signed and radiometry is harmonized; ``auto`` infers it from
            the catalog URL and the items' properties.
        collection: Collection id (``sentinel-2-l2a``, ``sentinel-2-c1-l2a``).
        datetime: RFC 3339 interval searched, e.g. ``2023-06-01/2023-09-30``.
        target_date: Ties in clear fraction go to the scene nearest this date.
        max_cloud_cover: Scene-level ``eo:cloud_cover`` pre-filter, percent.
        min_clear_fraction: A patch needs at least this clear share of its SCL window.
        workers: Concurrent patch reads (threads; GDAL releases the GIL).
    """

    catalog: str
    provider: Literal["auto", "earth-search", "planetary-computer", "static"] = "auto"
    collection: str = "sentinel-2-l2a"
    datetime: str | None = None
    target_date: date | None = None
    max_cloud_cover: float = Field(default=60.0, ge=0, le=100)
    min_clear_fraction: float = Field(default=0.8, ge=0, le=1)
    max_items: int = Field(default=200, ge=1)
    workers: int = Field(default=8, ge=1, le=64)
    retries: int = Field(default=5, ge=0)
    timeout_s: float = Field(default=30.0, gt=0)
