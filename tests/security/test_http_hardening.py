"""Issue 13, finding 6 (HTTP surface): security headers on every response, API docs off by
default and never from a CDN, `/metrics` behind a token when one is set.

Real HTTP: the app is served by uvicorn on 127.0.0.1 (`http_support.serve`) and asked with
httpx. Each check has its counterpart that must not fire.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import APIRouter
from fastapi.responses import Response

from remsguard.adapters.storage import PrincipalRole
from remsguard.adapters.storage.principals import PrincipalStore
from remsguard.config import Settings
from remsguard.embedded.container import EmbeddedContainer, ensure_first_run_tokens
from remsguard.entrypoints.api import ApiContainer
from remsguard.entrypoints.http import create_app
from remsguard.entrypoints.http.app import surface_line
from remsguard.entrypoints.http.docs import swagger_ui_files
from remsguard.entrypoints.http.security import CONTENT_SECURITY_POLICY

from .http_support import serve

EXPECTED = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
STATIC = resources.files("remsguard.entrypoints.http") / "static"

_extra = APIRouter()


@_extra.get("/test/boom")
async def boom() -> Response:
    raise RuntimeError("an unhandled error")


@_extra.get("/test/framable")
async def framable() -> Response:
    return Response(b"ok", headers={"X-Frame-Options": "SAMEORIGIN"})


@contextmanager
def api(tmp_path: Path, **settings: Any) -> Iterator[tuple[str, dict[str, str]]]:
    """`create_app(ApiContainer)` over a fresh SQLite log (plus the test routes), served."""
    url = f"sqlite:///{tmp_path / f'log-{len(list(tmp_path.iterdir()))}.db'}"
    container = ApiContainer.open(Settings(database_url=url, **settings), check_deadlines=False)
    store = PrincipalStore(container.compliance)
    tokens = {
        who: store.create(who, role, by="test")[1]
        for who, role in (("admin", PrincipalRole.ADMIN), ("device", PrincipalRole.DEVICE))
    }
    with serve(create_app(container, [_extra])) as base:
        yield base, tokens


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _assert_hardened(response: httpx.Response) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get_list(name) == [value], (response.url, name, response.headers)


# -- security headers ----------------------------------------------------------------------


def test_every_response_carries_the_security_headers(tmp_path: Path) -> None:
    with api(tmp_path) as (base, tokens), httpx.Client(base_url=base, timeout=30) as http:
        cases = [
            (http.get("/healthz"), 200),
            (http.get("/v1/alerts", headers=_bearer(tokens["admin"])), 200),
            (http.get("/v1/alerts"), 401),
            (http.get("/v1/alerts", headers=_bearer("rg_unknown")), 401),
            (http.get("/v1/alerts", headers=_bearer(tokens["device"])), 403),
            (http.get("/no/such/path"), 404),
            (http.get("/console/static/nope.js"), 404),
            (http.post("/healthz"), 405),
            (http.get("/v1/alerts", params={"limit": "x"}, headers=_bearer(tokens["admin"])), 422),
            (http.get("/test/boom"), 500),  # Starlette's error middleware answers this one
            (http.get("/v1/stream", headers=_bearer(tokens["admin"])), 503),  # no console here
            (http.get("/console"), 200),
            (http.get("/console/static/dom.js"), 200),
            (http.get("/console/static/console.js"), 200),
            (http.get("/console/static/console.css"), 200),
            (http.get("/metrics"), 200),
        ]
        for response, status in cases:
            assert response.status_code == status, (response.url, response.text[:200])
            _assert_hardened(response)
        # A route that sets one of them itself keeps its own value (and gets no second one).
        own = http.get("/test/framable")
        assert own.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
        assert own.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_the_embedded_console_and_its_live_stream_are_hardened(tmp_path: Path) -> None:
    """Embedded mode's app: /console, and `GET /v1/stream` still streams through the
    middleware (the first event arrives while the response is open)."""
    data = tmp_path / "data"
    container = EmbeddedContainer.open(Settings(), data)
    ensure_first_run_tokens(data, container.compliance)
    admin = dict(
        line.split(": ", 1) for line in (data / "first-run-tokens.txt").read_text().splitlines()
    )["admin"]
    with serve(create_app(container)) as base, httpx.Client(base_url=base, timeout=30) as http:
        page = http.get("/console")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        _assert_hardened(page)
        with http.stream("GET", "/v1/stream", headers=_bearer(admin)) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            _assert_hardened(stream)
            first = b""
            for chunk in stream.iter_bytes():
                first += chunk
                if b"\n\n" in first:
                    break
        assert first.startswith(b"event: hello"), first[:200]


class _Markup(HTMLParser):
    """What a strict CSP would block in a page: inline scripts, styles, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {k for k, _ in attrs}
        if tag == "style":
            self.problems.append("<style> element")
        if "style" in names:
            self.problems.append(f"style attribute on <{tag}>")
        self.problems += [f"{k} handler on <{tag}>" for k in names if k.startswith("on")]
        if tag == "script":
            src = dict(attrs).get("src")
            if not src:
                self.problems.append("inline <script>")
            else:
                self.scripts.append(src)
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("script body")


