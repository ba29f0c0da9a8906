"""`is_healthy(address)`: one GET /__health to `http://host:port` or `unix:/path`, closed after.

Also a container health check: `python -m backends.probe ADDRESS [PATH]` exits 0 when
ADDRESS answers PATH (default /__health) with 200, else 1.
"""

import http.client
import socket
import sys


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


def is_healthy(address: str, timeout: float = 1.0, path: str = "/__health") -> bool:
    if address.startswith("unix:"):
        conn: http.client.HTTPConnection = _UnixConnection(address[len("unix:"):], timeout)
    else:
        conn = http.client.HTTPConnection(address.removeprefix("http://"), timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    address, path = [*argv, "/__health"][:2] if argv else ("", "")
    if not 1 <= len(argv) <= 2 or not address.startswith(("http://", "unix:")) \
            or not path.startswith("/"):
        print("usage: python -m backends.probe http://host:port|unix:/path [/PATH]",
              file=sys.stderr)
        return 2
    return 0 if is_healthy(address, timeout=2.0, path=path) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
