"""When a request may be sent again (balancer.proxy.exchange), as tables: to another backend
after a failure (`retryable`), and once more on a fresh connection after the stale keep-alive
race (`replays_stale`)."""

import pytest
from multidict import CIMultiDict

from balancer.http.errors import (
    BackendClosed,
    BadResponse,
    ConnectFailed,
    ConnectTimeout,
    PoolExhausted,
    ProxyError,
    ResponseTimeout,
)
from balancer.proxy.exchange import IDEMPOTENT, REPLAY_LIMIT, replayable, replays_stale, retryable

NONE: CIMultiDict[str] = CIMultiDict()
KEYED = CIMultiDict({"idempotency-key": "k1"})  # any spelling of the header name


def closed(before_response: bool) -> BackendClosed:
    return BackendClosed("reset", before_response=before_response)


RETRYABLE = [
    # (error, method, headers, streamed) -> sent to another backend?
    (ConnectFailed("refused"), "POST", NONE, True, True),     # nothing was sent
    (ConnectTimeout("slow"), "POST", NONE, True, True),
    (closed(True), "GET", NONE, False, True),                 # idempotent, no response byte
    (closed(True), "DELETE", NONE, False, True),
    (closed(True), "POST", NONE, False, False),               # may have been executed
    (closed(True), "PATCH", NONE, False, False),
    (closed(True), "POST", KEYED, False, True),               # the client made it replayable
    (closed(True), "GET", NONE, True, False),                 # the streamed body is gone
    (closed(False), "GET", NONE, False, False),               # a response had started
    (ResponseTimeout("slow"), "GET", NONE, False, False),     # it may still be working on it
    (BadResponse("garbage"), "GET", NONE, False, False),
    (PoolExhausted("full"), "GET", NONE, False, False),
]


@pytest.mark.parametrize(("error", "method", "headers", "streamed", "expected"), RETRYABLE)
def test_a_failed_request_goes_to_another_backend_only_when_that_is_safe(
    error: ProxyError, method: str, headers: CIMultiDict[str], streamed: bool, expected: bool,
) -> None:
    assert retryable(error, method, headers, streamed) is expected


STALE = [
    # (before_response, reused, streamed, method, headers) -> sent again on a fresh connection?
    (True, True, False, "GET", NONE, True),
    (True, True, False, "PUT", NONE, True),
    (True, True, False, "POST", KEYED, True),
    (True, True, False, "POST", NONE, False),
    (True, False, False, "GET", NONE, False),   # a fresh connection failing is no stale race
    (False, True, False, "GET", NONE, False),   # a response had started
    (True, True, True, "GET", NONE, False),     # a streamed body cannot be sent twice
]


@pytest.mark.parametrize(("before", "reused", "streamed", "method", "headers", "expected"),
                         STALE)
def test_the_stale_keep_alive_race_is_replayed_only_for_a_held_replayable_request(
    before: bool, reused: bool, streamed: bool, method: str, headers: CIMultiDict[str],
    expected: bool,
) -> None:
    assert replays_stale(closed(before), reused, streamed, method, headers) is expected


def test_idempotent_methods_and_the_replay_limit() -> None:
    assert frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}) == IDEMPOTENT
    assert not replayable("POST", NONE) and replayable("POST", KEYED)
    assert REPLAY_LIMIT == 64 * 1024
