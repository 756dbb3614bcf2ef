"""Where items come from: a STAC API (pystac-client) or a static catalog (pystac).

Both implement :class:`ItemSource`: ``search(query)`` returns the pystac Items of one collection
whose footprint intersects the query geometry, whose datetime lies in the interval and whose
``eo:cloud_cover`` is at most the limit (items without it are kept). The STAC API pages through
results (``next`` links) and retries transient failures twice over: urllib3 ``Retry`` inside
``StacApiIO`` for statuses and connects (honouring ``Retry-After``), and a whole-search retry
for what happens after the headers (a body cut mid-way).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import pystac
import requests
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from pipeline.errors import FetchError
from pipeline.net import RetryPolicy, call_with_retries, describe_error
from pipeline.stac.http import api_retry, is_transient
from pipeline.stac.scene import item_datetime


@dataclass(frozen=True)
class ItemQuery:
    """One search.

    Attributes:
        geometry: Footprint in EPSG:4326 (lon/lat).
        collection: Collection id.
        datetime: RFC 3339 interval (``a/b``, ``..`` open) or a single date; None = any.
        max_cloud_cover: Upper limit of ``eo:cloud_cover`` in percent.
        max_items: Most items returned.
    """

    geometry: BaseGeometry
    collection: str
    datetime: str | None
    max_cloud_cover: float
    max_items: int


class ItemSource(Protocol):
    """Anything that answers an :class:`ItemQuery` with pystac Items."""

    def search(self, query: ItemQuery) -> list[pystac.Item]: ...


def _bound(text: str, end: bool) -> datetime | None:
    if text in ("", ".."):
        return None
    if len(text) == 10:  # a bare date covers the whole day
        text += "T23:59:59.999999+00:00" if end else "T00:00:00+00:00"
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def interval_bounds(interval: str | None) -> tuple[datetime | None, datetime | None]:
    """``(start, end)`` of an RFC 3339 interval, inclusive (a bare date covers its day; an
    open end or no interval is None)."""
    if not interval:
        return None, None
    start_text, sep, end_text = interval.partition("/")
    return _bound(start_text, end=False), _bound(end_text if sep else start_text, end=True)


def in_interval(when: datetime, interval: str | None) -> bool:
    """Whether ``when`` lies in an RFC 3339 interval (bounds inclusive; dates cover the day)."""
    start, end = interval_bounds(interval)
    return (start is None or when >= start) and (end is None or when <= end)


def matches(item: pystac.Item, query: ItemQuery) -> bool:
    """Client-side check of every condition of ``query`` (servers may ignore some)."""
    if item.collection_id not in (None, query.collection):
        return False
    if item.geometry is None or not shape(item.geometry).intersects(query.geometry):
        return False
    if not in_interval(item_datetime(item), query.datetime):
        return False
    cloud = item.properties.get("eo:cloud_cover")
    return cloud is None or float(cloud) <= query.max_cloud_cover


class StacApiSource:
    """Items from a STAC API (Earth Search, Planetary Computer, the loopback test server)."""

    def __init__(self, url: str, *, policy: RetryPolicy, timeout_s: float, page_size: int):
        self.url = url
        self.policy = policy
        self.timeout_s = timeout_s
        self.page_size = page_size
        self._local = threading.local()

    def _client(self) -> Any:
        """One pystac-client ``Client`` per thread (a requests Session is not thread-safe)."""
        client = getattr(self._local, "client", None)
        if client is None:
            from pystac_client import Client
            from pystac_client.stac_api_io import StacApiIO

            io = StacApiIO(max_retries=api_retry(self.policy), timeout=self.timeout_s)
            client = call_with_retries(
                lambda: Client.open(self.url, stac_io=io),
                self.policy,
                what=f"open STAC API {self.url}",
                retryable=is_transient,
            )
            self._local.client = client
        return client

    def _search_once(self, query: ItemQuery) -> list[pystac.Item]:
        from pystac_client import ConformanceClasses

        client = self._client()
        kwargs: dict[str, Any] = {
            "collections": [query.collection],
            "intersects": mapping(query.geometry),
            "datetime": query.datetime,
            "max_items": query.max_items,
            "limit": min(self.page_size, query.max_items),
        }
        if client.conforms_to(ConformanceClasses.FILTER):
            kwargs["filter"] = {
                "op": "<=",
                "args": [{"property": "eo:cloud_cover"}, query.max_cloud_cover],
            }
            kwargs["filter_lang"] = "cql2-json"
        found: dict[str, pystac.Item] = {}
        for item in client.search(**kwargs).items():
            found.setdefault(item.id, item)
        return [item for item in found.values() if matches(item, query)]

    def search(self, query: ItemQuery) -> list[pystac.Item]:
        """Search (all pages), retrying the whole search on transient failures.

        Raises:
            FetchError: the API still fails after the retries (names the URL, the status and
                the fix).
        """
        from pystac_client.exceptions import APIError

        try:
            return call_with_retries(
                lambda: self._search_once(query),
                self.policy,
                what=f"STAC search at {self.url}",
                retryable=is_transient,
            )
        except (APIError, requests.RequestException, pystac.STACError) as err:
            raise FetchError(
                f"the STAC API at {self.url} failed ({describe_error(err)}) after "
                f"{self.policy.retries} retries. Check that the service is up and that "
                "fetch.catalog is its search endpoint's root; re-run `make fetch` later "
                "(finished patches are reused), or raise fetch.retries / fetch.backoff_s"
            ) from err


class StaticCatalogSource:
    """Items of a static STAC catalog (the demo world), read once and filtered per query."""

    def __init__(self, href: str):
        self.href = href
        self._items: list[pystac.Item] | None = None
        self._lock = threading.Lock()

    def load(self) -> list[pystac.Item]:
        """Read every item of the catalog (once).

        Raises:
            FetchError: the catalog cannot be read.
        """
        return self._all()

    def _all(self) -> list[pystac.Item]:
        with self._lock:
            if self._items is None:
                try:
                    catalog = pystac.Catalog.from_file(self.href)
                except (OSError, pystac.STACError, ValueError) as err:
                    raise FetchError(
                        f"cannot read the static STAC catalog {self.href}: {err}. Build the demo "
                        "world first (make world) or fix fetch.catalog"
                    ) from err
                items = []
                for item in catalog.get_items(recursive=True):
                    if item.collection_id is None and isinstance(
                        item.get_parent(), pystac.Collection
                    ):
                        item.collection_id = item.get_parent().id  # type: ignore[union-attr]
                    items.append(item)
                self._items = items
            return self._items

    def search(self, query: ItemQuery) -> list[pystac.Item]:
        found = [item for item in self._all() if matches(item, query)]
        found.sort(key=lambda it: (item_datetime(it), it.id))
        return found[: query.max_items]
