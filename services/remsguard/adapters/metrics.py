"""Prometheus plumbing: an explicit registry per process and the ways to expose it.

Metric families take the registry as an argument (never prometheus_client's global
default), so each test builds a fresh one with `new_registry()`.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_asgi_app, make_wsgi_app

__all__ = ["MetricsServer", "metrics_asgi_app", "new_registry", "serve_metrics"]

_StartResponse = Callable[..., Any]
_WSGIApp = Callable[[dict[str, Any], _StartResponse], Iterable[bytes]]


def new_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


def metrics_asgi_app(registry: CollectorRegistry) -> Callable[..., Any]:
    """An ASGI app serving `registry` in the Prometheus text format (mount at /metrics)."""
    return make_asgi_app(registry=registry)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the logs."""


Health = Callable[[], str | None]
"""None: healthy; else one line saying what is wrong (served as a 503)."""

_TEXT = ("Content-Type", "text/plain; charset=utf-8")  # a fresh list per response: wsgiref
# appends Content-Length to the list it is given


def _index(title: str) -> bytes:
    return (
        f"<!doctype html><meta charset=utf-8><title>{title}</title><h1>{title}</h1><ul>"
        '<li><a href="/metrics">/metrics</a>: Prometheus metrics (see docs/METRICS.md)</li>'
        '<li><a href="/healthz">/healthz</a>: 200 ok while the worker is doing its job, '
        "503 and the reason otherwise</li></ul>"
    ).encode()


def _router(metrics_app: _WSGIApp, health: Health | None, title: str) -> _WSGIApp:
    def app(environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            problem = health() if health is not None else None
            if problem is not None:
                start_response("503 Service Unavailable", [_TEXT])
                return [f"unhealthy: {problem}".encode()]
            start_response("200 OK", [_TEXT])
            return [b"ok"]
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [_index(title)]
        start_response("404 Not Found", [_TEXT])
        return [b"not found: try / for what is served here"]

    return app


class MetricsServer:
    """A running `/metrics` + `/healthz` server; `close()` stops it and frees the port."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.host: str = str(server.server_address[0])
        self.port: int = int(server.server_address[1])

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def serve_metrics(
    registry: CollectorRegistry,
    host: str,
    port: int,
    *,
    health: Health | None = None,
    title: str = "remsguard",
) -> MetricsServer:
    """Serve `registry` at http://host:port/metrics in a daemon thread, `/healthz` (from
    `health`, always ok without one) and a small index at `/`; port 0 picks a free one."""
    server_class = _ThreadingWSGIServer
    if ":" in host:  # an IPv6 literal such as "::"

        class _V6(_ThreadingWSGIServer):
            address_family = socket.AF_INET6

        server_class = _V6
    server = make_server(
        host,
        port,
        _router(make_wsgi_app(registry=registry), health, title),
        server_class=server_class,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name=f"metrics-http-{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return MetricsServer(server, thread)
