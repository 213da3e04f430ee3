"""The worker pool and the jobs API: progress, results, failures, cancellation, the bound
(503 + Retry-After), and jobs kept in the store across a restart."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.jobs import JobCancelled, JobRunner, PoolBusy
from app.store import Store


def _store(path: Path) -> Store:
    return Store(Settings(data_dir=path))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    one = _store(tmp_path / "data")
    yield one
    one.close()


@pytest.fixture
def runner(store: Store) -> Iterator[JobRunner]:
    jobs = JobRunner(store, workers=1, queue_limit=2)
    yield jobs
    jobs.shutdown()


def _until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    event = threading.Event()
    for _ in range(int(seconds / 0.005)):
        if condition():
            return
        event.wait(0.005)
    raise AssertionError("condition not reached in time")


def test_result_and_progress(runner: JobRunner) -> None:
    gate = threading.Event()

    def work(
        progress: Callable[[float, str], None], cancelled: Callable[[], bool]
    ) -> dict[str, list[float]]:
        progress(0.25, "a quarter")
        gate.wait(60)
        return {"x": [1.5, -2.0]}

    job_id = runner.submit("sum", work)
    _until(lambda: runner.get(job_id).progress >= 0.25)
    snapshot = runner.get(job_id)
    assert (snapshot.state, snapshot.message, snapshot.finished_at) == (
        "running",
        "a quarter",
        None,
    )
    gate.set()
    done = runner.wait(job_id)
    assert (done.state, done.progress, done.result, done.error) == (
        "done",
        1.0,
        {"x": [1.5, -2.0]},
        None,
    )
    assert done.finished_at is not None and done.finished_at >= done.created_at


def test_failure_is_reported_not_raised(runner: JobRunner) -> None:
    def work(progress: Callable[[float, str], None], cancelled: Callable[[], bool]) -> None:
        raise ValueError("layer 'x' is unknown; use one of ['a']")

    done = runner.wait(runner.submit("bad", work))
    assert done.state == "failed"
    assert done.error == "ValueError: layer 'x' is unknown; use one of ['a']"


def test_a_result_that_is_not_json_fails_the_job(runner: JobRunner) -> None:
    done = runner.wait(runner.submit("odd", lambda progress, cancelled: object()))
    assert done.state == "failed" and "could not be stored" in (done.error or "")


@pytest.mark.parametrize("stop", [JobCancelled("cancelled"), InterruptedError("cancelled")])
def test_cancel_running_and_queued_jobs(runner: JobRunner, stop: Exception) -> None:
    started = threading.Event()

    def loop(progress: Callable[[float, str], None], cancelled: Callable[[], bool]) -> None:
        started.set()
        while not cancelled():
            threading.Event().wait(0.005)
        raise stop  # what the engine's loops raise (InterruptedError) or the service's

    ran: list[str] = []
    running = runner.submit("loop", loop)
    assert started.wait(30)
    queued = runner.submit("later", lambda progress, cancelled: ran.append("ran"))
    assert runner.pending == 2
    assert runner.cancel(queued).state == "cancelled"
    assert runner.pending == 1  # the cancelled job left the queue: its place is free now
    assert runner.cancel(running).message == "cancelling"
    assert runner.wait(running).state == "cancelled"
    assert runner.wait(queued).state == "cancelled"
    assert runner.cancel(running).state == "cancelled"  # cancelling a finished job: no change
    # The running job's place is freed when its worker returns, just after it stored
    # "cancelled" (what wait() saw): wait for that, not for a fixed time.
    _until(lambda: runner.pending == 0)
    assert ran == []
    with pytest.raises(KeyError, match="no job"):
        runner.get("nope")


def test_cancelled_queued_jobs_free_their_places_while_the_worker_is_busy(
    runner: JobRunner,
) -> None:
    gate, started = threading.Event(), threading.Event()

    def busy(progress: Callable[[float, str], None], cancelled: Callable[[], bool]) -> None:
        started.set()
        gate.wait(10)  # never checks cancelled(): a long step of real work

    ran: list[str] = []
    running = runner.submit("busy", busy)
    assert started.wait(30)
    queued = [runner.submit("later", lambda p, c: ran.append("ran")) for _ in range(2)]
    with pytest.raises(PoolBusy):  # 1 running + 2 waiting: full
        runner.submit("refused", lambda p, c: None)
    for job_id in queued:
        assert runner.cancel(job_id).state == "cancelled"
    assert runner.pending == 1
    # Room again while the first job still runs: the cancelled ones hold no place.
    again = runner.submit("again", lambda p, c: "ok")
    gate.set()
    assert runner.wait(running).state == "done"
    assert runner.wait(again).result == "ok"
    assert ran == []
    _until(lambda: runner.pending == 0)


def test_bad_settings_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="FEATUREGAP_WORKERS"):
        JobRunner(store, workers=0)
    with pytest.raises(ValueError, match="FEATUREGAP_QUEUE_LIMIT"):
        JobRunner(store, workers=1, queue_limit=-1)


def test_the_pool_is_bounded_and_frees_its_places(runner: JobRunner) -> None:
    gate = threading.Event()
    futures = [runner.call(lambda cancelled: gate.wait(60))[0] for _ in range(3)]  # 1 + 2
    assert runner.pending == 3
    with pytest.raises(PoolBusy, match="FEATUREGAP_WORKERS = 1 .*FEATUREGAP_QUEUE_LIMIT = 2"):
        runner.call(lambda cancelled: None)
    with pytest.raises(PoolBusy):
        runner.submit("refused", lambda progress, cancelled: None)
    gate.set()
    assert [f.result(30) for f in futures] == [True, True, True]
    _until(lambda: runner.pending == 0)
    assert runner.call(lambda cancelled: 7)[0].result(30) == 7


def test_a_synchronous_call_cancelled_while_queued_never_runs(runner: JobRunner) -> None:
    gate = threading.Event()
    first, _ = runner.call(lambda cancelled: gate.wait(60))
    ran: list[str] = []
    second, cancel = runner.call(lambda cancelled: ran.append("ran"))
    cancel.set()
    gate.set()
    first.result(30)
    with pytest.raises(JobCancelled):
        second.result(30)
    assert ran == []


def test_jobs_api(client: TestClient) -> None:
    jobs: JobRunner = client.app.state.jobs  # type: ignore[attr-defined]
    release = threading.Event()

    def work(progress: Callable[[float, str], None], cancelled: Callable[[], bool]) -> None:
        progress(0.5, "half")
        while not cancelled() and not release.is_set():
            threading.Event().wait(0.005)

    job_id = jobs.submit("demo", work)
    _until(lambda: jobs.get(job_id).progress >= 0.5)
    body = client.get(f"/api/jobs/{job_id}").json()
    created = body.pop("created_at")
    assert created and body == {
        "id": job_id,
        "kind": "demo",
        "state": "running",
        "progress": 0.5,
        "message": "half",
        "result": None,
        "error": None,
        "finished_at": None,
    }
    assert client.delete(f"/api/jobs/{job_id}").status_code == 200
    jobs.wait(job_id)
    assert client.get(f"/api/jobs/{job_id}").json()["state"] == "cancelled"
    missing = client.get("/api/jobs/unknown")
    assert missing.status_code == 404 and "no job" in missing.json()["detail"]
    assert client.delete("/api/jobs/unknown").status_code == 404


def test_full_pool_answers_503_with_retry_after(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.config import get_settings
    from app.main import create_app

    monkeypatch.setenv("FEATUREGAP_WORKERS", "1")
    monkeypatch.setenv("FEATUREGAP_QUEUE_LIMIT", "1")
    get_settings.cache_clear()
    with TestClient(create_app(get_settings())) as client:
        jobs: JobRunner = client.app.state.jobs  # type: ignore[attr-defined]
        gate = threading.Event()
        blockers = [jobs.call(lambda cancelled: gate.wait(10))[0] for _ in range(2)]
        try:
            for method, path, body in [
                ("POST", "/api/predictions", {"image_id": 1}),
                ("POST", "/api/heatmaps", {"image_id": 1, "layer": "conv_head"}),
                ("POST", "/api/distances", {"labels": ["a"], "layer": "conv_head"}),
                ("POST", "/api/embeddings", {"layer": "conv_head"}),
                ("POST", "/api/separation", {"layers": ["conv_head"]}),
            ]:
                answer = client.request(method, path, json=body)
                assert answer.status_code == 503, (path, answer.text)
                assert answer.headers["retry-after"] == "5"
                detail = answer.json()["detail"]
                assert "FEATUREGAP_WORKERS = 1" in detail
                assert "FEATUREGAP_QUEUE_LIMIT = 1" in detail
            assert client.get("/api/health").status_code == 200  # never touches the pool
            assert client.get("/").status_code == 200
        finally:
            gate.set()
        assert [f.result(10) for f in blockers] == [True, True]
        _until(lambda: jobs.pending == 0)
        # With room again the same request reaches its handler (an unknown image: 404).
        assert client.post("/api/predictions", json={"image_id": 1}).status_code == 404


def test_jobs_survive_a_restart_and_unfinished_ones_are_interrupted(tmp_path: Path) -> None:
    store = _store(tmp_path / "data")
    first = JobRunner(store, workers=1)
    done_id = first.submit("embedding", lambda progress, cancelled: {"points": [1, 2]})
    assert first.wait(done_id).state == "done"
    # A crash leaves rows as they were: write a running and a queued job as a killed
    # process would have left them.
    store.add_job("crashed-running", "distances")
    store.update_job("crashed-running", state="running", progress=0.4, message="measuring")
    store.add_job("crashed-queued", "import_coco")
    store.close()

    again = _store(tmp_path / "data")
    second = JobRunner(again, workers=1)
    try:
        assert second.interrupted_at_start == 2
        kept = second.get(done_id)
        assert (kept.state, kept.result, kept.kind) == ("done", {"points": [1, 2]}, "embedding")
        for job_id in ("crashed-running", "crashed-queued"):
            record = second.get(job_id)
            assert record.state == "interrupted" and record.finished_at is not None
            assert "send the request again" in record.message
        assert second.get("crashed-running").progress == 0.4
        assert second.cancel("crashed-running").state == "interrupted"
    finally:
        second.shutdown()
        again.close()


def test_shutdown_marks_unfinished_jobs_interrupted(store: Store) -> None:
    runner = JobRunner(store, workers=1)
    started = threading.Event()

    def loop(progress: Callable[[float, str], None], cancelled: Callable[[], bool]) -> None:
        started.set()
        while not cancelled():
            threading.Event().wait(0.005)
        raise JobCancelled("cancelled")

    running = runner.submit("loop", loop)
    assert started.wait(30)
    queued = runner.submit("later", lambda progress, cancelled: None)
    runner.shutdown()
    assert store.get_job(running).state == "interrupted"
    assert store.get_job(queued).state == "interrupted"


class _Leaving:
    """A request whose client leaves once the work has started."""

    def __init__(self, started: threading.Event) -> None:
        self.started = started

    async def is_disconnected(self) -> bool:
        return self.started.is_set()


def test_a_client_that_leaves_cancels_its_running_work(runner: JobRunner) -> None:
    import asyncio

    from fastapi import HTTPException

    from app.api.deps import Pool

    started, saw_cancel = threading.Event(), threading.Event()

    def work(cancelled: Callable[[], bool]) -> None:
        started.set()
        while not cancelled():
            threading.Event().wait(0.005)
        saw_cancel.set()
        raise JobCancelled("cancelled")

    pool = Pool(runner, _Leaving(started))  # type: ignore[arg-type]
    with pytest.raises(HTTPException) as info:
        asyncio.run(pool.run(work))
    assert info.value.status_code == 499
    assert saw_cancel.wait(30)
    _until(lambda: runner.pending == 0)
    assert (
        asyncio.run(
            Pool(runner, _Leaving(threading.Event())).run(  # type: ignore[arg-type]
                lambda cancelled: 3 * 7
            )
        )
        == 21
    )


def test_current_cancelled_follows_the_work_on_this_thread(runner: JobRunner) -> None:
    from app.jobs import current_cancelled

    assert current_cancelled()() is False  # outside the pool: never cancelled
    started, gate = threading.Event(), threading.Event()

    def work(cancelled: Callable[[], bool]) -> tuple[bool, bool]:
        before = current_cancelled()()
        started.set()
        gate.wait(60)
        return before, current_cancelled()()

    future, cancel = runner.call(work)
    assert started.wait(30)
    cancel.set()
    gate.set()
    assert future.result(30) == (False, True)

    def job(progress: Callable[[float, str], None], cancelled: Callable[[], bool]) -> bool:
        return current_cancelled()()

    assert runner.wait(runner.submit("look", job)).result is False
