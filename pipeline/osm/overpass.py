"""Overpass API: query builder, a retrying HTTP client with a disk cache, and response parsers.

The query asks for ways and relations tagged as solar plants or solar generators in a bounding
box, with ``out geom`` so every way (and every way member of a relation) carries its
coordinates: one request, no recursion. Responses in the JSON and the XML format are both parsed
into :class:`~pipeline.osm.features.OsmFeature` objects.

Failures that Overpass itself tells us to retry (HTTP 429, 5xx, a server-side timeout remark)
and transport failures (client timeout, dropped connection) are retried with the shared policy
of :mod:`pipeline.net` (exponential backoff, ``Retry-After`` honoured when longer). Successful,
parseable responses are cached under ``<cache_dir>/<sha256 of the query>.<format>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import requests

from pipeline.errors import FetchError, LabelsError
from pipeline.io import write_text
from pipeline.net import (
    RETRY_STATUS,
    RetryPolicy,
    call_with_retries,
    describe_error,
    is_transient_http,
)
from pipeline.osm.features import SOLAR_RULES, OsmFeature, relation_feature, way_feature

log = logging.getLogger(__name__)

Format = Literal["json", "xml"]


def build_query(
    bbox: tuple[float, float, float, float], *, timeout_s: float = 180, fmt: Format = "json"
) -> str:
    """Overpass QL for solar ways and relations in ``bbox``.

    Args:
        bbox: ``(minlon, minlat, maxlon, maxlat)`` in EPSG:4326.
        timeout_s: Server-side ``[timeout:]``, seconds.
        fmt: ``json`` or ``xml`` output.

    Returns:
        The query text (deterministic: the cache key is its SHA-256).
    """
    minlon, minlat, maxlon, maxlat = bbox
    box = f"({minlat:.7f},{minlon:.7f},{maxlat:.7f},{maxlon:.7f})"
    lines = [f"[out:{fmt}][timeout:{int(timeout_s)}];", "("]
    for key, value, sub_key, sub_value in SOLAR_RULES:
        for element in ("way", "relation"):
            lines.append(f'  {element}["{key}"="{value}"]["{sub_key}"="{sub_value}"]{box};')
    lines += [");", "out geom;"]
    return "\n".join(lines) + "\n"


def query_key(query: str) -> str:
    """SHA-256 hex digest of the query text: the cache key."""
    return hashlib.sha256(query.encode()).hexdigest()


@dataclass(frozen=True)
class OverpassClient:
    """A POSTing Overpass client with retries and a disk cache.

    Attributes:
        url: Interpreter endpoint, e.g. ``https://overpass-api.de/api/interpreter``.
        timeout_s: Read timeout of one request (the connect timeout is at most 30 s).
        retries: Extra attempts after a retryable failure.
        backoff_s: First delay; doubled each retry (a longer ``Retry-After`` wins).
        max_backoff_s: Cap on any delay.
        cache_dir: Folder of cached responses, or ``None`` for no cache.
        sleep: Injected for tests that count delays; ``time.sleep`` by default.
    """

    url: str
    timeout_s: float = 180.0
    retries: int = 5
    backoff_s: float = 2.0
    max_backoff_s: float = 120.0
    cache_dir: Path | None = None
    sleep: Callable[[float], None] = time.sleep

    def cache_path(self, query: str, fmt: Format) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{query_key(query)}.{fmt}"

    def fetch(self, query: str, fmt: Format) -> tuple[list[OsmFeature], bool]:
        """Run ``query`` (or read its cached response) and parse it.

        Returns:
            ``(features, from_cache)``.

        Raises:
            FetchError: the endpoint failed on every attempt.
            LabelsError: the response is not valid Overpass JSON/XML.
        """
        cached = self.cache_path(query, fmt)
        if cached is not None and cached.is_file():
            log.info("Overpass response from cache %s", cached)
            return parse_response(cached.read_text(), fmt, where=str(cached)), True
        text = self._post(query)
        features = parse_response(text, fmt, where=self.url)
        if cached is not None:
            write_text(cached, text)
        return features, False

    @property
    def policy(self) -> RetryPolicy:
        """The shared retry policy with this client's retries and delays."""
        return RetryPolicy(self.retries, self.backoff_s, self.max_backoff_s)

    def _post(self, query: str) -> str:
        attempts = 0

        def attempt() -> str:
            nonlocal attempts
            attempts += 1
            return self._post_once(query)

        try:
            return call_with_retries(
                attempt,
                self.policy,
                what=f"Overpass query to {self.url}",
                retryable=_retryable,
                sleep=self.sleep,
            )
        except (requests.RequestException, OverpassBusyError) as err:
            raise FetchError(
                f"Overpass endpoint {self.url} failed {attempts} time(s); last error: "
                f"{describe_error(err)}. Check the network and labels.overpass_url, raise "
                "labels.retries or labels.timeout_s, or use a local extract (labels.source: file)."
            ) from err

    def _post_once(self, query: str) -> str:
        """One POST: the response text, or an error saying whether to try again.

        Raises:
            OverpassBusyError: a 200 whose remark reports a server-side timeout or out-of-memory.
            requests.HTTPError: a retryable status (429, 5xx); its response holds ``Retry-After``.
            requests.RequestException: a timeout or a dropped connection.
            FetchError: any other status (not retryable).
        """
        resp = requests.post(
            self.url, data={"data": query}, timeout=(min(30.0, self.timeout_s), self.timeout_s)
        )
        if resp.status_code == 200:
            remark = _runtime_error(resp.text)
            if remark is None:
                return resp.text
            raise OverpassBusyError(f"server-side error: {remark}")
        if resp.status_code in RETRY_STATUS:
            raise requests.HTTPError(f"HTTP {resp.status_code}", response=resp)
        raise FetchError(
            f"Overpass endpoint {self.url} answered HTTP {resp.status_code} "
            f"({resp.text[:200]!r}); the query is not retryable. Check "
            "labels.overpass_url and the AOI."
        )


