"""Swagger UI and ReDoc from local files (the ``fastapi-offline`` package), so /docs works offline.

FastAPI's own pages load their scripts from a CDN. These serve the same pages with the
bundles shipped inside the ``fastapi_offline`` wheel under ``/docs-assets/``, and give each
page a Content-Security-Policy that allows exactly its inline start-up script (by hash)
and the inline styles both UIs inject; the dashboard's stricter policy stays everywhere
else.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse

__all__ = ["ASSETS", "router"]

_ASSET_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
"""The files under ``/docs-assets/`` and their media types."""

_PREFIX = "/docs-assets"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)

router = APIRouter(tags=["docs"], include_in_schema=False)


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    """The page with a CSP that admits its own inline scripts by hash and nothing else."""
    html = bytes(page.body).decode()
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    policy = "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' {hashes}".strip(),
            "style-src 'self' 'unsafe-inline'",  # both UIs set inline styles (ReDoc: CSS-in-JS)
            "img-src 'self' data: blob:",
            "worker-src 'self' blob:",  # ReDoc's search index runs in a blob: worker
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return HTMLResponse(html, headers={"Content-Security-Policy": policy})


def _ui_page(
    request: Request, build: Callable[..., HTMLResponse], ui: str, **paths: str
) -> HTMLResponse:
    """``build``'s page over this server's OpenAPI schema, titled for ``ui``, under its CSP.

    Args:
        request: the request, for the app's title and schema URL and the root path.
        build: FastAPI's page builder (``get_swagger_ui_html``, ``get_redoc_html``).
        ui: the UI's name, after the app's title.
        paths: the builder's URL arguments as server paths; each gets the root path.
    """
    root = request.scope.get("root_path", "")
    return _with_policy(
        build(
            openapi_url=f"{root}{request.app.openapi_url}",
            title=f"{request.app.title} - {ui}",
            **{name: f"{root}{path}" for name, path in paths.items()},
        )
    )


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over this server's OpenAPI schema."""
    return _ui_page(
        request,
        get_swagger_ui_html,
        "Swagger UI",
        oauth2_redirect_url="/docs/oauth2-redirect",
        swagger_js_url=f"{_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{_PREFIX}/favicon.png",
    )


@router.get("/docs/oauth2-redirect")
def swagger_ui_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page."""
    return _with_policy(get_swagger_ui_oauth2_redirect_html())


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    """ReDoc over this server's OpenAPI schema."""
    return _ui_page(
        request,
        partial(get_redoc_html, with_google_fonts=False),
        "ReDoc",
        redoc_js_url=f"{_PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{_PREFIX}/favicon.png",
    )


@router.get(_PREFIX + "/{name}")
def asset(name: str) -> FileResponse:
    """One of the bundled Swagger UI / ReDoc files."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(
            status_code=404, detail=f"no docs asset {name[:100]!r}; there are {sorted(ASSETS)}"
        )
    return FileResponse(
        _ASSET_DIR / name, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"}
    )
