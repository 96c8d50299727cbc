"""serve_metrics: a real HTTP server on 127.0.0.1 serving a fresh registry."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from remsguard.adapters.metrics import metrics_asgi_app, new_registry, serve_metrics


def _get(port: int, path: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def test_counter_shows_in_metrics_and_healthz_is_ok() -> None:
    registry = new_registry()
    events = Counter(
        "remsguard_test_events_consumed", "Events consumed.", ["topic"], registry=registry
    )
    events.labels(topic="sessions").inc(3)

    server = serve_metrics(registry, "127.0.0.1", 0)
    try:
        assert server.port > 0
        status, content_type, body = _get(server.port, "/metrics")
        assert status == 200
        assert content_type.startswith("text/plain")
        assert _samples(body, "remsguard_test_events_consumed_total") == {
            (("topic", "sessions"),): 3.0
        }

        events.labels(topic="sessions").inc()
        _, _, body = _get(server.port, "/metrics")
        assert _samples(body, "remsguard_test_events_consumed_total") == {
            (("topic", "sessions"),): 4.0
        }

        assert _get(server.port, "/healthz")[::2] == (200, "ok")
        with pytest.raises(urllib.error.HTTPError) as missing:
            _get(server.port, "/nothing-here")
        assert missing.value.code == 404
    finally:
        server.close()


def test_fresh_registries_do_not_share_metrics() -> None:
    first, second = new_registry(), new_registry()
    Counter("remsguard_test_only_in_first", "Only in the first.", registry=first).inc()
    with serve_metrics(second, "127.0.0.1", 0) as server:
        _, _, body = _get(server.port, "/metrics")
    assert "remsguard_test_only_in_first" not in body


def test_close_frees_the_port() -> None:
    server = serve_metrics(new_registry(), "127.0.0.1", 0)
    port = server.port
    server.close()
    server.close()  # idempotent

    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    again = serve_metrics(new_registry(), "127.0.0.1", port)
    try:
        assert again.port == port
        assert _get(port, "/healthz")[0] == 200
    finally:
        again.close()


def test_asgi_app_serves_the_registry() -> None:
    registry = new_registry()
    Counter("remsguard_test_asgi", "ASGI.", registry=registry).inc(2)
    app = metrics_asgi_app(registry)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    asyncio.run(app(scope, receive, send))

    assert sent[0]["status"] == 200
    assert _samples(sent[1]["body"].decode(), "remsguard_test_asgi_total") == {(): 2.0}
