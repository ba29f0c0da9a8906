"""Hostile backends behind a real balancer, many concurrent clients: no client ever receives a
byte meant for another request, whatever the backend does, and a connection on which the
backend misbehaved is never used again.

Each client request carries a unique tag (X-Test-Id); the backend's answer, good or bad,
carries the tag of the request it was given, so a tag in the wrong client's bytes is a
response delivered to the wrong client.
"""

import asyncio
import contextlib
import re
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.differential.harness import Harness, new_tag, parse_responses, wait_until
from tests.differential.hostile import Behaviour, HostileBackend, evil, good_response
from tests.differential.profiles import profile

TAG = re.compile(rb"tag[0-9a-f]{6}x[0-9]{7}")
GOOD_LENGTH = len(good_response(new_tag().encode()))
MUST_SUCCEED = frozenset({"ok", "interim", "close_after"})

BEHAVIOURS = st.one_of(
    st.just(Behaviour()),
    st.builds(Behaviour, st.just("interim"), st.integers(1, 3)),
    st.just(Behaviour("cl_te")),
    st.just(Behaviour("double_cl")),
    st.builds(Behaviour, st.just("short"), st.integers(1, 100)),
    st.builds(Behaviour, st.just("reset"), st.integers(0, GOOD_LENGTH)),
    st.just(Behaviour("close_after")),
)
EXTRA_PAYLOADS = st.sampled_from(["full", "partial", "OK", "garbage"])


def extra_payload(kind: str, tag: bytes) -> bytes:
    return {"full": evil(tag), "partial": evil(tag)[:20], "OK": b"OK",
            "garbage": b"\x00\xffEVIL " + tag}[kind]


@pytest.fixture
def hostile() -> Iterator[Harness]:
    """A balancer in front of a hostile backend, for all the examples of one test (a
    connection left poisoned by a known defect must not spill into another test)."""
    running = Harness(HostileBackend())
    yield running
    running.close()


