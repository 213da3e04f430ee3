"""A small thread-pool job runner for work that takes long (imports, big analyses).

``submit(kind, fn)`` runs ``fn(progress, cancelled)`` on a worker thread, so torch work
never blocks the event loop. ``progress(fraction, message)`` reports 0..1; ``cancelled()``
turns True after ``cancel(id)`` and the function should then stop (cancellation is
cooperative) — raising :class:`JobCancelled` or returning ends the job as ``cancelled``.
Jobs live in memory: they do not survive a restart (their results do, where the function
writes them to the store).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = ["JobRunner", "JobState", "JobSnapshot", "JobCancelled", "JobFunction", "Progress"]

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
Progress = Callable[[float, str], None]
JobFunction = Callable[[Progress, Callable[[], bool]], Any]

_KEEP_FINISHED = 1000


class JobCancelled(Exception):
    """Raised by a job function that noticed ``cancelled()`` and stops early."""


@dataclass(frozen=True)
class JobSnapshot:
    """A job's state at one moment."""

    id: str
    kind: str
    state: JobState
    progress: float
    message: str
    result: Any
    error: str | None
    created_at: float
    finished_at: float | None


@dataclass
class _Job:
    snapshot: JobSnapshot
    cancel_event: threading.Event = field(default_factory=threading.Event)


class JobRunner:
    """Runs job functions on ``workers`` threads and keeps their state.

    Args:
        workers: number of worker threads (1–2: torch already uses several cores).
    """

    def __init__(self, workers: int = 2) -> None:
        if not 1 <= workers <= 8:
            raise ValueError(f"workers must be between 1 and 8, got {workers}")
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="featuregap-job")
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._lock = threading.Lock()

    def submit(self, kind: str, fn: JobFunction) -> str:
        """Queue ``fn`` and return the new job's id."""
        job_id = uuid.uuid4().hex
        snapshot = JobSnapshot(job_id, kind, "queued", 0.0, "queued", None, None,
                               time.time(), None)
        with self._lock:
            self._jobs[job_id] = _Job(snapshot)
            self._forget_old()
        self._pool.submit(self._run, job_id, fn)
        return job_id

    def get(self, job_id: str) -> JobSnapshot:
        """The job's current state.

        Raises:
            KeyError: unknown id (jobs are kept in memory only, up to 1000 finished ones).
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise KeyError(f"no job with id {job_id!r}; jobs are forgotten at restart")
            return job.snapshot

    def cancel(self, job_id: str) -> JobSnapshot:
        """Ask a job to stop; a queued job is cancelled at once, a running one cooperatively.

        Raises:
            KeyError: unknown id.
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise KeyError(f"no job with id {job_id!r}; jobs are forgotten at restart")
            job.cancel_event.set()
            if job.snapshot.state == "queued":
                job.snapshot = replace(job.snapshot, state="cancelled", message="cancelled",
                                       finished_at=time.time())
            return job.snapshot

    def wait(self, job_id: str, timeout: float = 30.0) -> JobSnapshot:
        """Block until the job has finished (for tests and the CLI).

        Raises:
            TimeoutError: still running after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            snapshot = self.get(job_id)
            if snapshot.state in ("done", "failed", "cancelled"):
                return snapshot
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {snapshot.state} after {timeout} s")
            time.sleep(0.01)

    def shutdown(self) -> None:
        """Cancel every unfinished job and stop the workers."""
        with self._lock:
            for job in self._jobs.values():
                job.cancel_event.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            job = self._jobs[job_id]
            job.snapshot = replace(job.snapshot, **changes)

    def _run(self, job_id: str, fn: JobFunction) -> None:
        with self._lock:
            job = self._jobs[job_id]
            if job.snapshot.state == "cancelled":
                return
            job.snapshot = replace(job.snapshot, state="running", message="running")
            cancel_event = job.cancel_event

        def progress(fraction: float, message: str = "") -> None:
            clipped = min(max(float(fraction), 0.0), 1.0)
            self._update(job_id, progress=clipped, message=message or "running")

        try:
            result = fn(progress, cancel_event.is_set)
        except JobCancelled:
            self._update(job_id, state="cancelled", message="cancelled", finished_at=time.time())
        except Exception as exc:  # a job's failure is reported through its state
            detail = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            self._update(job_id, state="failed", message="failed",
                         error=f"{type(exc).__name__}: {detail}", finished_at=time.time())
        else:
            if cancel_event.is_set():
                self._update(job_id, state="cancelled", message="cancelled",
                             finished_at=time.time())
            else:
                self._update(job_id, state="done", progress=1.0, message="done", result=result,
                             finished_at=time.time())

    def _forget_old(self) -> None:
        finished = [k for k, j in self._jobs.items()
                    if j.snapshot.state in ("done", "failed", "cancelled")]
        for key in finished[: max(0, len(finished) - _KEEP_FINISHED)]:
            del self._jobs[key]
