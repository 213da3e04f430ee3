"""The bounded worker pool: every heavy request runs here, and long ones as stored jobs.

Two doors share one pool of ``workers`` threads and one bound of ``workers + queue_limit``
pieces of work running or waiting; past it both refuse with :class:`PoolBusy` (the API
answers 503 + ``Retry-After``) instead of queueing without end:

- ``call(work)``: a synchronous request's work; the caller waits on the returned future
  and sets the returned event to cancel it (a client that went away).
- ``submit(kind, fn)``: a job. ``fn(progress, cancelled)`` runs on a worker; its state,
  progress, result and error live in the store (table ``jobs``), so ``GET /api/jobs/{id}``
  reads them after a restart too. A job still ``queued`` or ``running`` when the process
  ended is marked ``interrupted`` when the next runner starts on the same store.

Cancellation is cooperative: ``cancelled()`` turns true after :meth:`JobRunner.cancel`;
long loops check it and raise :class:`InterruptedError` (or its subclass
:class:`JobCancelled`), which ends the job as ``cancelled``.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from app.errors import Unavailable
from app.store import JobRecord, Store

__all__ = [
    "JobRunner",
    "JobState",
    "JobCancelled",
    "JobFunction",
    "Progress",
    "Cancelled",
    "PoolBusy",
    "FINISHED_STATES",
    "KEEP_FINISHED_JOBS",
    "current_cancelled",
]

JobState = Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]
Progress = Callable[[float, str], None]
Cancelled = Callable[[], bool]
JobFunction = Callable[[Progress, Cancelled], Any]
T = TypeVar("T")

FINISHED_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled", "interrupted"})
"""States a job never leaves."""

KEEP_FINISHED_JOBS = 1000
"""Finished jobs kept in the store (older ones are deleted when a runner starts)."""

_PROGRESS_EVERY_S = 0.25  # progress writes to the store at most this often per job
_RETRY_AFTER_S = 5
_log = logging.getLogger(__name__)


class JobCancelled(InterruptedError):
    """Raised by work that noticed ``cancelled()`` and stops early."""


class PoolBusy(Unavailable):
    """The pool already holds ``workers + queue_limit`` pieces of work (the API answers 503).

    Attributes:
        retry_after: seconds after which a retry may find room.
    """

    def __init__(self, message: str, retry_after: int = _RETRY_AFTER_S) -> None:
        super().__init__(message, retry_after)


def _never() -> bool:
    return False


_CURRENT: contextvars.ContextVar[Cancelled] = contextvars.ContextVar(
    "featuregap_cancelled", default=_never
)


def current_cancelled() -> Cancelled:
    """The cancel check of the work running on this thread (never true outside the pool).

    For code that the ``cancelled`` argument does not reach: a service function can pass
    ``current_cancelled()`` down to an engine loop that raises ``InterruptedError``.
    """
    return _CURRENT.get()


def _now() -> datetime:
    return datetime.now(UTC)


class JobRunner:
    """Runs work on ``workers`` threads with at most ``queue_limit`` more waiting.

    Args:
        store: where jobs are recorded; unfinished jobs of an earlier process are marked
            ``interrupted`` here (one server process per store).
        workers: worker threads (setting ``FEATUREGAP_WORKERS``; torch already uses
            several cores per thread, so 1–2 suit small machines).
        queue_limit: pieces of work that may wait for a worker (setting
            ``FEATUREGAP_QUEUE_LIMIT``).

    Raises:
        ValueError: ``workers`` outside 1–64 or a negative ``queue_limit``.
    """

    def __init__(self, store: Store, workers: int = 2, queue_limit: int = 64) -> None:
        if not 1 <= workers <= 64:
            raise ValueError(
                f"workers must be between 1 and 64, got {workers} (setting FEATUREGAP_WORKERS)"
            )
        if queue_limit < 0:
            raise ValueError(
                f"queue_limit must be 0 or more, got {queue_limit} (setting FEATUREGAP_QUEUE_LIMIT)"
            )
        self.workers, self.queue_limit = workers, queue_limit
        self._store = store
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="featuregap-work")
        self._lock = threading.Lock()
        self._pending = 0
        self._events: dict[str, threading.Event] = {}
        self._futures: dict[str, Future[None]] = {}
        self._stopping = False
        self.interrupted_at_start = store.interrupt_jobs()
        """How many jobs of an earlier process were marked ``interrupted``."""
        store.prune_jobs(KEEP_FINISHED_JOBS)

    @property
    def pending(self) -> int:
        """Pieces of work running or waiting now."""
        with self._lock:
            return self._pending

    # -- the two doors ---------------------------------------------------------------------

    def call(self, work: Callable[[Cancelled], T]) -> tuple[Future[T], threading.Event]:
        """Queue a synchronous request's ``work(cancelled)``.

        Returns:
            The future of its result (exceptions included) and the event that cancels it:
            set it, and cancel the future, when nobody waits for the answer any more.

        Raises:
            PoolBusy: no room in the pool.
        """
        self._reserve()
        event = threading.Event()
        try:
            future = self._pool.submit(_call, work, event)
        except RuntimeError:  # the pool is shut down
            self._release()
            raise PoolBusy("the server is shutting down; retry in a moment") from None
        future.add_done_callback(self._release)
        return future, event

    def submit(self, kind: str, fn: JobFunction) -> str:
        """Record a ``queued`` job, queue ``fn(progress, cancelled)`` and return the job's id.

        Raises:
            PoolBusy: no room in the pool (no job is recorded then).
        """
        self._reserve()
        job_id = uuid.uuid4().hex
        event = threading.Event()
        try:
            self._store.add_job(job_id, kind)
            with self._lock:
                self._events[job_id] = event
            future = self._pool.submit(self._run, job_id, fn, event)
        except BaseException:
            self._release()
            with self._lock:
                self._events.pop(job_id, None)
            raise
        with self._lock:
            self._futures[job_id] = future
        future.add_done_callback(lambda _future: self._left(job_id))
        return job_id

    # -- jobs --------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord:
        """The job's state as stored.

        Raises:
            KeyError: no job with this id.
        """
        return self._store.get_job(job_id)

    def cancel(self, job_id: str) -> JobRecord:
        """Ask a job to stop: a queued one is cancelled at once and leaves the queue (its
        place in the pool is free on return), a running one stops at its next check; a
        finished one is left as it is.

        Raises:
            KeyError: no job with this id.
        """
        with self._lock:
            record = self._store.get_job(job_id)
            event = self._events.get(job_id)
            if event is None or record.state in FINISHED_STATES:
                return record
            event.set()
            if record.state != "queued":
                return self._store.update_job(job_id, message="cancelling")
            ended = self._end(job_id, "cancelled", "cancelled")
            future = self._futures.get(job_id)
        # Outside the lock: a future cancelled before it ran calls its done callback (which
        # takes the lock) at once. One that a worker already took runs _run, which sees the
        # event and returns without calling fn.
        if future is not None:
            future.cancel()
        return ended

    def wait(self, job_id: str, timeout: float = 30.0) -> JobRecord:
        """Block until the job has finished (for tests and the CLI).

        The job's place in the pool (:attr:`pending`) is freed when its worker returns, just
        after it recorded the final state that this method sees.

        Raises:
            KeyError: no job with this id.
            TimeoutError: still unfinished after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            record = self.get(job_id)
            if record.state in FINISHED_STATES:
                return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {record.state} after {timeout} s")
            time.sleep(0.02)

    def shutdown(self) -> None:
        """Stop: running work is asked to stop, queued work is dropped, and jobs that did
        not finish are marked ``interrupted``.

        The runner takes work again afterwards on fresh threads (an app's lifespan may be
        entered more than once, as test clients do).
        """
        with self._lock:
            self._stopping = True
            for event in self._events.values():
                event.set()
            pool = self._pool
        pool.shutdown(wait=True, cancel_futures=True)
        self._store.interrupt_jobs()
        with self._lock:
            self._pool = ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="featuregap-work"
            )
            self._stopping = False

    # -- internals ---------------------------------------------------------------------------

    def _reserve(self) -> None:
        with self._lock:
            limit = self.workers + self.queue_limit
            if self._pending >= limit:
                raise PoolBusy(
                    f"the server is busy: {self._pending} requests are running or waiting, "
                    f"the most it takes (FEATUREGAP_WORKERS = {self.workers} running + "
                    f"FEATUREGAP_QUEUE_LIMIT = {self.queue_limit} waiting); retry after "
                    f"{_RETRY_AFTER_S} s or raise those settings"
                )
            self._pending += 1

    def _release(self, _future: object = None) -> None:
        with self._lock:
            self._pending -= 1

    def _left(self, job_id: str) -> None:
        """A job's work left the pool (ran, or was cancelled while queued): free its place."""
        with self._lock:
            self._pending -= 1
            self._events.pop(job_id, None)
            self._futures.pop(job_id, None)

    def _run(self, job_id: str, fn: JobFunction, event: threading.Event) -> None:
        try:
            with self._lock:
                if event.is_set():  # cancelled while queued (cancel() wrote the state)
                    return
                self._store.update_job(job_id, state="running", message="running")
            self._finish(job_id, fn, event)
        except Exception:  # the store failed: nothing else can report it
            _log.exception("job %s could not record its state", job_id)

    def _finish(self, job_id: str, fn: JobFunction, event: threading.Event) -> None:
        last: list[Any] = [0.0, None]  # when the store was last written, and the message

        def progress(fraction: float, message: str = "") -> None:
            # A new message is always written (a new phase); the same one at most every
            # _PROGRESS_EVERY_S, so tight loops do not queue up store writes.
            now, message = time.monotonic(), message or "running"
            if message == last[1] and now - last[0] < _PROGRESS_EVERY_S:
                return
            last[0], last[1] = now, message
            self._store.update_job(
                job_id, progress=min(max(float(fraction), 0.0), 1.0), message=message
            )

        token = _CURRENT.set(event.is_set)
        try:
            result = fn(progress, event.is_set)
        except InterruptedError:
            self._stopped(job_id)
        except Exception as exc:  # a job's failure is reported through its state
            detail = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            self._end(job_id, "failed", "failed", error=f"{type(exc).__name__}: {detail}")
        else:
            if event.is_set():
                self._stopped(job_id)
                return
            try:
                self._end(job_id, "done", "done", progress=1.0, result=result)
            except (TypeError, ValueError) as exc:  # not JSON: a bug of the job's function
                self._end(
                    job_id, "failed", "failed", error=f"the result could not be stored: {exc}"
                )
        finally:
            _CURRENT.reset(token)

    def _stopped(self, job_id: str) -> None:
        if self._stopping:
            self._end(
                job_id, "interrupted", "interrupted: the server stopped; send the request again"
            )
        else:
            self._end(job_id, "cancelled", "cancelled")

    def _end(self, job_id: str, state: str, message: str, **fields: Any) -> JobRecord:
        """Record a job's final state and message (and ``fields``), with when it ended."""
        return self._store.update_job(
            job_id, state=state, message=message, finished_at=_now(), **fields
        )


def _call(work: Callable[[Cancelled], T], event: threading.Event) -> T:
    if event.is_set():  # its client left while it waited
        raise JobCancelled("cancelled")
    token = _CURRENT.set(event.is_set)
    try:
        return work(event.is_set)
    finally:
        _CURRENT.reset(token)
