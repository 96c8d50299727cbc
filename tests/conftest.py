"""Platform fixtures: a real Kafka broker and a real PostgreSQL.

Each is chosen in this order:
1. the address in ``REMSGUARD_KAFKA_BOOTSTRAP`` / ``REMSGUARD_DATABASE_URL``;
2. testcontainers, when a Docker engine answers;
3. the local services from ``deploy/kafka/kafka.sh`` / ``deploy/postgres/postgres.sh``
   (started if needed and left running: they are shared, and ``start`` is idempotent).
If none works the test fails (never skips) and says what to start.

Only platform fixtures belong here; feature fixtures go in conftest files of the subfolders.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"
POSTGRES_SH = REPO / "deploy" / "postgres" / "postgres.sh"
# The first start resolves the broker's jars with Maven or installs PostgreSQL with apt.
SCRIPT_TIMEOUT_S = 900


@functools.cache
def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _start_script(script: Path, what: str, env_var: str) -> str:
    hint = (
        f"No {what}: set {env_var}, or make a Docker engine available for testcontainers, "
        f"or start one with `bash {script.relative_to(REPO)} start`."
    )
    try:
        done = subprocess.run(
            ["bash", str(script), "start"],
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"{hint}\n`{script.name} start` did not finish: {exc}", pytrace=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-30:])
        pytest.fail(
            f"{hint}\n`{script.name} start` exited {done.returncode}:\n{tail}", pytrace=False
        )
    return lines[-1].strip()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address (host:port) of a real Kafka broker that supports transactions."""
    if address := os.environ.get("REMSGUARD_KAFKA_BOOTSTRAP"):
        yield address
    elif _docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        yield _start_script(KAFKA_SH, "Kafka broker", "REMSGUARD_KAFKA_BOOTSTRAP")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """SQLAlchemy URL (postgresql+psycopg://...) of a real PostgreSQL database."""
    if url := os.environ.get("REMSGUARD_DATABASE_URL"):
        yield url
    elif _docker_answers():
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="psycopg") as postgres:
            yield postgres.get_connection_url()
    else:
        yield _start_script(POSTGRES_SH, "PostgreSQL", "REMSGUARD_DATABASE_URL")


@pytest.fixture
def fresh_topic(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Factory of topic names unique to this test and run: ``fresh_topic()``, ``fresh_topic("x")``.

    Only the name: create the topic (or let the producer auto-create it) in the test.
    """
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:80].strip("-.") or "test"

    def make(suffix: str = "") -> str:
        tail = f"-{suffix}" if suffix else ""
        return f"{base}{tail}-{uuid.uuid4().hex[:12]}"

    return make
