"""The shared retry policy (:mod:`pipeline.net`) applied to STAC: API sessions and COG reads.

Besides the transient HTTP failures of :func:`pipeline.net.is_transient_http`, a STAC read
retries GDAL read errors (how a truncated or broken COG response surfaces) and pystac-client
``APIError`` s without a status or with a status in :data:`pipeline.net.RETRY_STATUS`.
"""

from __future__ import annotations

from rasterio.errors import RasterioIOError
from urllib3.util.retry import Retry

from pipeline.net import RETRY_STATUS, RetryPolicy, is_transient_http, status_of


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
        backoff_max=policy.max_backoff_s,
        status_forcelist=sorted(RETRY_STATUS),
        allowed_methods=None,
        respect_retry_after_header=True,
        raise_on_status=False,
    )


def is_transient(err: BaseException) -> bool:
    """True for errors that a later STAC request or COG read may not meet."""
    from pystac_client.exceptions import APIError

    if isinstance(err, RasterioIOError):
        return True
    if isinstance(err, APIError):
        status = status_of(err)
        return status is None or status in RETRY_STATUS
    return is_transient_http(err)
