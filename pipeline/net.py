"""One HTTP retry policy for every client: the STAC API, COG reads and the Overpass API.

Transient means: HTTP 429 and 5xx (:data:`RETRY_STATUS`), timeouts, refused or dropped
connections. A client widens that with its own ``retryable`` test (the STAC reader adds GDAL
read errors, :func:`pipeline.stac.http.is_transient`). Delays double from
:attr:`RetryPolicy.backoff_s`; a server's ``Retry-After`` wins when it is longer; no single
delay exceeds :attr:`RetryPolicy.max_backoff_s`.
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

log = logging.getLogger(__name__)

T = TypeVar("T")

#: HTTP statuses worth retrying.
RETRY_STATUS: Final[frozenset[int]] = frozenset({429, 500, 502, 503, 504})
#: Default upper bound of a single backoff delay, seconds.
MAX_BACKOFF_S: Final[float] = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    Attributes:
        retries: Retries after the first attempt (0 = try once).
        backoff_s: First delay in seconds; doubles per retry.
        max_backoff_s: Upper bound of any single delay, seconds (``Retry-After`` included).
    """

    retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = MAX_BACKOFF_S

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based).

        Args:
            attempt: How many retries came before this one.
            retry_after: The server's ``Retry-After`` in seconds, when it sent one.
        """
        backoff = self.backoff_s * (2**attempt)
        return float(min(self.max_backoff_s, max(backoff, retry_after or 0.0)))


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


def _retry_after_of(err: BaseException) -> float | None:
    headers = getattr(getattr(err, "response", None), "headers", None) or {}
    return retry_after_seconds(headers.get("Retry-After"))


def is_transient_http(err: BaseException) -> bool:
    """True for a transport failure or an HTTP status in :data:`RETRY_STATUS`.

    A ``requests`` error that is also a ``ValueError`` (a malformed URL or header) is not
    transient: another attempt cannot fix it.
    """
    if isinstance(err, requests.HTTPError):
        status = status_of(err)
        return status is None or status in RETRY_STATUS
    if isinstance(err, requests.RequestException):
        return not isinstance(err, ValueError)
    return isinstance(err, ConnectionError | TimeoutError)


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str,
    retryable: Callable[[BaseException], bool] = is_transient_http,
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
            delay = policy.delay(attempt, _retry_after_of(err))
            log.info(
                "%s failed (%s); retry %d/%d in %.2f s",
                what,
                describe_error(err),
                attempt + 1,
                policy.retries,
                delay,
            )
            sleep(delay)
            attempt += 1


def describe_error(err: BaseException) -> str:
    """A one-line account of ``err`` for logs and messages (``HTTP 503``, ``ReadTimeout: ...``)."""
    status = status_of(err)
    if status is not None:
        return f"HTTP {status}"
    text = str(err).splitlines()[0][:200] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
