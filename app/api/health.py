"""Liveness and version."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.api.deps import StoreDep
from app.store import SCHEMA_VERSION

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["health"])


class Health(BaseModel):
    """The service is up and its store answers."""

    status: str
    version: str
    schema_version: int
    images: int


@router.get("/health", response_model=Health)
def health(store: StoreDep) -> Health:
    """Say the service is up, with its version and the number of stored images."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        app_version = version("featuregap")
    except PackageNotFoundError:
        app_version = "unknown"
    return Health(
        status="ok", version=app_version, schema_version=SCHEMA_VERSION, images=store.count_images()
    )
