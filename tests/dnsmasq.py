"""A real DNS server for discovery tests and the discovery bench: Debian's dnsmasq.

Started on 127.0.0.1 on a free port, answering only from a hosts file that `publish`
rewrites (dnsmasq re-reads it on SIGHUP); names under `.test` that the file lacks get
NXDOMAIN. `publish` returns once the server answers the new set, so a test never waits on
dnsmasq's own timing.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

DNSMASQ = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if os.path.exists(
    "/usr/sbin/dnsmasq") else None)


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq binds both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


class Dnsmasq:
    """One dnsmasq process; `resolver` is the `ip:port` a balancer config names."""

    def __init__(self, directory: Path, ttl: int = 1) -> None:
        assert DNSMASQ is not None
        self.hosts = directory / "dns-hosts"
        self.hosts.write_text("")
        self.log_path = directory / "dnsmasq.log"
        self.ttl = ttl
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def resolver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (or start again, on the same port once it has one)."""
        for _attempt in range(5):
            port = self.port or _free_port()
            args = [DNSMASQ or "dnsmasq", "--keep-in-foreground", f"--port={port}",
                    "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
                    "--no-hosts", f"--addn-hosts={self.hosts}", f"--local-ttl={self.ttl}",
                    "--local=/test/", "--pid-file=", "--log-facility=-", "--cache-size=0"]
            if os.geteuid() == 0:
                args.append("--user=root")  # it may read the test's private directory
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(args, stdout=log, stderr=log)
            if self._wait_ready(port):
                self.port = port
                return
            self.stop()
        raise AssertionError(f"dnsmasq did not start:\n{self.log_path.read_text()}")

    def _wait_ready(self, port: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(dns.exception.DNSException, OSError):
                self.query("ready.test", port)
                return True
            time.sleep(0.05)
        return False

    def query(self, name: str, port: int | None = None) -> set[str]:
        """The A and AAAA addresses dnsmasq answers for `name` now."""
        found: set[str] = set()
        for kind in (dns.rdatatype.A, dns.rdatatype.AAAA):
            reply = dns.query.udp(dns.message.make_query(name, kind), "127.0.0.1",
                                  timeout=1.0, port=port or self.port)
            for rrset in reply.answer:
                found.update(record.address for record in rrset)
        return found

    def publish(self, records: dict[str, list[str]], timeout: float = 10.0) -> None:
        """Make the hosts file say exactly `records` (name -> addresses); wait until served."""
        lines = [f"{address} {name}" for name, addresses in records.items()
                 for address in addresses]
        temporary = self.hosts.with_suffix(".new")
        temporary.write_text("".join(f"{line}\n" for line in lines))
        temporary.replace(self.hosts)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while True:
            answers = {}
            with contextlib.suppress(dns.exception.DNSException, OSError):
                answers = {name: self.query(name) for name in records}
            if answers == {name: set(addresses) for name, addresses in records.items()}:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"dnsmasq still answers {answers}, not {records}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
