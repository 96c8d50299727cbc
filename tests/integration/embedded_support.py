"""Running `remsguard up` as a real process on 127.0.0.1 for the embedded-mode tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

NDJSON = "application/x-ndjson"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
# Lifecycle fields `GET /v1/alerts` adds after the outbound alert JSON.
LIFECYCLE = ("status", "acknowledged_by", "acknowledged_at", "resolved_by", "resolved_at")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def remsguard(
    *args: str, timeout: float = 120.0, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run one `remsguard` command to completion (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "remsguard", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
        **kwargs,
    )


def read_tokens(data_dir: Path) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for line in (data_dir / "first-run-tokens.txt").read_text().splitlines():
        name, _, token = line.partition(": ")
        tokens[name] = token
    return tokens


def core_alert(alert: Mapping[str, Any]) -> dict[str, Any]:
    """An alert of `GET /v1/alerts` without its lifecycle fields: the replay JSON."""
    return {k: v for k, v in alert.items() if k not in LIFECYCLE}


@dataclass
class Up:
    """One `remsguard up` process; `stop()` (SIGTERM) or `kill()` (SIGKILL) ends it."""

    data_dir: Path
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30.0))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tokens(self) -> dict[str, str]:
        return read_tokens(self.data_dir)

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"remsguard up exited {self.process.returncode}:\n{self.log}")
            try:
                if self.client.get(f"{self.base}/healthz", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"remsguard up not healthy within {timeout}s:\n{self.log}")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def post(self, body: bytes, content_type: str = NDJSON, role: str = "device") -> httpx.Response:
        headers = {"Content-Type": content_type, **self.auth(role)}
        return self.client.post(f"{self.base}/v1/events", content=body, headers=headers)

    def alerts(self, role: str = "admin", **params: Any) -> list[dict[str, Any]]:
        """Every alert matching `params`, following cursors."""
        out: list[dict[str, Any]] = []
        query = {"limit": 10_000, **params}
        for _ in range(1000):
            response = self.client.get(
                f"{self.base}/v1/alerts", params=query, headers=self.auth(role)
            )
            assert response.status_code == 200, response.text
            page = response.json()
            out.extend(page["alerts"])
            if page["next_cursor"] is None:
                return out
            query["cursor"] = page["next_cursor"]
        raise AssertionError("more than 1000 pages")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.client.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_S)
        self.client.close()


def start_up(
    data_dir: Path,
    *,
    port: int | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    wait: bool = True,
) -> Up:
    port = free_port() if port is None else port
    log_path = data_dir.parent / f"{data_dir.name}-up-{time.monotonic_ns()}.log"
    # Tests not about the REMS gate run without it (their sessions' patients are not
    # enrolled); a test of the gate passes REMSGUARD_REMS_GATE=true in `env`.
    environment = {
        **os.environ,
        "REMSGUARD_LOG_FORMAT": "json",
        "REMSGUARD_REMS_GATE": "false",
        **(env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "remsguard",
                "up",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
        )
    up = Up(data_dir, port, log_path, process)
    if wait:
        try:
            up.wait_healthy()
        except BaseException:
            up.kill()
            raise
    return up


def batches(lines: Sequence[bytes], size: int) -> Iterator[list[bytes]]:
    for start in range(0, len(lines), size):
        yield list(lines[start : start + size])


def ndjson(lines: Sequence[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def event(
    type_: str, event_id: str, session: str, at: str, data: Mapping[str, Any], clinic: str = "c1"
) -> bytes:
    return orjson.dumps(
        {
            "type": type_,
            "event_id": event_id,
            "session_id": session,
            "clinic_id": clinic,
            "occurred_at": at,
            "data": dict(data),
        }
    )
