"""The dashboard: the single HTML page, its static ES modules and the bundled Plotly.

Every script and style the page uses is served from here (no CDN): ``/static/*`` from the
repository's ``static/`` folder and ``/static/plotly.min.js`` from ``vendor/plotly/``:
plotly.js's strict build, whose WebGL traces draw under the page's Content-Security-Policy
(no ``'unsafe-eval'``; the Python package's bundle needs it for ``scattergl``). Include
``router`` in the app; it needs no mount.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates

from app.api.deps import SettingsDep

__all__ = ["STATIC_DIR", "TEMPLATES_DIR", "router"]

_ROOT = Path(__file__).resolve().parent.parent.parent
STATIC_DIR = _ROOT / "static"
TEMPLATES_DIR = _ROOT / "templates"
_PLOTLY_JS = _ROOT / "vendor" / "plotly" / "plotly-strict.min.js"
_MEDIA_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

_MAX_PATH = 255
_MAX_DEPTH = 8

router = APIRouter(tags=["dashboard"], include_in_schema=False)


@lru_cache(maxsize=1)
def _templates() -> Jinja2Templates:
    return Jinja2Templates(directory=str(TEMPLATES_DIR))


@router.get("/", response_class=HTMLResponse)
def index(request: Request, settings: SettingsDep) -> HTMLResponse:
    """The dashboard page (its model list starts on the server's default model)."""
    return _templates().TemplateResponse(
        request, "index.html", {"default_model": settings.default_model}
    )


@router.get("/static/plotly.min.js")
def plotly_js() -> FileResponse:
    """Plotly's strict browser bundle (vendored; see ``vendor/plotly/README.md``)."""
    return FileResponse(_PLOTLY_JS, media_type="text/javascript")


@router.get("/static/{path:path}")
def static_file(path: str) -> FileResponse:
    """A file under ``static/``; anything outside it or of an unknown kind is a 404."""
    missing = HTTPException(status_code=404, detail=f"no static file {path[:200]!r}")
    # Longer names or deeper folders than any file here, or a NUL, can only be abuse; they
    # would also make the OS refuse the lookup ("file name too long") instead of saying no.
    if len(path) > _MAX_PATH or path.count("/") > _MAX_DEPTH or "\x00" in path:
        raise missing
    try:
        target = (STATIC_DIR / path).resolve()
        media_type = _MEDIA_TYPES.get(target.suffix)
        if not target.is_relative_to(STATIC_DIR) or media_type is None or not target.is_file():
            raise missing
    except (OSError, ValueError) as exc:
        raise missing from exc
    return FileResponse(target, media_type=media_type, headers={"Cache-Control": "no-cache"})
