"""Config bytes: whatever bytes a config file holds, `check`, start and reload give located
errors (`file:line:col: message`) or a Config; never a traceback, never a dead process.

Hypothesis drives the in-process API (load_config, `balancer check` through cli.main, a
running Balancer's reload) over arbitrary bytes and over mutations of config/balancer.yaml;
a few fixed byte files go through real `balancer check`, `balancer run` and SIGHUP (single
process and `--workers 2`). Example counts come from the hypothesis profile (conftest).
"""

import asyncio
import contextlib
import io
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balancer import cli
from balancer.config.model import Config
from balancer.config.parse import parse_config
from balancer.config.yamltree import ConfigError
from balancer.ops.config_file import load_config
from balancer.ops.server import ApplyError, Balancer
from balancer.ops.supervisor import Supervisor
from tests.helpers import (
    ROOT,
    BackendFactory,
    ProcessFactory,
    free_port,
    one_pool_config,
    wait_for,
)

REAL = (ROOT / "config" / "balancer.yaml").read_bytes()
# the real file on port 0, so that a mutation that stays valid can be started or reloaded
REAL_PORT0 = REAL.replace(b"127.0.0.1:8080", b"127.0.0.1:0").replace(b"127.0.0.1:9901",
                                                                     b"127.0.0.1:0")
LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): \S")
NASTY = [b"\xe9", b"\xff", b"\x00", b"\x80", b"\xc3", b"\xef\xbb\xbf", b"\xfe\xff", b"\r",
         b"\t", b"\x1b", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\n", b":", b"[", b"{",
         b"&a", b"*a", b"!!python/object:os.system", b"\xe2\x80\xa8", b"'", b'"', b"#"]


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """`base` with a few bytes replaced, inserted or deleted (often a nasty one)."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        piece = draw(st.one_of(st.sampled_from(NASTY), st.binary(min_size=1, max_size=3)))
        op = draw(st.sampled_from(["insert", "replace", "delete"]))
        if op == "insert":
            data[at:at] = piece
        elif op == "replace":
            data[at:at + len(piece)] = piece
        else:
            del data[at:at + draw(st.integers(1, 8))]
    return bytes(data)


ANY_BYTES = st.one_of(st.binary(max_size=300), mutated(REAL), mutated(REAL_PORT0))


def binds_a_fixed_port(data: bytes) -> bool:
    """Whether a config would listen on a named TCP port: a test that starts or reloads it
    could take a port someone else uses (8080 of `make run`)."""
    try:
        config = parse_config(data.decode("utf-8-sig"), "x.yaml")
    except (ConfigError, UnicodeDecodeError):
        return False
    addresses = [*config.listen, *filter(None, [config.admin])]
    return any(a.kind == "tcp" and a.port != 0 for a in addresses)


SAFE_BYTES = st.one_of(st.binary(max_size=300), mutated(REAL_PORT0)).filter(
    lambda data: not binds_a_fixed_port(data))


def assert_located(text: str, path: str) -> None:
    """Every line is `path:line:col: message` (or check's one-line summary), no traceback."""
    assert "Traceback" not in text, text
    for line in text.splitlines():
        if line == f"{path}: {line.split(': ', 1)[-1]}" and "problem(s)" in line:
            continue  # `FILE: N problem(s); config not valid`
        match = LOCATED.match(line)
        assert match is not None and match["file"] == path, line
        assert int(match["line"]) >= 1 and int(match["col"]) >= 1, line


def load_bytes(data: bytes) -> tuple[str, Config | ConfigError]:
    with tempfile.NamedTemporaryFile(suffix=".yaml", delete=False) as fh:
        fh.write(data)
    try:
        return fh.name, load_config(fh.name)
    except ConfigError as exc:
        return fh.name, exc
    finally:
        Path(fh.name).unlink()


@given(ANY_BYTES)
def test_load_config_gives_a_config_or_located_errors_for_any_bytes(data: bytes) -> None:
    path, result = load_bytes(data)
    if isinstance(result, ConfigError):
        assert result.problems
        assert_located(str(result), path)


@given(ANY_BYTES)
def test_check_in_process_exits_0_or_2_with_located_errors_for_any_bytes(data: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".yaml") as fh:
        fh.write(data)
        fh.flush()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["check", "-c", fh.name])
    assert code in (0, 2)
    if code == 2:
        assert err.getvalue() and not out.getvalue()
        assert_located(err.getvalue(), fh.name)
    else:
        assert out.getvalue().startswith(f"{fh.name}: ok")


def test_a_latin1_byte_is_located_at_its_line_and_column() -> None:
    data = REAL.replace(b"# The default config", b"# The d\xe9fault config")
    path, result = load_bytes(data)
    assert isinstance(result, ConfigError)
    assert [str(p) for p in result.problems] == [
        f"{path}:2:8: the file is not UTF-8: byte 0xe9 cannot be decoded (save it as UTF-8)"]


def test_deep_nesting_control_characters_and_unknown_tags_are_located() -> None:
    # the tags: found by HYPOTHESIS_PROFILE=fuzz (a tagged key raised; a tagged value gave a
    # message of three lines)
    for data in (b"listen: 127.0.0.1:0\npools: {a: {!!python/object:os.system backends: []}}\n",
                 b"listen: !!python/object:os.system 127.0.0.1:0\n",
                 b"[" * 50_000, b"{a: " * 20_000, b"listen: \x00\n", b"listen: \x1b[0m\n",
                 b"\xef\xbb\xbflisten: [\n", "listen: \ud7ff\n".encode()):
        path, result = load_bytes(data)
        assert isinstance(result, ConfigError), data[:20]
        assert_located(str(result), path)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=mutated(REAL_PORT0).filter(lambda data: not binds_a_fixed_port(data)))
async def test_start_from_any_bytes_serves_or_refuses_with_located_errors(data: bytes) -> None:
    path, result = load_bytes(data)
    if isinstance(result, ConfigError):
        assert_located(str(result), path)
        return
    balancer = Balancer(result, path)
    try:
        await balancer.start()
    except ApplyError as exc:  # valid, but not possible here (an address, the access log)
        assert str(exc).startswith(("cannot listen on", "cannot open the access log"))
    finally:
        await balancer.stop()


# -- reload of a running balancer ------------------------------------------------------------

@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Balancer, Path]]:
    path = tmp_path / "lb.yaml"
    path.write_bytes(REAL_PORT0)
    balancer = Balancer(parse_config(REAL_PORT0.decode(), str(path)), str(path))
    await balancer.start()
    yield balancer, path
    await balancer.stop()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
          deadline=None)
