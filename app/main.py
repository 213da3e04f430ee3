"""The FastAPI application: ``uvicorn --factory app.main:create_app``."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api import (
    boxes,
    datasets,
    distances,
    docs,
    embeddings,
    extractions,
    formats,
    health,
    heatmaps,
    images,
    jobs,
    models,
    pages,
    predictions,
    separation,
    trainings,
)
from app.api.deps import require_token
from app.api.errors import install_error_handlers
from app.config import Settings, get_settings
from app.http import AllowedHosts, BodyLimits, SameOriginWrites, SecurityHeaders, TokenGate
from app.jobs import JobRunner
from app.service.results import drop_stale_results
from app.service.runtime import apply_torch_threads
from app.store import Store

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app: store, job runner, error handlers, edge middleware and every router.

    Args:
        settings: the settings to use; default: read from the environment.

    Returns:
        The application; every ``/api`` route needs the Bearer token when
        ``FEATUREGAP_API_TOKEN`` is set, and without one only this server's pages (or
        ``FEATUREGAP_ALLOWED_ORIGINS``) may change data.

    Raises:
        SchemaMismatchError: the store was written by another schema version.
    """
    settings = settings or get_settings()
    apply_torch_threads(settings)
    store = Store(settings)
    drop_stale_results(store)
    runner = JobRunner(store, settings.workers, settings.queue_limit)  # marks interrupted jobs

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Half a million objects from torch's, timm's and the app's imports live as long as
        # the process. Frozen, no full collection walks them again: a walk over them took
        # tenths of a second and landed at random inside requests (bench_extraction's timed
        # distance calls on 10k boxes freeze them the same way).
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()  # an app made and closed in a longer process (tests) is collectable
            runner.shutdown()
            store.close()

    app = FastAPI(
        title="FeatureGap",
        summary="See what an image network's layer sees inside the boxes you draw.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served from local files by app.api.docs
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.jobs = runner
    install_error_handlers(app)
    # add_middleware wraps: the last added runs first. Order of a request, outside in:
    # headers, Host, CORS, Origin, token (no body read yet), body limits, the routes.
    app.add_middleware(
        BodyLimits,
        max_upload_bytes=settings.max_upload_bytes,
        upload_limits={
            "/api/import/zip": (settings.max_zip_upload_bytes, "FEATUREGAP_MAX_ZIP_UPLOAD_BYTES")
        },
        max_json_bytes=settings.max_json_bytes,
        max_json_depth=settings.max_json_depth,
    )
    app.add_middleware(TokenGate, token=settings.api_token)
    if not settings.api_token:
        app.add_middleware(SameOriginWrites, allowed=settings.origins)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(AllowedHosts, hosts=settings.hosts)
    app.add_middleware(SecurityHeaders)
    protected = [Depends(require_token)]
    api_routers: list[APIRouter] = [
        health.router,
        models.router,
        images.router,
        boxes.router,
        formats.router,
        jobs.router,
        heatmaps.router,
        predictions.router,
        distances.router,
        separation.router,
        embeddings.router,
        datasets.router,
        extractions.router,
        trainings.router,
    ]
    for router in api_routers:
        app.include_router(router, dependencies=protected)
    app.include_router(pages.router)  # the dashboard: no token, it asks for one itself
    app.include_router(docs.router)
    if settings.demo:
        from app.demo import load_demo

        load_demo(store)
    return app
