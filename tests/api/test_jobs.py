"""The job runner and the jobs API: progress, results, failures, cancellation."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from app.jobs import JobCancelled, JobRunner


@pytest.fixture
def runner() -> Iterator[JobRunner]:
    jobs = JobRunner(workers=1)
    yield jobs
    jobs.shutdown()


def test_result_and_progress(runner: JobRunner) -> None:
    seen: list[float] = []
    gate = threading.Event()

    def work(progress: Callable[[float, str], None], cancelled: Callable[[], bool]) -> int:
        progress(0.25, "a quarter")
        gate.wait(5)
        return 42

    job_id = runner.submit("sum", work)
    while runner.get(job_id).progress < 0.25:
        threading.Event().wait(0.005)
    snapshot = runner.get(job_id)
    seen.append(snapshot.progress)
    assert (snapshot.state, snapshot.message) == ("running", "a quarter")
    gate.set()
    done = runner.wait(job_id)
    assert (done.state, done.progress, done.result, done.error) == ("done", 1.0, 42, None)
    assert seen == [0.25]


def test_failure_is_reported_not_raised(runner: JobRunner) -> None:
    def work(progress: Callable[[float, str], None], cancelled: Callable[[], bool]) -> None:
        raise ValueError("layer 'x' is unknown; use one of ['a']")

    done = runner.wait(runner.submit("bad", work))
    assert done.state == "failed"
    assert done.error == "ValueError: layer 'x' is unknown; use one of ['a']"


def test_cancel_running_and_queued_jobs(runner: JobRunner) -> None:
    started = threading.Event()

    def loop(progress: Callable[[float, str], None], cancelled: Callable[[], bool]) -> None:
        started.set()
        while not cancelled():
            threading.Event().wait(0.005)
        raise JobCancelled()

    ran: list[str] = []

    def queued_work(progress: Callable[[float, str], None], cancelled: Callable[[], bool]
                    ) -> None:
        ran.append("ran")

    running = runner.submit("loop", loop)
    started.wait(5)
    queued = runner.submit("later", queued_work)  # one worker: waits behind the loop
    assert runner.cancel(queued).state == "cancelled"
    runner.cancel(running)
    assert runner.wait(running).state == "cancelled"
    assert runner.wait(queued).state == "cancelled"
    assert ran == []
    with pytest.raises(KeyError, match="no job"):
        runner.get("nope")
    with pytest.raises(ValueError, match="workers"):
        JobRunner(workers=0)


def test_jobs_api(client: TestClient) -> None:
    jobs: JobRunner = client.app.state.jobs  # type: ignore[attr-defined]
    release = threading.Event()

    def work(progress: Callable[[float, str], None], cancelled: Callable[[], bool]) -> None:
        progress(0.5, "half")
        while not cancelled() and not release.is_set():
            threading.Event().wait(0.005)

    job_id = jobs.submit("demo", work)
    while jobs.get(job_id).progress < 0.5:
        threading.Event().wait(0.005)
    body = client.get(f"/api/jobs/{job_id}").json()
    assert body == {"id": job_id, "kind": "demo", "state": "running", "progress": 0.5,
                    "message": "half", "result": None, "error": None}
    assert client.delete(f"/api/jobs/{job_id}").status_code == 200
    jobs.wait(job_id)
    assert client.get(f"/api/jobs/{job_id}").json()["state"] == "cancelled"
    missing = client.get("/api/jobs/unknown")
    assert missing.status_code == 404 and "no job" in missing.json()["detail"]
    assert client.delete("/api/jobs/unknown").status_code == 404
