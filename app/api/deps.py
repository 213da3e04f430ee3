"""Lookups and checks many routes share, written once as ``Annotated`` dependencies."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.api.schemas import ErrorOut, JobAccepted
from app.config import Settings
from app.engine.models import LoadedModel, get_model
from app.http.auth import TOKEN_MESSAGE
from app.jobs import Cancelled, JobRunner
from app.service.budgets import Estimate
from app.service.features import check_limits
from app.store import BoxRecord, ImageRecord, Store

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "SettingsDep",
    "StoreDep",
    "SessionDep",
    "ImageDep",
    "BoxDep",
    "ModelDep",
    "JobsDep",
    "Pool",
    "PoolDep",
    "MAX_ID",
    "require_token",
    "get_store",
    "get_settings_dep",
    "get_jobs",
    "ERRORS",
    "QUEUED",
    "Work",
    "answer_or_queue",
    "precheck",
    "load_model",
    "checked_answer",
    "Plan",
    "service_request",
    "Analyses",
    "AnalysesDep",
]

T = TypeVar("T")
R = TypeVar("R", bound="DataclassInstance")
_DISCONNECT_POLL_S = 0.25


# The lookups below only read app.state: ``async def`` runs them on the event loop, where a
# plain ``def`` dependency costs a hop to the thread pool and back on every request (a fifth
# of /api/health's time in a py-spy profile).


async def get_settings_dep(request: Request) -> Settings:
    """The app's settings (fixed when the app was created)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> Store:
    """The app's store."""
    store: Store = request.app.state.store
    return store


async def get_jobs(request: Request) -> JobRunner:
    """The app's job runner."""
    jobs: JobRunner = request.app.state.jobs
    return jobs


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[Store, Depends(get_store)]
JobsDep = Annotated[JobRunner, Depends(get_jobs)]


class Pool:
    """A request's door to the worker pool: its work runs on a worker while the event loop
    only awaits it, so queued requests hold no server thread and ``/api/health`` keeps
    answering; a client that disconnects cancels its work.

    Args:
        jobs: the app's runner (its bound answers 503 when full).
        request: the request whose client is watched.
    """

    def __init__(self, jobs: JobRunner, request: Request) -> None:
        self.jobs, self.request = jobs, request

    async def run(self, work: Callable[[Cancelled], T]) -> T:
        """Run ``work(cancelled)`` on the pool and return its result (or raise its error).

        Raises:
            PoolBusy: the pool is full (503). HTTPException: 499 when the client left.
        """
        future, cancel = self.jobs.call(work)
        waiting = asyncio.wrap_future(future)
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=_DISCONNECT_POLL_S)
                if done:
                    return waiting.result()
                if await self.request.is_disconnected():
                    raise HTTPException(
                        status_code=499,
                        detail="the client closed the connection; its work was cancelled",
                    )
        finally:
            if not waiting.done():  # the client left or the server stops: stop the work
                cancel.set()
                waiting.cancel()


async def _pool(jobs: JobsDep, request: Request) -> Pool:
    return Pool(jobs, request)


PoolDep = Annotated[Pool, Depends(_pool)]


def _session(store: StoreDep) -> Iterator[Session]:
    with store.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(_session)]


MAX_ID = 2**63 - 1
"""The largest id a store can hold (SQL BIGINT)."""


def _image(store: StoreDep, image_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> ImageRecord:
    try:
        return store.get_image(image_id)
    except KeyError as exc:
        raise HTTPException(status_code=404, detail=exc.args[0]) from exc


def _box(store: StoreDep, box_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> BoxRecord:
    try:
        return store.get_box(box_id)
    except KeyError as exc:
        raise HTTPException(status_code=404, detail=exc.args[0]) from exc


ImageDep = Annotated[ImageRecord, Depends(_image)]
BoxDep = Annotated[BoxRecord, Depends(_box)]


def load_model(settings: Settings, name: str | None) -> LoadedModel:
    """The model a request names, or the server's default (``FEATUREGAP_DEFAULT_MODEL``).

    Raises:
        KeyError: unknown model (the message lists the known ones; answered with 404).
    """
    return get_model(name or settings.default_model, settings.models_dir)


def _model(
    model: Annotated[str, Path(min_length=1, max_length=200)], settings: SettingsDep
) -> LoadedModel:
    # KeyError (unknown name, listing the known ones) becomes 404 in app.api.errors.
    return load_model(settings, model)


ModelDep = Annotated[LoadedModel, Depends(_model)]

_bearer = HTTPBearer(auto_error=False)


async def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """With ``FEATUREGAP_API_TOKEN`` set, refuse calls without ``Authorization: Bearer <token>``.

    ``app.http.TokenGate`` has refused them already, before reading the body; this check
    stays as the routes' own guarantee and documents the scheme in the OpenAPI schema.
    """
    expected = settings.api_token
    if not expected:
        return
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=401, detail=TOKEN_MESSAGE, headers={"WWW-Authenticate": "Bearer"}
        )


ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "Unknown image, box, model, layer or measure."},
    413: {"model": ErrorOut, "description": "Past a size limit (the setting is named)."},
    422: {"model": ErrorOut, "description": "Invalid request (what to fix is said)."},
}
"""Error responses of the analysis routes, so the OpenAPI schema documents string details."""

