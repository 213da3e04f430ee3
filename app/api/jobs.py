"""Jobs: poll a long request's progress and result (read from the store), or cancel it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.api.deps import JobsDep
from app.api.schemas import JobOut

__all__ = ["router"]

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

JobId = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: JobId, jobs: JobsDep) -> JobOut:
    """A job's state, progress and (when done) result; kept across restarts."""
    return JobOut.of(jobs.get(job_id))


@router.delete("/{job_id}", response_model=JobOut)
def cancel_job(job_id: JobId, jobs: JobsDep) -> JobOut:
    """Ask a job to stop (queued jobs stop at once, running ones within about a second)."""
    return JobOut.of(jobs.cancel(job_id))