@given(data=SAFE_BYTES)
async def test_reload_of_any_bytes_is_refused_located_or_swapped_in(
    running: tuple[Balancer, Path], data: bytes,
) -> None:
    balancer, path = running
    path.write_bytes(data)
    before = balancer.runtime.generation
    outcome = await balancer.reload()  # raises nothing, whatever the file holds
    if outcome.ok:
        assert balancer.runtime.generation == before + 1
    else:
        assert balancer.runtime.generation == before
        assert outcome.errors
        applied = [e for e in outcome.errors  # valid, but not possible here: one line each
                   if re.match(rf"{re.escape(str(path))}: cannot (listen on|open the access)", e)]
        assert_located("\n".join(e for e in outcome.errors if e not in applied), str(path))
    path.write_bytes(REAL_PORT0)
    assert (await balancer.reload()).ok  # back to a known config: still able to reload
    assert balancer.public_addresses


# -- real processes ----------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "balancer", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


FIXED = {
    "latin1-comment": REAL + b"# caf\xe9\n",
    "nul": REAL.replace(b"drain: 10s", b"drain: 1\x00s"),
    "utf16": REAL.decode().encode("utf-16"),
    "lone-continuation": b"listen: 127.0.0.1:0\npools: {a: {backends: [http://\x80x:1]}}\n",
    "deep": b"[" * 50_000,
}


