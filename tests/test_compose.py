"""docker-compose.yml cannot run here (no Docker engine), so check what can be checked statically.

- the infrastructure services exist (Kafka on the official image, PostgreSQL, Prometheus, Grafana);
- every service running the remsguard image runs a command that exists in the typer CLI;
- every host path it mounts and every build context / Dockerfile exists;
- every `depends_on` names a service of the file;
- the files it mounts are what Prometheus and Grafana expect.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from cli_commands import subcommands
from remsguard.entrypoints.cli import app

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = "deploy/Dockerfile"
INFRASTRUCTURE = ("kafka", "postgres", "prometheus", "grafana")


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a mapping"
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load(COMPOSE)


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose.get("services")
    assert isinstance(services, dict) and services, "docker-compose.yml has no services"
    return services


def _argv(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(part) for part in value]


def _build(spec: dict[str, Any]) -> tuple[str, str] | None:
    """(context, dockerfile relative to the repository root) of a service's build, if any."""
    build = spec.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return build, str(Path(build) / "Dockerfile")
    context = str(build.get("context", "."))
    return context, str(Path(context) / build.get("dockerfile", "Dockerfile"))


def _uses_remsguard_image(spec: dict[str, Any], remsguard_images: set[str]) -> bool:
    build = _build(spec)
    if build is not None and Path(build[1]) == Path(DOCKERFILE):
        return True
    return spec.get("image") in remsguard_images


def _remsguard_images(services: dict[str, dict[str, Any]]) -> set[str]:
    return {
        str(spec["image"])
        for spec in services.values()
        if "image" in spec and (b := _build(spec)) is not None and Path(b[1]) == Path(DOCKERFILE)
    }


def _cli_problem(argv: list[str], cli: Any) -> str | None:
    """Why `argv` (the container's full command line) is not a remsguard subcommand, or None."""
    if not argv or argv[0] != "remsguard":
        return f"does not run `remsguard` (argv {argv})"
    command, path = cli, ["remsguard"]
    for token in argv[1:]:
        below = subcommands(command)
        if below is None or token.startswith("-"):
            break
        if token not in below:
            return f"`{' '.join([*path, token])}` is not a CLI command"
        command, path = below[token], [*path, token]
    if subcommands(command) is not None:
        return f"`{' '.join(path)}` is a command group, not a command"
    return None


def _remsguard_problems(compose: dict[str, Any], cli: Any) -> dict[str, str]:
    services = _services(compose)
    images = _remsguard_images(services)
    problems = {}
    for name, spec in services.items():
        if not _uses_remsguard_image(spec, images):
            continue
        # The image's ENTRYPOINT is `remsguard`; `command:` holds the subcommand and its options.
        entrypoint = _argv(spec.get("entrypoint")) or ["remsguard"]
        command = _argv(spec.get("command"))
        if not command:
            problems[name] = "has no `command:` (the image would only print --help)"
            continue
        problem = _cli_problem([*entrypoint, *command], cli)
        if problem:
            problems[name] = problem
    return problems


def test_infrastructure_services_exist(compose: dict[str, Any]) -> None:
    services = _services(compose)
    missing = [name for name in INFRASTRUCTURE if name not in services]
    assert not missing, f"missing services: {missing}"
    assert services["kafka"]["image"] == "apache/kafka:3.9.1"
    assert str(services["postgres"]["image"]).startswith("postgres:16")
    assert str(services["prometheus"]["image"]).startswith("prom/prometheus")
    assert str(services["grafana"]["image"]).startswith("grafana/grafana")
    assert "healthcheck" in services["postgres"]


def test_kafka_is_a_single_node_kraft_broker_that_supports_transactions(
    compose: dict[str, Any],
) -> None:
    env = {k: str(v) for k, v in _services(compose)["kafka"]["environment"].items()}
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node}@kafka:")


def test_every_remsguard_service_runs_an_existing_cli_command(compose: dict[str, Any]) -> None:
    problems = _remsguard_problems(compose, typer.main.get_command(app))
    assert not problems, f"remsguard services with bad commands: {problems}"


