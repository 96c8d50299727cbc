"""Issue 15 item 10: docs/RUNNING-ON-KAFKA.md followed verbatim. Every `bash` block of the
runbook runs, in order, in one shell; only the values of step 0's `export` lines are the
test's own (its broker, database, prefix, app id and free ports)."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .processor_kit import _delete_topics

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

RUNBOOK = Path(__file__).parents[2] / "docs" / "RUNNING-ON-KAFKA.md"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def runbook_script(values: dict[str, str]) -> str:
    """The runbook's bash blocks, with `export NAME=...` values replaced from `values`."""
    blocks = re.findall(r"```bash\n(.*?)```", RUNBOOK.read_text(), flags=re.S)
    assert len(blocks) >= 8, "the runbook lost its steps"

    def export(match: re.Match[str]) -> str:
        pairs = []
        for pair in shlex.split(match.group(1)):
            name, _, value = pair.partition("=")
            pairs.append(f"{name}={shlex.quote(values.get(name, value))}")
        return "export " + " ".join(pairs)

    script = "\n".join(re.sub(r"^export (.+)$", export, b, flags=re.M) for b in blocks)
    missing = [name for name in values if f"{name}=" not in script]
    assert not missing, missing
    return "set -euo pipefail\nset -x\n" + script


def test_the_runbook_from_an_empty_cluster_to_alerts(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    name = f"rb{uuid.uuid4().hex[:8]}"
    values = {
        "REMSGUARD_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "REMSGUARD_DATABASE_URL": database_url,
        "REMSGUARD_TOPIC_PREFIX": f"{name}-",
        "REMSGUARD_PROCESSOR_APP_ID": f"{name}-app",
        "REMSGUARD_TOPIC_PARTITIONS": "3",
        "PROCESSOR_METRICS_PORT": str(_free_port()),
        "SINK_METRICS_PORT": str(_free_port()),
        "NOTIFIER_METRICS_PORT": str(_free_port()),
        "REMSGUARD_API_PORT": str(_free_port()),
        "ADMIN_NAME": f"{name}-ops",  # the database outlives one run of the suite
    }
    script = runbook_script(values)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        REMSGUARD_CLOCK_IDLE_GRACE_SECONDS="1",
        REMSGUARD_CLOCK_TICK_SECONDS="0.25",
        REMSGUARD_LOG_LEVEL="warning",
    )
    process = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(_tail(output, tmp_path)) from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        _delete_topics(kafka_bootstrap, f"{name}-")
    assert process.returncode == 0, _tail(output, tmp_path)
    assert "dead letters on" in output.decode(errors="replace")


def _tail(output: bytes, where: Path) -> str:
    logs = "".join(
        f"\n--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        for log in sorted(where.glob("*.log"))
    )
    return output.decode(errors="replace")[-4000:] + logs