@pytest.mark.parametrize("name", sorted(FIXED))
def test_check_and_run_on_a_file_that_is_not_utf8_exit_2_with_located_errors(
    tmp_path: Path, name: str,
) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(FIXED[name])
    for command in ("check", "run"):
        result = run_cli(command, "-c", str(path))
        assert result.returncode == 2, (command, result.stderr)
        assert_located(result.stderr, str(path))
        assert result.stdout == ""


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_sighup_with_a_file_that_is_not_utf8_keeps_serving(
    tmp_path: Path, workers: str, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    backend = await backend_factory("b")
    config = tmp_path / "lb.yaml"
    good = one_pool_config(backend.url, listen=f"127.0.0.1:{free_port()}")
    config.write_text(good)
    ready = r"serving with 2 workers" if workers == "2" else r"serving config generation"
    lb = balancer_process(config, "--workers", workers, ready=ready)
    for bad in (FIXED["latin1-comment"], FIXED["utf16"], b"listen: [\xff\n"):
        config.write_bytes(good.encode() + b"# caf\xe9\n" if bad is FIXED["latin1-comment"]
                           else bad)
        before = lb.log().count("reload refused")
        lb.signal(signal.SIGHUP)
        await wait_for(lambda before=before: lb.log().count("reload refused") > before, 15,
                       "the reload to be refused")
        async with aiohttp.ClientSession() as session, session.get(f"{lb.url}/") as resp:
            assert resp.status == 200
    assert lb.proc.poll() is None
    assert "Traceback" not in lb.log()
    assert "exited with" not in lb.log()  # no worker died either
    assert re.search(r"lb\.yaml:\d+:\d+: the file is not UTF-8", lb.log())
    lb.signal(signal.SIGTERM)
    assert await asyncio.to_thread(lb.proc.wait, 30) == 0


async def test_an_unexpected_error_while_reloading_is_refused_not_raised(
    running: tuple[Balancer, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    balancer, _ = running

    def broken(path: str) -> Config:
        raise RuntimeError("a bug in the config code")

    monkeypatch.setattr("balancer.ops.server.load_config", broken)
    outcome = await balancer.reload()
    assert not outcome.ok and balancer.runtime.generation == 1
    assert "RuntimeError: a bug in the config code" in outcome.errors[0]


async def test_an_unexpected_error_in_a_supervisor_reload_is_refused_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "lb.yaml"
    path.write_bytes(REAL_PORT0)
    supervisor = Supervisor(load_config(str(path)), str(path), 2, "info")

    def broken(path: str) -> Config:
        raise RuntimeError("a bug in the config code")

    monkeypatch.setattr("balancer.ops.supervisor.load_config", broken)
    outcome = await supervisor.reload()  # no worker is running: none may be signalled
    assert not outcome.ok and supervisor.generation == 1
    assert "RuntimeError: a bug in the config code" in outcome.errors[0]
    await supervisor.stop()


def test_a_message_quoting_a_line_separator_stays_on_one_line() -> None:
    # found by HYPOTHESIS_PROFILE=fuzz: U+2028 in a pool name split the message in two
    _, result = load_bytes(REAL.replace(b"classes: {io: io", "classes: {io: i\u2028o".encode()))
    assert isinstance(result, ConfigError)
    assert len(str(result).splitlines()) == 1
    assert "i\\u2028o" in str(result)


async def test_a_host_that_is_no_name_is_a_located_error(
    running: tuple[Balancer, Path],
) -> None:
    # found by HYPOTHESIS_PROFILE=fuzz: `.0.0.1` as a listen host made getaddrinfo raise
    # UnicodeError (start and reload crashed); a backend host with U+2028 killed the health
    # checker of every backend
    balancer, path = running
    for old, new, where in (
            (b"listen: 127.0.0.1:0", b"listen: .0.0.1:0", ":4:9: listen: "),
            (b"admin: 127.0.0.1:0", b"admin: a..b:0", ":5:8: admin: "),
            (b"[http://127.0.0.1:8101]", "[http://\u2028127.0.0.1:8101]".encode(),
             ":15:42: pools.io.backends[0]: ")):
        path.write_bytes(REAL_PORT0.replace(old, new))
        outcome = await balancer.reload()
        assert not outcome.ok
        assert len(outcome.errors) == 1 and where in outcome.errors[0], outcome.errors
        assert "is not a valid host name" in outcome.errors[0]
        _, result = load_bytes(REAL_PORT0.replace(old, new))
        assert isinstance(result, ConfigError)