class OverpassBusyError(Exception):
    """Overpass answered 200 but reports a server-side timeout or out-of-memory: retry later."""


def _retryable(err: BaseException) -> bool:
    return isinstance(err, OverpassBusyError) or is_transient_http(err)


def _runtime_error(text: str) -> str | None:
    """Overpass reports server-side timeouts/out-of-memory as a 200 with a remark."""
    head = text[:2000] + text[-2000:]
    for marker in ('"remark"', "<remark>"):
        if marker in head:
            start = head.find(marker)
            snippet = head[start : start + 300]
            if "runtime error" in snippet or "Query timed out" in snippet:
                return snippet
    return None


def parse_response(text: str, fmt: Format, *, where: str = "response") -> list[OsmFeature]:
    """Parse an Overpass ``out geom`` response into solar features.

    Raises:
        LabelsError: the text is not a well-formed response of that format.
    """
    return parse_json(text, where) if fmt == "json" else parse_xml(text, where)


def _malformed(where: str, fmt: str, detail: str) -> LabelsError:
    return LabelsError(
        f"the Overpass {fmt} response from {where} is malformed ({detail}). The server may "
        "have returned an error page; retry later or check labels.overpass_url (a cached "
        "response is never malformed: only parseable responses are cached)."
    )


def _coords_json(geometry: Any) -> list[tuple[float, float]] | None:
    if not isinstance(geometry, list) or not geometry:
        return None
    out = []
    for point in geometry:
        if not isinstance(point, dict) or "lat" not in point or "lon" not in point:
            return None
        out.append((float(point["lon"]), float(point["lat"])))
    return out


def parse_json(text: str, where: str = "response") -> list[OsmFeature]:
    """Parse ``[out:json]`` with ``out geom`` (ways carry ``geometry``, relations ``members``)."""
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as err:
        raise _malformed(where, "JSON", str(err)) from err
    if not isinstance(payload, dict) or not isinstance(payload.get("elements"), list):
        raise _malformed(where, "JSON", "no 'elements' list")
    features = []
    for el in payload["elements"]:
        try:
            kind, osm_id, tags = el["type"], int(el["id"]), dict(el.get("tags", {}))
        except (KeyError, TypeError, ValueError) as err:
            raise _malformed(where, "JSON", f"element without type/id: {el!r:.80}") from err
        if kind == "way":
            coords = _coords_json(el.get("geometry"))
            if coords is None:
                features.append(OsmFeature("way", osm_id, tags, None, "way without geometry"))
                continue
            nodes = el.get("nodes")
            closed = (nodes[0] == nodes[-1]) if nodes else coords[0] == coords[-1]
            features.append(way_feature(osm_id, tags, coords, closed))
        elif kind == "relation":
            members = [
                (m.get("role", ""), _coords_json(m.get("geometry")))
                for m in el.get("members", [])
                if m.get("type") == "way"
            ]
            features.append(relation_feature(osm_id, tags, members))
    return features


def _coords_xml(parent: ET.Element) -> list[tuple[float, float]] | None:
    out = []
    for nd in parent.findall("nd"):
        lat, lon = nd.get("lat"), nd.get("lon")
        if lat is None or lon is None:
            return None
        out.append((float(lon), float(lat)))
    return out or None


def parse_xml(text: str, where: str = "response") -> list[OsmFeature]:
    """Parse ``[out:xml]`` with ``out geom`` (``<nd lat lon>`` in ways and way members)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise _malformed(where, "XML", str(err)) from err
    if root.tag != "osm":
        raise _malformed(where, "XML", f"root element <{root.tag}> instead of <osm>")
    features = []
    for el in root:
        if el.tag not in ("way", "relation"):
            continue
        try:
            osm_id = int(el.get("id", ""))
        except ValueError as err:
            raise _malformed(where, "XML", f"<{el.tag}> without a numeric id") from err
        tags = {t.get("k", ""): t.get("v", "") for t in el.findall("tag")}
        if el.tag == "way":
            coords = _coords_xml(el)
            if coords is None:
                features.append(OsmFeature("way", osm_id, tags, None, "way without geometry"))
                continue
            refs = [nd.get("ref") for nd in el.findall("nd")]
            closed = refs[0] == refs[-1] if refs[0] is not None else coords[0] == coords[-1]
            features.append(way_feature(osm_id, tags, coords, closed))
        else:
            members = [
                (m.get("role", ""), _coords_xml(m))
                for m in el.findall("member")
                if m.get("type") == "way"
            ]
            features.append(relation_feature(osm_id, tags, members))
    return features