@pytest.mark.parametrize("page", ["console.html", "docs.html"])
def test_pages_need_no_inline_script_or_style(page: str) -> None:
    markup = _Markup()
    markup.feed((STATIC / page).read_text(encoding="utf-8"))
    assert markup.problems == []
    assert markup.scripts and all(
        s.startswith("/") and not s.startswith("//") for s in markup.scripts
    )
    # and the parser does flag what the policy would block
    bad = _Markup()
    bad.feed('<div style="x" onclick="y"></div><script>alert(1)</script><style></style>')
    assert len(bad.problems) == 5


@pytest.mark.parametrize("name", ["dom.js", "console.js", "session.js"])
def test_the_console_scripts_build_no_markup_from_strings(name: str) -> None:
    script = (STATIC / name).read_text(encoding="utf-8")
    for construct in ("innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function"):
        assert construct not in script
    assert not re.search(r"""setAttribute\(\s*["']style""", script)


# -- API docs ------------------------------------------------------------------------------


def test_api_docs_are_off_by_default(tmp_path: Path) -> None:
    with api(tmp_path) as (base, tokens), httpx.Client(base_url=base, timeout=30) as http:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/docs.js"):
            response = http.get(path, headers=_bearer(tokens["admin"]))
            assert response.status_code == 404, path
            _assert_hardened(response)


def test_api_docs_when_turned_on_are_served_from_the_package(tmp_path: Path) -> None:
    files = swagger_ui_files()
    with (
        api(tmp_path, http_docs=True) as (base, _),
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        spec = http.get("/openapi.json")
        assert (
            spec.status_code == 200 and "/v1/audit/records" in orjson.loads(spec.content)["paths"]
        )
        assert http.get("/redoc").status_code == 404  # no offline ReDoc: never served
        page = http.get("/docs")
        if files is None:  # Swagger UI's files are not installed: the document only
            assert page.status_code == 404
            return
        assert page.status_code == 200
        _assert_hardened(page)
        assert (
            "http://" not in page.text
            and "https://" not in page.text
            and "//" not in "".join(re.findall(r'(?:src|href)="([^"]*)"', page.text))
        )
        markup = _Markup()
        markup.feed(page.text)
        assert markup.problems == []
        for src in [*markup.scripts, *re.findall(r'href="([^"]+)"', page.text)]:
            asset = http.get(src)
            assert asset.status_code == 200 and asset.content, src
            _assert_hardened(asset)
        assert http.get("/docs/assets/index.html").status_code == 404  # only the listed files


# -- /metrics ------------------------------------------------------------------------------


def test_metrics_need_the_token_when_one_is_set(tmp_path: Path) -> None:
    with (
        api(tmp_path, metrics_token="m3trics-s3cret") as (base, tokens),
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        for headers in (
            {},
            _bearer("wrong"),
            _bearer("m3trics-s3cre"),
            _bearer(tokens["admin"]),  # an API token is not the metrics token
            {"Authorization": "Basic m3trics-s3cret"},
        ):
            refused = http.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert b"remsguard_" not in refused.content
            _assert_hardened(refused)
        allowed = http.get("/metrics", headers=_bearer("m3trics-s3cret"))
        assert allowed.status_code == 200 and b"# TYPE" in allowed.content
        assert http.get("/healthz").status_code == 200  # probes stay open


def test_metrics_stay_open_without_a_token(tmp_path: Path) -> None:
    with api(tmp_path) as (base, _), httpx.Client(base_url=base, timeout=30) as http:
        response = http.get("/metrics")
        assert response.status_code == 200 and b"# TYPE" in response.content


def test_up_says_whether_metrics_are_protected_and_docs_on() -> None:
    base = "http://127.0.0.1:8400"
    closed = surface_line(Settings(), base)
    assert "/metrics (open)" in closed and "API docs off" in closed
    guarded = surface_line(Settings(metrics_token="x", http_docs=True), base)
    assert "/metrics (token required)" in guarded and "docs off" not in guarded
    assert f"{base}/openapi.json" in guarded or f"{base}/docs" in guarded
