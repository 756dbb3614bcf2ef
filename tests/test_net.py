"""The one HTTP retry policy (pipeline.net) and the clients that share it."""

from __future__ import annotations

import requests

from pipeline.net import MAX_BACKOFF_S, RetryPolicy, call_with_retries, is_transient_http
from pipeline.osm.overpass import OverpassClient
from pipeline.stac.http import api_retry, is_transient


def _http_error(status: int, retry_after: str | None = None) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return requests.HTTPError(f"HTTP {status}", response=response)


def test_delay_doubles_and_a_longer_retry_after_wins_up_to_the_cap() -> None:
    policy = RetryPolicy(retries=5, backoff_s=1.0, max_backoff_s=10.0)
    assert [policy.delay(a) for a in range(5)] == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert policy.delay(0, retry_after=3.0) == 3.0  # the server asks for longer
    assert policy.delay(2, retry_after=0.5) == 4.0  # never sooner than the backoff
    assert policy.delay(0, retry_after=600.0) == 10.0  # never longer than the cap
    assert RetryPolicy().max_backoff_s == MAX_BACKOFF_S


def test_retry_after_header_sets_the_wait() -> None:
    errors = [_http_error(429, "2"), _http_error(503)]
    delays: list[float] = []

    def flaky() -> str:
        if errors:
            raise errors.pop(0)
        return "ok"

    assert call_with_retries(flaky, RetryPolicy(3, 0.1), what="t", sleep=delays.append) == "ok"
    assert delays == [2.0, 0.2]


def test_transient_means_transport_failures_and_retry_statuses() -> None:
    assert is_transient_http(_http_error(503)) and is_transient_http(_http_error(429))
    assert not is_transient_http(_http_error(404))
    assert is_transient_http(requests.ConnectionError("refused"))
    assert is_transient_http(requests.exceptions.ChunkedEncodingError("cut mid-body"))
    assert is_transient_http(TimeoutError()) and is_transient_http(ConnectionResetError())
    assert not is_transient_http(requests.exceptions.MissingSchema("no scheme"))
    assert not is_transient_http(ValueError("bad value"))
    assert is_transient(_http_error(502)) and not is_transient(_http_error(400))


def test_stac_and_overpass_clients_share_the_policy() -> None:
    client = OverpassClient("http://127.0.0.1:9/x", retries=2, backoff_s=0.5, max_backoff_s=60)
    assert client.policy == RetryPolicy(2, 0.5, 60)
    retry = api_retry(RetryPolicy(3, 0.25, 20))
    assert retry.total == 3 and retry.backoff_factor == 0.25 and retry.backoff_max == 20
    assert set(retry.status_forcelist or ()) == {429, 500, 502, 503, 504}
