"""What can go wrong with a request, and the one status each maps to.

Pure. The proxy raises these (and the client side builds them for what the HTTP parser
refuses); `balancer.proxy.replies` turns them into what the client sees: `error_text` is the
one-line plain-text body (status, reason, detail, request id), `error_response` the response
through aiohttp and `closing_reply` the raw one written before a request could be parsed.
"""


class ProxyError(Exception):
    """A request the balancer could not complete; `status` is what the client gets."""

    status = 502
    reason = "bad gateway"
    backend_fault = False  # True: counts against the backend (its error rate, ejection)

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.reason)
        self.detail = detail or self.reason


class ConnectFailed(ProxyError):
    """The backend refused or could not be reached; nothing was sent, so retrying is safe."""

    status = 502
    reason = "backend refused the connection"
    backend_fault = True


class ConnectTimeout(ProxyError):
    status = 504
    reason = "backend connect timed out"
    backend_fault = True


class BackendClosed(ProxyError):
    """The connection closed or reset before a whole response arrived."""

    status = 502
    reason = "backend closed the connection"
    backend_fault = True

    def __init__(self, detail: str = "", *, before_response: bool = False) -> None:
        super().__init__(detail)
        self.before_response = before_response


class BadResponse(ProxyError):
    status = 502
    reason = "backend sent an invalid response"
    backend_fault = True


class ResponseTimeout(ProxyError):
    status = 504
    reason = "backend response timed out"
    backend_fault = True


class NoBackend(ProxyError):
    status = 503
    reason = "no backend available"


class PoolExhausted(ProxyError):
    status = 503
    reason = "backend connection limit reached"


class BodyTooLarge(ProxyError):
    status = 413
    reason = "request body too large"


class HeadTooLarge(ProxyError):
    status = 431
    reason = "request header fields too large"


class HeadTimeout(ProxyError):
    """The request head did not arrive whole within `timeouts.client_header` (slowloris)."""

    status = 408
    reason = "request timeout"


class UriTooLong(ProxyError):
    status = 414
    reason = "uri too long"


class BadRequest(ProxyError):
    status = 400
    reason = "bad request"


class ConnectNotAllowed(ProxyError):
    status = 405
    reason = "CONNECT is not served (a reverse proxy, not a forward proxy)"


class VersionNotSupported(ProxyError):
    status = 505
    reason = "HTTP version not supported (HTTP/1.0 and HTTP/1.1 are)"


class BodyTimeout(ProxyError):
    status = 408
    reason = "request body too slow"


class InternalError(ProxyError):
    status = 500
    reason = "balancer internal error"


class TooManyConnections(ProxyError):
    """A new client connection past `limits.max_client_connections`; answered, then closed."""

    status = 503
    reason = "too many client connections"


class QueueFull(ProxyError):
    status = 503
    reason = "pool queue full"


class QueueTimeout(ProxyError):
    status = 503
    reason = "no backend had room within the queue timeout"


class CodingNotImplemented(ProxyError):
    status = 501
    reason = "transfer coding not implemented (only chunked is)"
