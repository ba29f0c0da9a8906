"""Property test (hypothesis) for the request head the balancer builds: whatever headers a
client sends (Connection naming anything, underscore spellings, framing headers), the head
is refused (ValueError) or h11, an independent parser, reads exactly one request from it and
its body, framed as the balancer read it, with one Host and the balancer's own headers."""

import os

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balancer.http.headers import SET_BY_BALANCER, forward_request

EXAMPLES = 20_000 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 300
NAMES = [b"Content-Length", b"content_length", b"Transfer-Encoding", b"Transfer_Encoding",
         b"Host", b"Connection", b"Upgrade", b"X-Forwarded-For", b"X_Forwarded_For",
         b"x_forwarded_proto", b"X-Request-Id", b"X_Request_Id", b"Via", b"Keep-Alive", b"TE",
         b"X-Balancer-Token", b"x_balancer_token", b"Expect", b"X-Custom", b"X_Custom"]
LOWER = sorted({name.lower() for name in NAMES} | {b"x-forwarded-host", b"close"})
VALUES = st.sampled_from([b"3", b"0", b"chunked", b"gzip, chunked", b"a", b"websocket",
                          b"upgrade", b"100-continue", b"1.1.1.1", b"h2c", b"", b"id-1"])
CONNECTION = st.lists(st.sampled_from(LOWER), max_size=5).map(b", ".join)
HEADER = st.one_of(
    st.tuples(st.sampled_from(NAMES), VALUES),
    st.tuples(st.just(b"Connection"), CONNECTION),
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=st.lists(HEADER, max_size=8), http10=st.booleans(), trusted=st.booleans())
def test_the_forwarded_head_is_one_unambiguous_request(
    headers: list[tuple[bytes, bytes]], http10: bool, trusted: bool,
) -> None:
    try:
        out = forward_request("POST", b"/p", headers, client_ip="10.0.0.1",
                              trusted_client=trusted, new_request_id="rid", http10=http10)
    except ValueError:
        return
    body = b"x" * (out.content_length or 0)
    sent = out.head + (b"3\r\nabc\r\n0\r\n\r\n" if out.chunked else body)
    parser = h11.Connection(h11.SERVER)
    parser.receive_data(sent)
    request = parser.next_event()
    assert isinstance(request, h11.Request), sent
    received = b""
    while True:
        event = parser.next_event()
        if isinstance(event, h11.Data):
            received += bytes(event.data)
        else:
            assert isinstance(event, h11.EndOfMessage), (event, sent)
            break
    assert received == (b"abc" if out.chunked else body)
    assert parser.trailing_data == (b"", False)  # nothing left over: no second request
    names = [name for name, _ in request.headers]
    assert names.count(b"host") == 1
    assert names.count(b"x-forwarded-for") == 1
    assert names.count(b"x-request-id") == 1
    assert names.count(b"via") == 1
    assert b"x-balancer-token" not in names
    assert not any(b"_" in name and name.replace(b"_", b"-") in SET_BY_BALANCER
                   for name in names)
    assert (b"content-length" in names) + (b"transfer-encoding" in names) <= 1
