"""Errors the HTTP layer answers with, as `{"error": CODE, "message": TEXT}`."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from remsguard.embedded.ingest import BodyError

__all__ = ["ApiError", "error_response", "install_error_handlers"]


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps({"error": code, "message": message}),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    async def body_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BodyError)
        return error_response(exc.status, exc.code, exc.message)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(BodyError, body_error)
