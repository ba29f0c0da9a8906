"""deploy/kubernetes/: every manifest is valid against the Kubernetes API schemas (offline, the
`kubernetes-validate` package), every command is one this project accepts, every probe a path
its admin listener (or backend) answers on the port it listens on, and the ConfigMap's config
passes `balancer check` and names backends that really listen there."""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from balancer.config.units import parse_duration
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
from tests.helpers import ROOT

K8S = ROOT / "deploy" / "kubernetes"
FILES = sorted(K8S.glob("*.yaml"))
# the oldest and the newest API versions the package ships schemas for, of those we support
VERSIONS = ("1.29.0", "1.37.0")
# resource quantities as the manifests spell them (the schema takes any string)
CPU = re.compile(r"\d+m|\d+(\.\d+)?")
MEMORY = re.compile(r"\d+(Ki|Mi|Gi)")
BALANCER_UID = dockerfile_user(ROOT / "Dockerfile")
BACKEND_UID = dockerfile_user(ROOT / "Dockerfile.backend")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def of_kind(path: Path, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents(path) if doc["kind"] == kind]


def containers(path: Path) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for deployment in of_kind(path, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment, container


def balancer_config_text(path: Path, deployment: dict[str, Any], container: dict[str, Any]
                         ) -> str:
    """The config file the balancer container's `-c` names, from the ConfigMap it mounts."""
    command = container["command"]
    config_file = command[command.index("-c") + 1]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for mount in container["volumeMounts"]:
        if config_file.startswith(mount["mountPath"] + "/"):
            assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
            configmap = volumes[mount["name"]]["configMap"]["name"]
            key = config_file[len(mount["mountPath"]) + 1:]
            [data] = [c["data"] for c in of_kind(path, "ConfigMap")
                      if c["metadata"]["name"] == configmap]
            text: str = data[key]
            return text
    raise AssertionError(f"{config_file} is not on a mounted volume")


def test_both_forms_are_there() -> None:
    assert {p.name for p in FILES} == {"namespace.yaml", "sidecar.yaml", "gateway.yaml"}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(path: Path, version: str
                                                                ) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_catches_a_misspelt_field() -> None:
    [deployment] = of_kind(K8S / "sidecar.yaml", "Deployment")
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_command_and_exec_probe_is_one_the_project_provides(path: Path) -> None:
    for _, container in containers(path):
        check_command(container["command"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if "exec" in container.get(probe, {}):
                check_command(container[probe]["exec"]["command"])


@pytest.mark.parametrize("path", [K8S / "sidecar.yaml", K8S / "gateway.yaml"],
                         ids=lambda p: p.name)
def test_balancer_probes_hit_livez_and_readyz_on_the_admin_port(path: Path) -> None:
    served = admin_paths()
    balancers = [(d, c) for d, c in containers(path) if c["command"][0] == "balancer"]
    assert len(balancers) == 1
    deployment, container = balancers[0]
    config = parse_deployed_config(balancer_config_text(path, deployment, container))
    assert config.admin is not None and config.admin.host == "0.0.0.0", \
        "the kubelet probes the Pod's address"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["admin"] == config.admin.port
    assert ports["http"] == config.listen[0].port
    probes = {name: container[name]["httpGet"]
              for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/livez"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert probe["path"] in served and probe["path"] in PROBES  # no token needed
        assert ports[probe["port"]] == config.admin.port


@pytest.mark.parametrize("path", [K8S / "sidecar.yaml", K8S / "gateway.yaml"],
                         ids=lambda p: p.name)
def test_grace_period_resources_and_non_root(path: Path) -> None:
    for deployment, container in containers(path):
        pod = deployment["spec"]["template"]["spec"]
        if container["command"][0] == "balancer":
            config = parse_deployed_config(balancer_config_text(path, deployment, container))
            timeouts = config.timeouts
            assert timeouts.grace > 0, "readiness must have time to take the Pod out"
            assert pod["terminationGracePeriodSeconds"] > timeouts.grace + timeouts.drain
            assert container["securityContext"]["runAsUser"] == BALANCER_UID
        else:
            assert container["securityContext"]["runAsUser"] == BACKEND_UID
        assert pod["securityContext"]["runAsNonRoot"] is True
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}
        resources = container["resources"]
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
        for amounts in (resources["requests"], resources["limits"]):
            assert CPU.fullmatch(amounts["cpu"]) and MEMORY.fullmatch(amounts["memory"]), amounts


def test_the_sidecar_config_passes_check_and_points_at_its_own_containers(
    tmp_path: Path,
) -> None:
    path = K8S / "sidecar.yaml"
    [deployment] = of_kind(path, "Deployment")
    pairs = list(containers(path))
    [(_, balancer)] = [(d, c) for d, c in pairs if c["command"][0] == "balancer"]
    text = balancer_config_text(path, deployment, balancer)
    check_config_text(text, tmp_path)
    config = parse_deployed_config(text)
    listening = {}
    for _, container in pairs:
        if container is not balancer:
            host, port, kind = backend_listen(container["command"])
            assert host == "127.0.0.1", "a sidecar backend is reached over the Pod's loopback"
            listening[port] = kind
    backends = {(b.host, b.port): pool.kind for pool in config.pools for b in pool.backends}
    assert backends == {("127.0.0.1", port): kind for port, kind in listening.items()}
    assert len(pairs) == 4  # one Pod: the balancer and the three kinds


def test_the_gateway_discovers_headless_services_of_the_backend_deployments(
    tmp_path: Path,
) -> None:
    path = K8S / "gateway.yaml"
    pairs = list(containers(path))
    [(deployment, balancer)] = [(d, c) for d, c in pairs if c["command"][0] == "balancer"]
    text = balancer_config_text(path, deployment, balancer)
    check_config_text(text, tmp_path)
    assert yaml.safe_load(text)["discovery"] == {"interval": "5s"}
    assert parse_duration(yaml.safe_load(text)["discovery"]["interval"]) == 5.0
    deployments = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]: (d, c)
                   for d, c in pairs if c is not balancer}
    services = {s["metadata"]["name"]: s for s in of_kind(path, "Service")}
    discovered = discovered_names(text)
    assert len(discovered) == 3
    for entry in discovered:
        service_name, namespace, rest = entry.name.split(".", 2)
        assert rest == "svc.cluster.local"
        service = services[service_name]
        assert namespace == service["metadata"]["namespace"]
        assert service["spec"]["clusterIP"] == "None", "headless: one address per Pod"
        backend_deployment, container = deployments[service["spec"]["selector"][
            "app.kubernetes.io/name"]]
        [port] = service["spec"]["ports"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert port["port"] == ports[port["targetPort"]] == entry.port
        host, listen_port, kind = backend_listen(container["command"])
        assert (host, listen_port, kind) == ("0.0.0.0", entry.port, entry.kind)
        for probe in ("readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] == "/__health" and ports[get["port"]] == entry.port
        labels = backend_deployment["spec"]["selector"]["matchLabels"]
        assert labels == backend_deployment["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_object_is_in_the_namespace_and_every_selector_matches(path: Path) -> None:
    [namespace] = of_kind(K8S / "namespace.yaml", "Namespace")
    pods = {}
    for doc in documents(path):
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"]
        if doc["kind"] == "Deployment":
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
            pods[doc["metadata"]["name"]] = labels
    for service in of_kind(path, "Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pods.values()), service
