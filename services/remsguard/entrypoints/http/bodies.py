"""Request bodies for the ingest routes (`POST /v1/events`, FHIR): read within a byte limit,
decoded off the event loop when large."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from fastapi import Request

__all__ = ["bounded_body", "decoded"]

T = TypeVar("T")


async def bounded_body(request: Request, limit: int, too_large: Exception) -> bytes:
    """The body, or `too_large` raised as soon as it is known to pass `limit` bytes (by its
    Content-Length, else while it streams in: no more than `limit` bytes are ever held)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


async def decoded(raw: bytes, decode: Callable[[bytes], T], off_loop_above: int) -> T:
    """`decode(raw)`, in a worker thread when `raw` is larger than `off_loop_above` bytes."""
    if len(raw) > off_loop_above:
        return await asyncio.to_thread(decode, raw)
    return decode(raw)
