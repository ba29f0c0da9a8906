"""Checks shared by the deployment-file tests (deployment.yml, deploy/kubernetes/): every
command is one this project's argument parsers accept, every admin path one the admin app
serves, and every embedded balancer config passes `balancer check`.

DNS discovery (`- {discover: http://name:port}`, top-level `resolvers:` and `discovery:`,
`watch:`) is issue 13's contract, written by another branch. Where this code does not know
those keys yet, a config using them is checked in two steps: the keys are exactly the contract's
spellings and shapes, and the config with each discovered name as a fixed address (and the
keys left out) passes `balancer check`.
"""

import argparse
import importlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from backends.__main__ import _parser as backends_parser
from balancer.cli import _parser as balancer_parser
from balancer.config import model as balancer_config
from balancer.config.model import Config
from balancer.config.parse import parse_config
from balancer.ops.admin import build_admin_app
from balancer.ops.server import Balancer
from tests.helpers import ROOT

DISCOVERY_KNOWN = "discover" in getattr(balancer_config, "BACKEND_KEYS", ())
CONTRACT_TOP_KEYS = {"resolvers", "discovery", "watch"}
DISCOVER_URL = re.compile(r"http://(?P<name>[a-z0-9]([a-z0-9.-]*[a-z0-9])?):(?P<port>\d+)")
HOST_PORT = re.compile(r"[0-9a-fA-F.:\[\]]+:\d+")
DURATION = re.compile(r"\d+(\.\d+)?(ms|s|m)")


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option spelling of a parser and its subcommands."""
    found = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


def _parse_exactly(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    """Parse as the CLI does, but refuse abbreviations (`--worker` for `--workers`)."""
    known = _option_strings(parser)
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in known, f"{arg} is not spelt as the CLI spells it"
    return parser.parse_args(args)


def check_command(argv: list[str]) -> None:
    """Fail unless `argv` is a command of this project with arguments it accepts."""
    match argv:
        case ["balancer", *args]:
            _parse_exactly(balancer_parser(), args)
        case ["python", "-m", "backends", *args]:
            options = _parse_exactly(backends_parser(), args)
            module, _, attr = options.app.partition(":")
            assert hasattr(importlib.import_module(module), attr), options.app
        case ["python", "-m", "backends.probe", *args]:
            assert len(args) in (1, 2) and args[0].startswith("http://127.0.0.1:"), args
            if len(args) == 2:
                assert args[1].startswith("/"), args
        case _:
            raise AssertionError(f"not a command this project provides: {argv}")


def backend_listen(argv: list[str]) -> tuple[str, int, str]:
    """(host, port, kind) a `python -m backends serve` command listens on."""
    options = backends_parser().parse_args(argv[3:])
    host, _, port = options.listen.rpartition(":")
    return host, int(port), options.kind


def admin_paths() -> set[str]:
    """The GET paths the balancer's admin listener serves."""
    config = parse_config("listen: 127.0.0.1:0\npools: {p: {backends: [http://127.0.0.1:9]}}\n")
    app = build_admin_app(Balancer(config))
    return {route.resource.canonical for route in app.router.routes()
            if route.method == "GET" and route.resource is not None}


@dataclass(frozen=True)
class Discovered:
    pool: str
    kind: str | None
    name: str
    port: int


def discovered_names(text: str) -> list[Discovered]:
    """The `{discover: http://name:port}` entries of a config, by pool."""
    found = []
    for pool, spec in yaml.safe_load(text)["pools"].items():
        for entry in spec["backends"]:
            if isinstance(entry, dict) and "discover" in entry:
                match = DISCOVER_URL.fullmatch(entry["discover"])
                assert match is not None, entry
                found.append(Discovered(pool, spec.get("kind"), match["name"],
                                        int(match["port"])))
    return found


def _contract_checked(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with the discovery contract's keys checked for spelling and shape, then each
    discovered name turned into a fixed address and the top-level keys left out."""
    top = set(document) - set(balancer_config.TOP_KEYS)
    assert top <= CONTRACT_TOP_KEYS, f"unknown top-level keys {top - CONTRACT_TOP_KEYS}"
    if "resolvers" in document:
        assert all(HOST_PORT.fullmatch(str(r)) for r in document["resolvers"]), document
    if "discovery" in document:
        assert set(document["discovery"]) <= {"interval"}, document["discovery"]
        assert DURATION.fullmatch(str(document["discovery"]["interval"])), document["discovery"]
    if "watch" in document:
        assert isinstance(document["watch"], bool)
    stripped = {key: value for key, value in document.items() if key not in CONTRACT_TOP_KEYS}
    pools = {}
    for name, spec in document["pools"].items():
        backends = []
        for entry in spec["backends"]:
            if isinstance(entry, dict):
                assert set(entry) <= {"address", "discover", "weight"}, entry
            if isinstance(entry, dict) and "discover" in entry:
                assert set(entry) <= {"discover", "weight"}, entry
                assert DISCOVER_URL.fullmatch(entry["discover"]), entry
                entry = {"address": entry["discover"],
                         **({"weight": entry["weight"]} if "weight" in entry else {})}
            backends.append(entry)
        pools[name] = {**spec, "backends": backends}
    stripped["pools"] = pools
    return stripped


def check_config_text(text: str, tmp_path: Path, name: str = "balancer.yaml") -> None:
    """Fail unless `balancer check` accepts the config (see the module docstring for the
    discovery keys while their code has not landed)."""
    if not DISCOVERY_KNOWN:
        text = yaml.safe_dump(_contract_checked(yaml.safe_load(text)), sort_keys=False)
    path = tmp_path / name
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "balancer", "check", "-c", str(path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr


def parse_deployed_config(text: str) -> Config:
    """The config, parsed (discovered names as fixed addresses while discovery has not
    landed: see the module docstring)."""
    if not DISCOVERY_KNOWN:
        text = yaml.safe_dump(_contract_checked(yaml.safe_load(text)), sort_keys=False)
    return parse_config(text)


def dockerfile_user(path: Path) -> int:
    """The numeric USER a Dockerfile's image runs as (never root)."""
    users = re.findall(r"^USER (\S+)$", path.read_text(), re.M)
    assert users, f"{path.name} sets no USER"
    uid = int(users[-1])
    assert uid != 0
    return uid
