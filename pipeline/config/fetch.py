"""``fetch:`` section: which STAC catalog serves Sentinel-2 L2A and how patches are screened."""

from __future__ import annotations

from datetime import date, datetime
from typing import Final, Literal

from pydantic import Field, field_validator

from pipeline.config.base import Section

#: Fields that change how fast or how stubbornly the stage works, never what it writes; a
#: patch whose other fields (and plan row) are unchanged is reused on a re-run.
RUNTIME_FIELDS: Final[frozenset[str]] = frozenset(
    {
        "workers",
        "read_threads",
        "retries",
        "backoff_s",
        "timeout_s",
        "gdal_retry_delay_s",
        "page_size",
        "progress",
    }
)


class FetchConfig(Section):
    """STAC source and scene selection.

    Attributes:
        catalog: A STAC API root URL (Earth Search, Planetary Computer) or the path/URL of a
            static ``catalog.json``; with a ``world:`` section it defaults to that demo world's
            catalog (``WorldPaths.catalog``).
        provider: How asset hrefs are signed (only ``planetary-computer`` signs); ``auto``
            infers it from ``catalog`` (``planetarycomputer`` in the URL, a ``.json`` catalog
            is ``static``, any other URL ``earth-search``). Radiometry follows each item's own
            collection and properties, never the provider.
        collection: Collection id (``sentinel-2-l2a``, ``sentinel-2-c1-l2a``).
        datetime: RFC 3339 interval searched, e.g. ``2023-06-01/2023-09-30`` (``..`` open end).
        target_date: Ties in clear fraction go to the scene nearest this date (most recent
            first when unset).
        max_cloud_cover: Scene-level ``eo:cloud_cover`` pre-filter, percent.
        min_clear_fraction: A patch needs at least this clear share of its SCL window (snow
            counts as clear; it is reported separately).
        clear_tie: Clear fractions within the same ``clear_tie`` bucket count as a tie.
        max_items: Most candidate items of one patch (the one search of all patches asks for
            up to this many per patch).
        page_size: Items per STAC API page (``limit``).
        workers: Patches fetched at once on a local Dask cluster (``compute:``), as threads
            spread over its worker processes (fetching is I/O bound; GDAL releases the GIL). On
            an existing cluster (``compute.scheduler``) as many run as it has threads.
        read_threads: Band reads in flight at once across the patches of one process (one
            pool per process, shared by the patch tasks of its Dask workers).
        retries: Retries after a failed request (STAC API and COG reads), with backoff.
        backoff_s: First backoff delay; it doubles per retry (capped at 30 s); a server's
            ``Retry-After`` is honoured when longer.
        timeout_s: Per-request timeout (STAC API and GDAL HTTP).
        gdal_retry_delay_s: GDAL's own first HTTP retry delay (``GDAL_HTTP_RETRY_DELAY``).
        double_correction_warn: Warn when more than this share of vegetation pixels would be
            at or below zero reflectance in B02/B03/B04 after the offset (an offset applied to
            already corrected data).
        alternates: Also keep this many of the patch's other acquisitions in the window
            (clearest first, each with its SCL, under ``fetch/alternates/``): the audit's
            real-background counterfactual and the ``temporal`` attribution baseline take the
            same ground on another date from them. 0 keeps none. Patch files are unchanged.
        progress: Show a progress bar (rate and ETA) on a terminal (log lines with counts and
            ETA are written either way when stderr is not a terminal).
    """

    catalog: str
    provider: Literal["auto", "earth-search", "planetary-computer", "static"] = "auto"
    collection: str = "sentinel-2-l2a"
    datetime: str | None = None
    target_date: date | None = None
    max_cloud_cover: float = Field(default=60.0, ge=0, le=100)
    min_clear_fraction: float = Field(default=0.8, ge=0, le=1)
    clear_tie: float = Field(default=0.01, gt=0, le=1)
    max_items: int = Field(default=200, ge=1)
    page_size: int = Field(default=100, ge=1, le=10_000)
    workers: int = Field(default=8, ge=1, le=64)
    read_threads: int = Field(default=16, ge=1, le=256)
    retries: int = Field(default=5, ge=0)
    backoff_s: float = Field(default=0.5, ge=0)
    timeout_s: float = Field(default=30.0, gt=0)
    gdal_retry_delay_s: float = Field(default=0.5, ge=0)
    double_correction_warn: float = Field(default=0.05, ge=0, le=1)
    alternates: int = Field(default=0, ge=0, le=8)
    progress: bool = True

    @field_validator("catalog")
    @classmethod
    def _catalog_given(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                "fetch.catalog is empty; set it to a STAC API URL (e.g. "
                "https://earth-search.aws.element84.com/v1) or a static catalog.json path"
            )
        return value

    @field_validator("datetime")
    @classmethod
    def _interval(cls, value: str | None) -> str | None:
        return validate_interval(value, "fetch.datetime")


def validate_interval(value: str | None, key: str) -> str | None:
    """``value`` when it is an RFC 3339 date or interval (``a/b``, ``..`` open), else an error
    naming ``key``."""
    if value is None:
        return None
    parts = value.split("/")
    if len(parts) > 2 or not all(parts):
        raise ValueError(
            f"{key} = {value!r} is not an RFC 3339 date or interval; write e.g. "
            "2023-06-01/2023-09-30 or 2023-06-01/.."
        )
    for part in parts:
        if part == "..":
            continue
        try:
            datetime.fromisoformat(part.replace("Z", "+00:00"))
        except ValueError as err:
            raise ValueError(
                f"{key} = {value!r}: {part!r} is not an ISO date/time; write "
                "e.g. 2023-06-01/2023-09-30"
            ) from err
    return value
