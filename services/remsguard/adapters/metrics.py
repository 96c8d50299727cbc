"""Prometheus plumbing: an explicit registry per process and the ways to expose it.

Metric families take the registry as an argument (never prometheus_client's global
default), so each test builds a fresh one with `new_registry()`.
"""

from __future__ import annotations

import socket
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_asgi_app, make_wsgi_app
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "MetricsServer",
    "PerMessageCounter",
    "PerMessageHistogram",
    "metrics_asgi_app",
    "new_registry",
    "serve_metrics",
]

# The families below are for what is counted once per message or event. prometheus_client's
# own take a lock and check their state on every call (0.6-0.7 µs warm, and more in a busy
# worker whose caches they share: the Kafka worker's per-message counting cost ~16 µs of its
# ~175 µs per event against faust's floor, docs/PERFORMANCE.md). These keep plain numbers
# and build their families when scraped. One thread updates them (the event loop's); a
# scrape from another thread reads numbers that are at most one update behind.


class _Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class PerMessageCounter(Collector):
    """A counter with labels (`labels(*values).inc()`), exposed as `<name>_total`. Its
    `_name`, `_type` and `_labelnames` are those a prometheus_client metric has (the
    dashboards' lint reads them from every family of the catalogue)."""

    _type = "counter"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name.removesuffix("_total")
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], _Count] = {}
        registry.register(self)

    def labels(self, *values: str) -> _Count:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name}: labels {self._labelnames}, got {values}")
            child = self._children[values] = _Count()
        return child

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.value)
        yield family


class PerMessageHistogram(Collector):
    """A histogram without labels. `observe` bisects into a list of counts (0.1 µs against
    0.6 µs warm for prometheus_client's); the count scraped is the buckets' total, so it
    never disagrees with them."""

    _type = "histogram"
    _labelnames: tuple[str, ...] = ()

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last: above every bound
        self._sum = 0.0
        registry.register(self)

    def observe(self, amount: float) -> None:
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def collect(self) -> Iterator[Metric]:
        counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
            running += count
            cumulative.append((_le(bound), float(running)))
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=cumulative, sum_value=total
        )


def _le(bound: float) -> str:
    """A bucket's `le` label as prometheus_client writes it (`0.001`, `1.0`, `+Inf`)."""
    return "+Inf" if bound == float("inf") else repr(bound)


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
