"""The two-sided invariant: send generated requests (pipelined on one connection) through the
balancer to the recording backend, then compare what the client got with what the backend got.

For every client request, either
- the client got the backend's answer to exactly that request (200, echoing its target), and
  the backend saw exactly one request with that method, target, Host and body, framed so that
  h11 accepts it; or
- the client got a 4xx (501 for an unknown transfer coding) and the backend saw nothing of it;
- or, pipelined after a response that ended the connection, no answer and nothing seen.
Nothing else reaches the backend (no smuggled request), and nothing else reaches the client.
"""

import contextlib
import socket
import time
from collections import defaultdict
from collections.abc import Callable

from hypothesis import note

from tests.differential.harness import Harness, Parsed, ResponseReader, new_tag
from tests.differential.requests import Rendered, RequestSpec
from tests.recording import Recorded, RecordingBackend, echo_body

BALANCER_SETS = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id",
                 b"via")

ANSWER_WITHIN = 5.0  # a generous bound for an answer from a backend that answers at once
ExtraCheck = Callable[[Rendered, Recorded], None]


def _expected_host(harness: Harness, spec: RequestSpec) -> set[bytes]:
    if spec.host is not None:
        return {spec.host}
    # HTTP/1.0 without Host: an empty Host (RFC 9112 section 3.2) or the backend's own
    # authority (as nginx sends), never a name the client did not give
    return {b"", b"127.0.0.1:%d" % harness.backend.port}


def exchange(harness: Harness, specs: list[RequestSpec], extra: ExtraCheck | None = None,
             *, half_close: bool = False) -> None:
    """Send `specs` pipelined on one connection (then shut down the sending side at once if
    `half_close`), read the answers, and check the invariant on both sides."""
    backend = harness.backend
    assert isinstance(backend, RecordingBackend)
    seen_from, violations_from = len(backend.requests), len(backend.violations)
    sent = [spec.render(new_tag()) for spec in specs]
    data = b"".join(r.raw for r in sent)
    note(f"sent: {data!r}")
    responses: list[Parsed] = []
    trailing = b""
    with socket.create_connection(harness.address, timeout=10) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        reader = ResponseReader(sock, 0.0)
        for rendered in sent:
            reader.deadline = time.monotonic() + ANSWER_WITHIN
            try:
                response = reader.read_response(rendered.spec.method.encode())
            except TimeoutError:
                response = Parsed(error=f"no answer within {ANSWER_WITHIN}s", raw=reader.buffer)
            responses.append(response)
            if response.error or not _continues(rendered.spec, response):
                break
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)  # nothing more to send: the balancer may close now
        reader.deadline = time.monotonic() + ANSWER_WITHIN
        try:
            trailing = reader.rest()
        except TimeoutError:
            trailing = b"<the balancer kept the connection open>"
    harness.barrier()
    seen = backend.requests[seen_from:]
    violations = backend.violations[violations_from:]
    note(f"responses: {[str(r) for r in responses]}")
    note(f"backend saw: {seen}")

    assert not violations, (
        "the backend's strict parser refused what the balancer sent: "
        + "; ".join(f"{v.error} in {v.raw[-600:]!r}" for v in violations))
    by_target: dict[bytes, list[Recorded]] = defaultdict(list)
    for request in seen:
        if not request.target.startswith(b"/barrier/"):
            by_target[request.target].append(request)
    ours = {r.target for r in sent}
    smuggled = [s for t, group in by_target.items() if t not in ours for s in group]
    assert not smuggled, f"the backend saw requests no client sent: {smuggled}"

    for i, rendered in enumerate(sent):
        spec = rendered.spec
        got = by_target.get(rendered.target, [])
        answer = responses[i] if i < len(responses) else None
        where = f"request {i} ({spec.why or 'plain'}) {rendered.raw!r}"
        if answer is None or answer.error == "closed":
            assert not got, f"{where}: the backend got it but the client got no answer: {got}"
            previous = responses[i - 1] if 0 < i <= len(responses) else None
            assert i > len(responses) or (
                previous is not None and not _continues(sent[i - 1].spec, previous)), (
                f"{where}: never answered, although the connection stayed open for it")
            continue
        response = answer
        assert not response.error, f"{where}: {response.error}: {response}"
        if spec.version == "1.0" or not spec.expect_continue:
            assert not response.interim, f"{where}: unexpected interim responses {response}"
        if response.status == 200:
            assert spec.kind != "reject", f"{where}: ambiguous request forwarded: {got}"
            assert response.header(b"x-echo-target") == [rendered.target], (
                f"{where}: got the answer to another request: {response}")
            if spec.method != "HEAD":
                assert response.body == echo_body(spec.method.encode(), rendered.target,
                                                  spec.body), f"{where}: {response}"
            assert len(got) == 1, f"{where}: the backend saw it {len(got)} times: {got}"
            request = got[0]
            assert request.method == spec.method.encode(), f"{where}: {request}"
            assert request.body == spec.body, f"{where}: body changed: {request}"
            hosts = request.header(b"host")
            assert len(hosts) == 1 and hosts[0] in _expected_host(harness, spec), (
                f"{where}: the backend saw Host {hosts}")
            if extra is not None:
                extra(rendered, request)
        elif 400 <= response.status < 500 or (response.status == 501 and "coding" in spec.why):
            assert spec.kind != "plain", f"{where}: a plain request was refused: {response}"
            assert not got, f"{where}: refused with {response.status} but forwarded: {got}"
        else:
            raise AssertionError(f"{where}: unexpected answer {response}")
    assert trailing == b"", f"bytes after the last response: {trailing[:300]!r}"


def _continues(spec: RequestSpec, response: Parsed) -> bool:
    """The connection must stay open for the next pipelined request."""
    return spec.persistent and not response.closes and response.status < 400


def no_underscore_twins(rendered: Rendered, request: Recorded) -> None:
    """The backend sees no header whose name, `_` read as `-`, is one the balancer sets."""
    twins = [name for name, _ in request.headers
             if b"_" in name and name.replace(b"_", b"-") in BALANCER_SETS]
    assert not twins, f"{rendered.raw!r}: the backend got {twins} next to the balancer's own"
