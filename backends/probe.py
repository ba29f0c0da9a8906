"""`is_healthy(address)`: one GET /__health to `http://host:port` or `unix:/path`, closed after."""

import http.client
import socket


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def is_healthy(address: str, timeout: float = 1.0) -> bool:
    if address.startswith("unix:"):
        conn: http.client.HTTPConnection = _UnixConnection(address[len("unix:"):], timeout)
    else:
        conn = http.client.HTTPConnection(address.removeprefix("http://"), timeout=timeout)
    try:
        conn.request("GET", "/__health")
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        conn.close()
