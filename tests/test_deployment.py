"""deployment.yml and the Dockerfile: they parse, every command they run is one this project
provides (checked with the project's own argument parsers), and the mounted config passes
`balancer check` and names the Compose services and ports that really serve. (No Docker engine
runs here, so the image is not built by the tests.)"""

import asyncio
import importlib
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import yaml

from backends.__main__ import _parser as backends_parser
from backends.probe import main as probe_main
from balancer.cli import _parser as balancer_parser
from balancer.config import load_config
from tests.conftest import ROOT, Backend

COMPOSE = yaml.safe_load((ROOT / "deployment.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def check_command(argv: list[str]) -> None:
    """Fail unless `argv` is a command of this project with arguments it accepts."""
    match argv:
        case ["balancer", *args]:
            balancer_parser().parse_args(args)
        case ["python", "-m", "backends", *args]:
            options = backends_parser().parse_args(args)
            module, _, attr = options.app.partition(":")
            assert hasattr(importlib.import_module(module), attr), options.app
        case ["python", "-m", "backends.probe", *args]:
            assert len(args) in (1, 2) and args[0].startswith("http://127.0.0.1:")
        case _:
            raise AssertionError(f"not a command this project provides: {argv}")


def test_every_service_is_built_from_the_projects_dockerfile() -> None:
    assert set(SERVICES) == {"balancer", "io", "light", "heavy-1", "heavy-2"}
    for name, service in SERVICES.items():
        assert service["build"] == ".", name
        assert (ROOT / "Dockerfile").is_file()


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_command_and_health_check_is_one_the_project_provides(name: str) -> None:
    service = SERVICES[name]
    check_command(service["command"])
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD"
    check_command(test[1:])


def test_the_dockerfile_default_command_is_the_balancer() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM python:(\d+)\.(\d+)", text, re.M)
    assert base is not None and (int(base.group(1)), int(base.group(2))) >= (3, 12)
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd is not None
    check_command(yaml.safe_load(cmd.group(1)))
    for copied in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (ROOT / copied).exists(), copied


def test_the_mounted_config_passes_check_and_points_at_the_services() -> None:
    balancer = SERVICES["balancer"]
    command = balancer["command"]
    mounted = command[command.index("-c") + 1]
    sources = {volume.split(":")[1]: volume.split(":")[0] for volume in balancer["volumes"]}
    host_file = ROOT / sources[mounted]
    result = subprocess.run([sys.executable, "-m", "balancer", "check", "-c", str(host_file)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    config = load_config(str(host_file))

    listening = {}
    for name, service in SERVICES.items():
        if name != "balancer":
            options = backends_parser().parse_args(service["command"][3:])
            listening[name] = (int(options.listen.rpartition(":")[2]), options.kind)
    for pool in config.pools:
        for backend in pool.backends:
            assert backend.host in listening, f"{backend} is not a Compose service"
            assert listening[backend.host] == (backend.port, pool.kind), backend
    assert set(listening) == {b.host for pool in config.pools for b in pool.backends}
    published = {mapping.rsplit(":", 1)[1] for mapping in balancer["ports"]}
    assert config.admin is not None
    assert published == {str(config.listen[0].port), str(config.admin.port)}
    admin_mapping = next(m for m in balancer["ports"] if m.endswith(f":{config.admin.port}"))
    assert admin_mapping.startswith("127.0.0.1:"), "the admin port is published on loopback only"


def test_the_balancer_waits_for_healthy_backends() -> None:
    depends = SERVICES["balancer"]["depends_on"]
    assert {name: spec["condition"] for name, spec in depends.items()} == {
        name: "service_healthy" for name in SERVICES if name != "balancer"}


async def test_probe_command_reports_health_by_exit_code(
    capsys: pytest.CaptureFixture[str], backend_factory: Callable[..., Awaitable[Backend]],
) -> None:
    backend = await backend_factory()
    assert await asyncio.to_thread(probe_main, [backend.url]) == 0
    assert await asyncio.to_thread(probe_main, [backend.url, "/status/503"]) == 1
    assert await asyncio.to_thread(probe_main, ["http://127.0.0.1:1"]) == 1  # nothing there
    assert probe_main(["nonsense"]) == 2
    assert "usage" in capsys.readouterr().err
