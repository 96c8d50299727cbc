"""deploy/k8s: valid Kubernetes objects, wired together, running commands the CLI has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from kubernetes_validate import utils as kv

from cli_commands import subcommands
from remsguard.adapters.telemetry import SERVICES
from remsguard.entrypoints.cli import app

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
FILES = sorted(K8S.glob("*.yaml"))
KUBERNETES_VERSIONS = ("1.30.0", kv.latest_version())
SERVICE_FILES = {"processor", "audit-sink", "notifier", "api"}
# Commands of services still being built concurrently: tolerated while missing, checked like any
# other once they exist. Empty now: processor, audit-sink, notifier and api have all landed.
NOT_YET_IN_CLI: set[tuple[str, ...]] = set()
IMAGE_ENTRYPOINT = ["remsguard"]
API_PORT = 8410  # Settings.api_port, set explicitly in api.yaml's ConfigMap


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in FILES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


DOCS = _documents()


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCS if doc["kind"] == kind]


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for _, doc in DOCS:
        if doc["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            specs.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
    return specs


def _cli_problem(argv: list[str]) -> str | None:
    """Why argv is not a runnable remsguard command (walks typer groups by `.commands`)."""
    if argv[:1] != ["remsguard"]:
        return f"does not run remsguard: {argv}"
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    for token in argv[1:]:
        commands = subcommands(command)
        if commands is None or token.startswith("-"):
            break
        if token not in commands:
            return f"`remsguard {' '.join([*path, token])}` is not a CLI command"
        command, path = commands[token], [*path, token]
    if subcommands(command) is not None:
        return f"`remsguard {' '.join(path)}` is a command group"
    return None


def test_there_is_a_file_per_service() -> None:
    assert {p.stem for p in FILES} >= SERVICE_FILES | {"namespace", "topics-job"}
    assert set(SERVICES) - {"up"} == SERVICE_FILES  # embedded mode is not for Kubernetes


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(version: str) -> None:
    assert len(DOCS) >= 18
    problems = []
    for name, doc in DOCS:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            problems.append(f"{name} {doc.get('kind')}/{doc['metadata'].get('name')}: {exc}")
    assert not problems, "\n".join(problems)


def test_the_schema_check_rejects_a_broken_object() -> None:
    deployment = next(doc for _, doc in DOCS if doc["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["replicas"] = "three"
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy2"] = "x"
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_each_service_has_deployment_service_configmap_and_pdb() -> None:
    for stem in SERVICE_FILES:
        kinds = {doc["kind"]: doc for name, doc in DOCS if name == f"{stem}.yaml"}
        assert set(kinds) == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}, stem
        deployment, service, pdb = (
            kinds["Deployment"],
            kinds["Service"],
            kinds["PodDisruptionBudget"],
        )
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        budget = pdb["spec"].get("minAvailable", 0)
        assert isinstance(budget, int) and budget < deployment["spec"]["replicas"], stem
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        refs = {e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e}
        assert kinds["ConfigMap"]["metadata"]["name"] in refs
        assert kinds["ConfigMap"]["data"]["REMSGUARD_METRICS_PORT"] == "9400"
        service_ports = {p["targetPort"] for p in service["spec"]["ports"]}
        container_ports = {p["name"] for p in container["ports"]}
        assert service_ports <= container_ports
        # Prometheus scrapes the port the probes use (/metrics and /healthz live together).
        probe_port = container["readinessProbe"]["httpGet"]["port"]
        assert probe_port in service_ports
        numbers = {p["name"]: p["containerPort"] for p in container["ports"]}
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(numbers[probe_port])


def test_probes_on_health_endpoints_and_resource_requests() -> None:
    for name, pod in _pod_specs():
        for container in pod["containers"]:
            assert container["resources"]["requests"]["cpu"], name
            assert container["resources"]["requests"]["memory"], name
            assert container["resources"]["limits"]["memory"], name
            if name.startswith("remsguard-topics"):
                continue  # a Job: no probes
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                get = container[probe]["httpGet"]
                assert get["path"] == "/healthz", (name, probe)
                assert get["port"] in ports, (name, probe)
                # serve_metrics serves /healthz on 9400; the API on its own HTTP port.
                assert ports[get["port"]] == (API_PORT if name == "remsguard-api" else 9400)


def test_every_container_runs_an_existing_cli_command() -> None:
    problems = []
    for name, pod in _pod_specs():
        for container in pod["containers"]:
            argv = container.get("command") or IMAGE_ENTRYPOINT
            argv = [*argv, *container.get("args", [])]
            problem = _cli_problem(argv)
            pending = tuple(argv[1:2]) in NOT_YET_IN_CLI and "is not a CLI command" in (
                problem or ""
            )
            if problem and not pending:
                problems.append(f"{name}: {problem}")
    assert not problems, problems


def test_the_command_check_itself() -> None:
    assert _cli_problem(["remsguard", "version"]) is None
    assert _cli_problem(["remsguard", "replay", "--help"]) is None
    assert _cli_problem(["remsguard", "no-such-command"]) is not None
    assert "command group" in (_cli_problem(["remsguard", "schemas"]) or "")
    assert _cli_problem(["python", "-m", "remsguard"]) is not None


def test_everything_is_in_the_remsguard_namespace() -> None:
    [namespace] = _by_kind("Namespace")
    for name, doc in DOCS:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"], name
