"""Retry with backoff for the STAC API (urllib3 ``Retry``) and for COG reads (a call wrapper).

Transient means: HTTP 429 and 5xx, timeouts, refused or dropped connections, and GDAL read
errors (which is how a truncated or broken COG response surfaces). Delays double from
``backoff_s`` up to :data:`MAX_BACKOFF_S`; a server's ``Retry-After`` wins when it is longer.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypeVar

import requests
from rasterio.errors import RasterioIOError
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

T = TypeVar("T")

#: HTTP statuses worth retrying.
RETRY_STATUS: Final[frozenset[int]] = frozenset({429, 500, 502, 503, 504})
#: Longest single backoff delay, seconds.
MAX_BACKOFF_S: Final[float] = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    Attributes:
        retries: Retries after the first attempt (0 = try once).
        backoff_s: First delay in seconds; doubles per retry up to :data:`MAX_BACKOFF_S`.
    """

    retries: int = 5
    backoff_s: float = 0.5

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        return float(min(MAX_BACKOFF_S, self.backoff_s * (2**attempt)))


def api_retry(policy: RetryPolicy) -> Retry:
    """A urllib3 ``Retry`` for pystac-client's ``StacApiIO``: statuses, connects and reads.

    ``allowed_methods=None`` retries POST too: a STAC search is a read, safe to repeat.
    """
    return Retry(
        total=policy.retries,
        connect=policy.retries,
        read=policy.retries,
        status=policy.retries,
        other=policy.retries,
        backoff_factor=policy.backoff_s,
        backoff_max=MAX_BACKOFF_S,
        status_forcelist=sorted(RETRY_STATUS),
        allowed_methods=None,
        respect_retry_after_header=True,
        raise_on_status=False,
    )


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Parse a ``Retry-After`` header (delta seconds or an HTTP date) into seconds >= 0."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def status_of(err: BaseException) -> int | None:
    """The HTTP status an exception carries, if any (pystac-client ``APIError``, requests)."""
    status = getattr(err, "status_code", None)
    if isinstance(status, int):
        return status
    response = getattr(err, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def is_transient(err: BaseException) -> bool:
    """True for errors that a later attempt may not meet (see the module docstring)."""
    from pystac_client.exceptions import APIError

    if isinstance(err, RasterioIOError):
        return True
    if isinstance(err, requests.exceptions.RequestException | ConnectionError | TimeoutError):
        return True
    if isinstance(err, APIError):
        status = status_of(err)
        return status is None or status in RETRY_STATUS
    return False


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str,
    retryable: Callable[[BaseException], bool] = is_transient,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn()``; on a retryable error wait and call again, at most ``policy.retries`` times.

    Args:
        fn: The work; called afresh each attempt (it must reopen what it reads).
        policy: Retry count and backoff.
        what: Named in log lines, e.g. ``"read B04 of S2A_..."``.
        retryable: Which exceptions are worth another attempt.
        sleep: Injected for tests of the delay schedule.

    Returns:
        What ``fn`` returns.

    Raises:
        Exception: the last error, when it is not retryable or retries are spent.
    """
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as err:
            if attempt >= policy.retries or not retryable(err):
                raise
            headers = getattr(getattr(err, "response", None), "headers", None) or {}
            delay = max(policy.delay(attempt), retry_after_seconds(headers.get("Retry-After")) or 0)
            log.info(
                "%s failed (%s); retry %d/%d in %.2f s",
                what,
                str(err).splitlines()[0][:200] if str(err) else type(err).__name__,
                attempt + 1,
                policy.retries,
                delay,
            )
            sleep(delay)
            attempt += 1