def test_the_command_check_itself_catches_bad_commands() -> None:
    """Guards the check above, which has nothing to check while compose has no remsguard service."""
    cli = typer.main.get_command(app)
    built = {"build": {"context": ".", "dockerfile": DOCKERFILE}, "image": "remsguard:local"}
    fake = {
        "services": {
            "good": {**built, "command": ["version"]},
            "good-by-image": {"image": "remsguard:local", "command": "version --help"},
            "nope": {**built, "command": "no-such-service --flag"},
            "doubled": {**built, "command": ["remsguard", "version"]},
            "bare": {**built},
            "other": {"image": "postgres:16", "command": ["no-such-service"]},
        }
    }
    assert set(_remsguard_problems(fake, cli)) == {"nope", "doubled", "bare"}


def test_the_command_check_walks_nested_groups() -> None:
    cli = typer.Typer()
    schemas = typer.Typer()
    cli.add_typer(schemas, name="schemas")

    @cli.command()
    def processor() -> None: ...

    @schemas.command()
    def register() -> None: ...

    image = {"build": {"context": ".", "dockerfile": DOCKERFILE}}
    fake = {
        "services": {
            "ok-nested": {**image, "command": "schemas register --wait"},
            "ok-top": {**image, "command": ["processor", "--port", "9400"]},
            "group-only": {**image, "command": ["schemas"]},
            "unknown-leaf": {**image, "command": ["schemas", "drop"]},
        }
    }
    problems = _remsguard_problems(fake, typer.main.get_command(cli))
    assert set(problems) == {"group-only", "unknown-leaf"}
    assert "command group" in problems["group-only"]


def test_mounted_host_paths_and_build_files_exist(compose: dict[str, Any]) -> None:
    missing = []
    for name, spec in _services(compose).items():
        for volume in spec.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            if source and source.startswith((".", "/")) and not (ROOT / source).exists():
                missing.append(f"{name}: volume {source}")
        build = _build(spec)
        if build is not None:
            context, dockerfile = build
            if not (ROOT / context).is_dir():
                missing.append(f"{name}: build context {context}")
            if not (ROOT / dockerfile).is_file():
                missing.append(f"{name}: dockerfile {dockerfile}")
    assert not missing, f"missing paths: {missing}"


def test_dependencies_name_services_of_the_file(compose: dict[str, Any]) -> None:
    services = _services(compose)
    dangling = [
        f"{name} -> {dep}"
        for name, spec in services.items()
        for dep in spec.get("depends_on", [])  # a list, or a mapping keyed by service
        if dep not in services
    ]
    assert not dangling, f"depends_on names unknown services: {dangling}"
    # The shared remsguard block is merged into services later; its dependencies must exist too.
    for dep in compose.get("x-remsguard", {}).get("depends_on", []):
        assert dep in services, f"x-remsguard depends on unknown service {dep}"


def test_dockerfile_builds_one_non_root_image_with_remsguard_entrypoint() -> None:
    text = (ROOT / DOCKERFILE).read_text()
    assert "FROM python:3.11-slim" in text
    assert "uv sync --frozen" in text
    assert "--extra" not in text and "--all-extras" not in text
    assert 'ENTRYPOINT ["remsguard"]' in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def _mount_target(spec: dict[str, Any], source: str) -> str:
    for volume in spec.get("volumes", []):
        parts = volume.split(":") if isinstance(volume, str) else []
        if parts and parts[0] == source:
            return parts[1]
    raise AssertionError(f"{source} is not mounted")


def test_prometheus_and_grafana_configs_match_their_mounts(compose: dict[str, Any]) -> None:
    services = _services(compose)

    prometheus = _load(ROOT / "deploy/prometheus/prometheus.yml")
    assert prometheus["scrape_configs"], "no scrape jobs"
    for job in prometheus["scrape_configs"]:
        assert job["job_name"]
    assert (
        _mount_target(services["prometheus"], "./deploy/prometheus/prometheus.yml")
        == "/etc/prometheus/prometheus.yml"
    )

    grafana = services["grafana"]
    assert _mount_target(grafana, "./deploy/grafana/provisioning") == "/etc/grafana/provisioning"
    datasources = _load(ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml")
    [datasource] = datasources["datasources"]
    assert datasource["uid"] == "prometheus"
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"

    providers = _load(ROOT / "deploy/grafana/provisioning/dashboards/remsguard.yml")
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == _mount_target(grafana, "./dashboards")
