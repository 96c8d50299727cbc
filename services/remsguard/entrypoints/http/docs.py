"""The API docs, off unless `REMSGUARD_HTTP_DOCS=true`, and then served from this process only.

- `GET /openapi.json`: the OpenAPI document (FastAPI's; on with the setting).
- `GET /docs`: Swagger UI, when its files are installed (the `swagger-ui-bundle-v2` package,
  importable as `swagger_ui_bundle`): the page, Swagger UI's script and stylesheet and our
  small start-up script are all served from here, never from a CDN (clinic networks are often
  offline), and no script is inline (the Content-Security-Policy forbids it). Without the
  package `/docs` answers 404 and only `/openapi.json` is served.
- `/redoc` is never served (no offline copy of ReDoc ships with the package).
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from typing import Final

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from remsguard.entrypoints.http.errors import ApiError

__all__ = ["OPENAPI_URL", "docs_router", "swagger_ui_files"]

OPENAPI_URL: Final = "/openapi.json"
_STATIC: Final = resources.files("remsguard.entrypoints.http") / "static"
_BUNDLE_FILES: Final = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
}
_OWN_FILES: Final = {"docs.js": "text/javascript; charset=utf-8"}


def swagger_ui_files() -> Traversable | None:
    """The folder of Swagger UI's files from the installed package, or None."""
    try:
        vendor = resources.files("swagger_ui_bundle") / "vendor"
    except ModuleNotFoundError:
        return None
    if not vendor.is_dir():
        return None
    folders = sorted(
        (d for d in vendor.iterdir() if d.is_dir() and d.name.startswith("swagger-ui-")),
        key=lambda d: d.name,
    )
    for folder in reversed(folders):
        if all((folder / name).is_file() for name in _BUNDLE_FILES):
            return folder
    return None


def docs_router(files: Traversable) -> APIRouter:
    """`/docs` and its assets, from Swagger UI's folder `files`."""
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    async def page() -> HTMLResponse:
        return HTMLResponse(
            (_STATIC / "docs.html").read_text(encoding="utf-8"),
            headers={"Cache-Control": "no-cache"},
        )

    @router.get("/docs/assets/{name}")
    async def asset(name: str) -> Response:
        if name in _BUNDLE_FILES:
            body, media = (files / name).read_bytes(), _BUNDLE_FILES[name]
        elif name in _OWN_FILES:
            body, media = (_STATIC / name).read_bytes(), _OWN_FILES[name]
        else:
            raise ApiError(404, "not_found", f"no file {name!r}")
        return Response(body, media_type=media, headers={"Cache-Control": "no-cache"})

    return router