async def _one_request(address: tuple[str, int], tag: bytes, method: bytes) -> bytes:
    """One request on its own connection (Connection: close); everything that comes back."""
    reader, writer = await asyncio.open_connection(*address)
    body = b"post body " + tag if method == b"POST" else b""
    writer.write(b"%s /h/%s HTTP/1.1\r\nHost: h\r\nX-Test-Id: %s\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (method, tag, tag, len(body), body))
    received = b""
    try:
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionResetError:
        pass
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return received


def run_clients(harness: Harness, plans: list[Behaviour], method: bytes = b"GET"
                ) -> dict[bytes, bytes]:
    """All requests at once, each from its own client; what each client received."""
    backend = harness.backend
    assert isinstance(backend, HostileBackend)
    tags = [new_tag().encode() for _ in plans]
    for tag, behaviour in zip(tags, plans, strict=True):
        backend.plan[tag] = behaviour

    async def everyone() -> list[bytes]:
        return await asyncio.gather(*(_one_request(harness.address, tag, method)
                                      for tag in tags))

    return dict(zip(tags, asyncio.run(everyone()), strict=True))


def check_own_bytes_only(harness: Harness, received: dict[bytes, bytes]) -> None:
    """No client got a byte of another request's answer; answers to requests the backend
    answered well arrived whole; no connection was used after the backend misbehaved."""
    backend = harness.backend
    assert isinstance(backend, HostileBackend)
    for tag, data in received.items():
        behaviour = backend.plan[tag]
        foreign = set(TAG.findall(data)) - {tag}
        assert not foreign, (f"{tag!r} ({behaviour}) received bytes of {foreign}: {data!r}")
        responses = parse_responses(data)
        if behaviour.act in MUST_SUCCEED:
            assert len(responses) == 1 and responses[0].status == 200, (
                f"{tag!r} ({behaviour}): {data!r}")
            assert responses[0].body == b"answer for " + tag + b"\n", data
        elif responses and not responses[0].error:
            assert responses[0].status in (200, 502, 503, 504), f"{tag!r} ({behaviour}): {data!r}"
            if responses[0].status == 200:
                assert responses[0].body == b"answer for " + tag + b"\n", data
    reused = [read for read in backend.reused_after_taint() if read.tag in received]
    assert not reused, f"connections reused after the backend misbehaved on them: {reused}"


@profile()
@given(st.lists(BEHAVIOURS, min_size=1, max_size=16))
def test_a_misbehaving_backend_never_sends_a_client_another_requests_bytes(
        hostile: Harness, plans: list[Behaviour]) -> None:
    check_own_bytes_only(hostile, run_clients(hostile, plans))


@profile()
@given(st.lists(st.one_of(BEHAVIOURS, st.builds(Behaviour, st.just("extra"), st.just(0),
                                                 st.just(b"P"))),
                min_size=1, max_size=16), EXTRA_PAYLOADS)
@example([Behaviour("extra", 0, b"P"), Behaviour(), Behaviour(), Behaviour()], "full")
@example([Behaviour("extra", 0, b"P"), Behaviour(), Behaviour(), Behaviour()], "OK")
def test_bytes_after_a_complete_response_retire_the_connection(
        hostile: Harness, plans: list[Behaviour], kind: str) -> None:
    """Issue 11 item 2 (response queue poisoning)."""
    backend = hostile.backend
    assert isinstance(backend, HostileBackend)
    # the payload names the tag of its own request: fill it in per request
    real = [b if b.act != "extra" else Behaviour("extra", 0, b"") for b in plans]
    tags = [new_tag().encode() for _ in real]
    for tag, behaviour in zip(tags, real, strict=True):
        backend.plan[tag] = (behaviour if behaviour.act != "extra"
                             else Behaviour("extra", 0, extra_payload(kind, tag)))

    async def everyone() -> list[bytes]:
        # the first request alone (so that its connection is pooled), then the rest at once
        first = await _one_request(hostile.address, tags[0], b"GET")
        rest = await asyncio.gather(*(_one_request(hostile.address, tag, b"GET")
                                      for tag in tags[1:]))
        return [first, *rest]

    check_own_bytes_only(hostile, dict(zip(tags, asyncio.run(everyone()), strict=True)))


@profile(0.3)
@given(EXTRA_PAYLOADS)
@example("full")
def test_an_unsolicited_response_on_an_idle_pooled_connection_retires_it(
        hostile: Harness, kind: str) -> None:
    """Issue 11 item 2."""
    backend = hostile.backend
    assert isinstance(backend, HostileBackend)
    first, second = new_tag().encode(), new_tag().encode()
    backend.plan[first] = Behaviour("unsolicited", 0, extra_payload(kind, first))
    backend.plan[second] = Behaviour()
    received = {first: asyncio.run(_one_request(hostile.address, first, b"GET"))}
    conn = hostile.loops.run(backend.send_unsolicited(first))
    try:  # the balancer closes a pooled connection that becomes readable while idle
        wait_until(lambda: conn in backend.closed, 2.0, "the balancer to close the connection")
    finally:
        received[second] = asyncio.run(_one_request(hostile.address, second, b"GET"))
        check_own_bytes_only(hostile, received)


@profile(0.3)
@given(st.sampled_from([b"\r\n", b"Upgrade: h2c\r\nConnection: upgrade\r\n\r\n",
                        b"Upgrade: websocket\r\nConnection: upgrade\r\n\r\nTUNNEL"]))
@example(b"\r\n")
def test_a_101_to_a_request_that_asked_for_no_upgrade_is_a_502(
        hostile: Harness, payload: bytes) -> None:
    """Issue 11 item 9."""
    backend = hostile.backend
    assert isinstance(backend, HostileBackend)
    tag = new_tag().encode()
    backend.plan[tag] = Behaviour("status101", 0, payload)
    data = asyncio.run(_one_request(hostile.address, tag, b"GET"))
    responses = parse_responses(data)
    assert responses and responses[0].status == 502, data
    check_own_bytes_only(hostile, {tag: data})


@profile(0.3)
@given(st.sampled_from([b"POST", b"PATCH"]), st.integers(0, 10))
@example(b"POST", 0)
def test_a_non_idempotent_request_is_never_sent_twice(
        hostile: Harness, method: bytes, offset: int) -> None:
    """Issue 11 item 5."""
    backend = hostile.backend
    assert isinstance(backend, HostileBackend)
    warm, tag = new_tag().encode(), new_tag().encode()
    backend.plan[warm] = Behaviour()
    backend.plan[tag] = Behaviour("reset", offset)
    asyncio.run(_one_request(hostile.address, warm, b"GET"))  # leaves a pooled connection
    data = asyncio.run(_one_request(hostile.address, tag, method))
    times = [read for read in backend.reads if read.tag == tag]
    assert len(times) == 1, f"{method!r} executed {len(times)} times: {times}; client got {data!r}"
