"""Fixtures for the observability tests: Prometheus' binaries (installed if missing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "prometheus" / "install.sh"


def _binary(name: str) -> str:
    """Path of `name` (prometheus or promtool), running deploy/prometheus/install.sh if needed."""
    found = shutil.which(name)
    if found:
        return found
    done = subprocess.run(
        ["bash", str(INSTALL)],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    found = shutil.which(name)
    if not found:
        pytest.fail(
            f"{name} is not installed and `bash deploy/prometheus/install.sh` did not install it "
            f"(exit {done.returncode}):\n{done.stderr[-3000:]}",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    return _binary("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return _binary("prometheus")
