"""HTTP hardening: security headers on every response, and the `/metrics` token check.

`SecurityHeaders` is a pure ASGI middleware (it only adds headers to `http.response.start`, so
streamed bodies such as `GET /v1/stream` pass through untouched). `create_app` puts it outside
every other layer, Starlette's error middleware included, so the headers are on 2xx, 4xx and
500 responses alike. A route that sets one of these headers itself keeps its own value. An
error that escapes after its 500 was sent is logged here rather than handed to uvicorn, which
would drop the connection before the client read the 500.

The Content-Security-Policy allows scripts, styles, fetches and images from this origin only
(and `data:` images), no inline script or style, no framing, no `<base>`; the console and the
API docs page load their script and styles as files for that reason.
"""

from __future__ import annotations

import hmac
from typing import Final

import structlog
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from remsguard.entrypoints.http.errors import ApiError

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "SECURITY_HEADERS",
    "SecurityHeaders",
    "require_metrics_token",
]

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
log = structlog.get_logger(__name__)
_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="remsguard-metrics"'}


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every HTTP response the wrapped app sends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        answered = False

        async def send_with_headers(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                answered = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if not answered:
                raise
            # Starlette's error middleware answered 500 and re-raised for the server to log;
            # uvicorn would then drop the connection under the client, 500 unread. Log it here.
            log.exception("unhandled error (answered 500)", path=scope.get("path"))


def require_metrics_token(request: Request) -> None:
    """With `REMSGUARD_METRICS_TOKEN` set, `/metrics` needs `Authorization: Bearer <it>`
    (compared in constant time); unset (or empty), `/metrics` is open."""
    secret = request.app.state.container.settings.metrics_token
    expected = b"" if secret is None else secret.get_secret_value().encode()
    if not expected:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise ApiError(
            401,
            "unauthenticated",
            "/metrics needs Authorization: Bearer <REMSGUARD_METRICS_TOKEN>",
            _CHALLENGE,
        )
