"""deployment.yml and the Dockerfiles: they parse, every command they run is one this project
provides (checked with the project's own argument parsers), the balancer image carries no
backend dependency, and the mounted config passes `balancer check` and discovers the Compose
services that really serve. (The images and the stack are built and run by `make image` and
`make compose-up`, not by the tests: see README, Deploying.)"""

import asyncio
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from backends.probe import main as probe_main
from balancer.ops.admin import PROBES
from tests.deploy_checks import (
    admin_paths,
    backend_listen,
    check_command,
    check_config_text,
    discovered_names,
    dockerfile_user,
    parse_deployed_config,
)
from tests.helpers import ROOT, BackendFactory

COMPOSE = yaml.safe_load((ROOT / "deployment.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
BACKENDS = {name: s for name, s in SERVICES.items() if name != "balancer"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _dockerfile(service: dict[str, Any]) -> Path:
    build = service["build"]
    assert build["context"] == "."
    return ROOT / build.get("dockerfile", "Dockerfile")


def test_the_balancer_and_the_backends_have_images_of_their_own() -> None:
    assert set(SERVICES) == {"balancer", "async", "threaded", "multiprocess"}
    assert _dockerfile(SERVICES["balancer"]).name == "Dockerfile"
    for name, service in BACKENDS.items():
        assert _dockerfile(service).name == "Dockerfile.backend", name
        assert service["image"] == BACKENDS["async"]["image"] != SERVICES["balancer"]["image"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_command_and_health_check_is_one_the_project_provides(name: str) -> None:
    service = SERVICES[name]
    check_command(service["command"])
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD"
    check_command(test[1:])


def test_the_balancer_health_check_is_readyz_on_its_admin_listener() -> None:
    config = parse_deployed_config(_mounted_config_text())
    test = SERVICES["balancer"]["healthcheck"]["test"]
    assert config.admin is not None
    assert test[-2:] == [f"http://127.0.0.1:{config.admin.port}", "/readyz"]
    assert "/readyz" in admin_paths() and "/readyz" in PROBES


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.backend"])
def test_the_dockerfiles_take_the_base_as_an_arg_and_run_non_root(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    base = re.search(r"^ARG BASE=python:(\d+)\.(\d+)-slim$", text, re.M)
    assert base is not None and (int(base.group(1)), int(base.group(2))) >= (3, 12)
    assert re.search(r"^FROM \$\{BASE\}$", text, re.M)
    dockerfile_user(ROOT / dockerfile)
    cmd = re.search(r"^CMD (\[.*?\])$", text, re.M | re.S)
    assert cmd is not None
    check_command(yaml.safe_load(cmd.group(1).replace("\\\n", "")))
    for copied in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (ROOT / copied).exists(), copied


def test_the_balancer_image_installs_no_backend_dependency() -> None:
    """`pip install .` (the balancer image) leaves pyechonext and its runners out; the
    `backends` extra (Dockerfile.backend) and the `test` extra bring them."""
    project = PYPROJECT["project"]
    names = {re.split(r"[<>=\[ ]", req)[0].lower() for req in project["dependencies"]}
    backend_only = {"pyechonext", "uvicorn", "waitress", "gunicorn", "jinja2", "psutil"}
    assert names & backend_only == set()
    extras = project["optional-dependencies"]
    assert {re.split(r"[<>=\[ ]", req)[0].lower() for req in extras["backends"]} == backend_only
    assert "echonext-balancer[backends]" in extras["test"]
    balancer_file = (ROOT / "Dockerfile").read_text()
    assert "[backends]" not in balancer_file and "COPY backends backends" not in balancer_file
    assert "'.[backends]'" in (ROOT / "Dockerfile.backend").read_text()


def test_each_image_copies_the_project_modules_its_code_imports() -> None:
    """What backends/ imports from balancer/ (at module level, as a runner loads it) is in the
    backend image; the balancer image imports nothing from backends/ but the probe."""
    backend_file = (ROOT / "Dockerfile.backend").read_text()
    imported = set()
    for path in (ROOT / "backends").rglob("*.py"):
        if path.name != "stack.py":  # `make run` only, never in an image
            imported |= set(re.findall(r"^\s*(?:from|import) (balancer[\w.]*)", path.read_text(),
                                       re.M))
    if imported:
        assert "COPY balancer balancer" in backend_file, imported
    balancer_file = (ROOT / "Dockerfile").read_text()
    for path in (ROOT / "balancer").rglob("*.py"):
        assert not re.search(r"^\s*(?:from|import) backends", path.read_text(), re.M), path
    assert "COPY backends/probe.py backends/probe.py" in balancer_file


def _mounted_config_text() -> str:
    """The file the balancer's `-c` names, through the mounted directory."""
    balancer = SERVICES["balancer"]
    command = balancer["command"]
    mounted = command[command.index("-c") + 1]
    for volume in balancer["volumes"]:
        source, target = volume.split(":")[:2]
        if mounted.startswith(target + "/"):
            host = ROOT / source / mounted[len(target) + 1:]
            assert (ROOT / source).is_dir(), "mount the config directory, not the file"
            return host.read_text()
    raise AssertionError(f"{mounted} is not on a mounted volume")


def test_the_mounted_config_passes_check_and_discovers_the_services(tmp_path: Path) -> None:
    text = _mounted_config_text()
    check_config_text(text, tmp_path)
    config = parse_deployed_config(text)
    discovered = discovered_names(text)
    listening = {}
    for name, service in BACKENDS.items():
        host, port, kind = backend_listen(service["command"])
        assert host == "0.0.0.0"
        listening[name] = (port, kind)
    assert {d.name: (d.port, d.kind) for d in discovered} == listening
    named = {b.host for pool in config.pools for b in pool.backends}  # before discovery landed
    named |= {d.name for pool in config.pools for d in getattr(pool, "discover", ())}
    assert named == set(listening)
    assert yaml.safe_load(text)["discovery"] == {"interval": "5s"}
    published = {mapping.rsplit(":", 1)[1] for mapping in SERVICES["balancer"]["ports"]}
    assert published == {str(config.listen[0].port)}, "the admin port is not published"
    assert config.admin is not None and config.admin.host == "127.0.0.1"
    assert config.admin_token is None  # with a token, it could listen on 0.0.0.0


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_passes_check(path: Path, tmp_path: Path) -> None:
    check_config_text(path.read_text(), tmp_path, path.name)


def test_backends_scale_by_replicas_not_by_numbered_services() -> None:
    for name, service in BACKENDS.items():
        assert service["deploy"]["replicas"] >= 1, name
        assert service["deploy"]["mode"] == "replicated", "podman-compose ignores it otherwise"
        assert "container_name" not in service, "a fixed name cannot be scaled"
        assert "ports" not in service, "replicas would clash on a published port"


def test_the_stop_grace_period_covers_grace_and_drain() -> None:
    config = parse_deployed_config(_mounted_config_text())
    period = SERVICES["balancer"]["stop_grace_period"]
    assert period.endswith("s")
    assert int(period[:-1]) > config.timeouts.grace + config.timeouts.drain


def test_the_balancer_waits_for_healthy_backends() -> None:
    depends = SERVICES["balancer"]["depends_on"]
    assert {name: spec["condition"] for name, spec in depends.items()} == {
        name: "service_healthy" for name in BACKENDS}


async def test_probe_command_reports_health_by_exit_code(
    capsys: pytest.CaptureFixture[str], backend_factory: BackendFactory,
) -> None:
    backend = await backend_factory()
    assert await asyncio.to_thread(probe_main, [backend.url]) == 0
    assert await asyncio.to_thread(probe_main, [backend.url, "/status/503"]) == 1
    assert await asyncio.to_thread(probe_main, ["http://127.0.0.1:1"]) == 1  # nothing there
    assert probe_main(["nonsense"]) == 2
    assert "usage" in capsys.readouterr().err


def test_the_contract_check_used_before_discovery_landed_refuses_other_spellings() -> None:
    """tests/deploy_checks.py's fallback for a balancer without discovery: the contract's
    spellings pass (as fixed addresses), any other is refused."""
    from tests.deploy_checks import _contract_checked

    document = yaml.safe_load(_mounted_config_text())
    stripped = _contract_checked(document)
    assert "discovery" not in stripped
    assert stripped["pools"]["io"]["backends"] == [{"address": "http://async:8000"}]
    for bad in ({"discovery": {"intervall": "5s"}}, {"resolver": ["127.0.0.11:53"]},
                {"resolvers": ["dns.example"]}):
        with pytest.raises(AssertionError):
            _contract_checked({**document, **bad})
    misspelt = {**document, "pools": {"io": {"backends": [{"discovery": "http://a:1"}]}}}
    with pytest.raises(AssertionError):
        _contract_checked(misspelt)