QUEUED: dict[int | str, dict[str, Any]] = {
    202: {"model": JobAccepted, "description": "Queued as a job."}
}
"""The answer of a route whose large requests become jobs (see :func:`answer_or_queue`)."""

Work = Callable[[Callable[[float, str], None] | None, Callable[[], bool] | None], Any]
"""Work taking ``(progress, cancelled)``: both ``None``-able, so it runs now or as a job."""


def answer_or_queue(
    jobs: JobRunner,
    settings: Settings,
    kind: str,
    units: int,
    work: Work,
    cancelled: Cancelled | None = None,
    threshold: int | None = None,
) -> Any:
    """Run ``work`` now (stopping when ``cancelled()``), or as a job (202 + job id) past
    ``threshold`` units (default ``analysis_job_threshold``)."""
    if units <= (settings.analysis_job_threshold if threshold is None else threshold):
        return work(None, cancelled)
    job_id = jobs.submit(kind, lambda progress, cancelled: work(progress, cancelled))
    return JSONResponse(status_code=202, content=JobAccepted(job_id=job_id).model_dump())


def precheck(
    settings: Settings, model: LoadedModel, layers: list[str], n_boxes: int, permutations: int = 0
) -> None:
    """Cheap checks before any work is queued: limits and layer names (4xx, not a failed job).

    Raises:
        LimitExceeded: past a settings limit. KeyError: an unknown layer.
    """
    from app.engine.layers import check_layer

    check_limits(settings, samples=n_boxes, layers=len(layers), permutations=permutations)
    for layer in layers:
        check_layer(model, layer)


def checked_answer(
    jobs: JobRunner,
    settings: Settings,
    kind: str,
    model: LoadedModel,
    layers: list[str],
    n_boxes: int,
    estimate: Callable[[], Estimate],
    work: Work,
    cancelled: Cancelled | None = None,
    *,
    permutations: int = 0,
    threshold: int | None = None,
) -> Any:
    """An analysis route's flow once its model and request are known: :func:`precheck`,
    then ``estimate()`` (refused past the budget), then :func:`answer_or_queue` with its
    work units (a job past ``threshold``, default ``analysis_job_threshold``).

    Raises:
        LimitExceeded: past a settings limit or the request budget. KeyError: an unknown
            layer or measure.
    """
    precheck(settings, model, layers, n_boxes, permutations)
    return answer_or_queue(jobs, settings, kind, estimate().units, work, cancelled, threshold)


def service_request(cls: type[R], body: object, **given: Any) -> R:
    """The service's request dataclass ``cls`` from the body's fields of the same names,
    with ``given`` (the resolved model's name, defaults filled in) on top.

    Raises:
        AttributeError: the body lacks a field of ``cls`` that is not given (a bug).
    """
    names = [f.name for f in fields(cls) if f.name not in given]
    return cls(**{name: getattr(body, name) for name in names}, **given)


@dataclass(frozen=True)
class Plan:
    """An analysis request once its boxes, model and service request are known."""

    model: LoadedModel
    layers: list[str]
    n_boxes: int
    estimate: Callable[[], Estimate]
    """Its memory and work units (refused past the budget)."""
    work: Work
    permutations: int = 0
    threshold: int | None = None
    """Work units past which it runs as a job; ``None``: ``analysis_job_threshold``."""


class Analyses:
    """An analysis route's door to the store, settings, job runner and worker pool, so that
    the route says only how its body becomes a :class:`Plan`."""

    def __init__(self, store: StoreDep, settings: SettingsDep, jobs: JobsDep, pool: PoolDep):
        self.store, self.settings, self.jobs, self.pool = store, settings, jobs, pool

    async def answer(self, kind: str, plan: Callable[[Store, Settings], Plan]) -> Any:
        """On the pool: ``plan`` (its lookups 4xx), then :func:`checked_answer` (the answer,
        or 202 with a job's id past ``analysis_job_threshold``)."""

        def run(cancelled: Cancelled) -> Any:
            made = plan(self.store, self.settings)
            return checked_answer(
                self.jobs,
                self.settings,
                kind,
                made.model,
                made.layers,
                made.n_boxes,
                made.estimate,
                made.work,
                cancelled,
                permutations=made.permutations,
                threshold=made.threshold,
            )

        return await self.pool.run(run)


AnalysesDep = Annotated[Analyses, Depends()]
