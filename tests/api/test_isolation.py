"""The real server under a busy pool: /api/health stays fast while a t-SNE job and 40
queued predictions run; a cancelled t-SNE job, and a t-SNE request whose client went away,
stop using the CPU within 2 s."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from benchmarks.live_server import live_server

pytestmark = pytest.mark.slow

PHOTOS = ("chelsea", "coffee", "astronaut")
BOXES_PER_PHOTO = 480  # ~1,400 boxes: t-SNE runs for several seconds on one core
PREDICTIONS = 40


def _server_pid(port: int) -> int:
    """The pid of the uvicorn process serving ``port`` (found by its command line)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"uvicorn" in b" ".join(argv) and str(port).encode() in argv:
            return int(entry.name)
    raise AssertionError(f"no uvicorn process on port {port}")


def _quiet_enough_for_cpu_timing() -> None:
    """CPU-time assertions need the server to get its share of the cores: on a machine
    already loaded beyond twice its cores by other work, skip rather than guess."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 2 * cores:
        pytest.skip(f"load average {load:.1f} on {cores} cores: CPU timing is meaningless")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _populate(client: httpx.Client, photo: Any, photos: tuple[str, ...], per_photo: int) -> None:
    """Upload the photos and import ``per_photo`` random boxes on each (labels class1–3)."""
    rng = np.random.default_rng(7)
    images, annotations = [], []
    for index, name in enumerate(photos, start=1):
        upload = client.post(
            "/api/images", files={"file": (f"{name}.png", photo.png(name), "image/png")}
        )
        assert upload.status_code == 201, upload.text
        width, height = upload.json()["width"], upload.json()["height"]
        images.append({"id": index, "file_name": f"{name}.png", "width": width, "height": height})
        for _ in range(per_photo):
            w, h = rng.uniform(20, width / 2), rng.uniform(20, height / 2)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": int(rng.integers(1, 4)),
                    "bbox": [float(x), float(y), float(w), float(h)],
                }
            )
    document = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": f"class{i}"} for i in (1, 2, 3)],
    }
    imported = client.post(
        "/api/import/coco",
        files={"file": ("boxes.json", json.dumps(document).encode(), "application/json")},
    )
    assert imported.status_code in (200, 202), imported.text
    if imported.status_code == 202:
        _wait_for(client, imported.json()["job_id"], lambda job: job["state"] == "done")
    assert client.get("/api/boxes").json()["total"] == len(annotations)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, photo: Any) -> Iterator[httpx.Client]:
    """A live server with ~1,440 labelled boxes on three photos (3 labels); t-SNE of all of
    them is a job, of two labels a synchronous request."""
    data = tmp_path_factory.mktemp("isolation") / "data"
    with live_server(
        data,
        FEATUREGAP_ANALYSIS_JOB_THRESHOLD="20000",
        FEATUREGAP_WORKERS="2",
        FEATUREGAP_QUEUE_LIMIT="64",
    ) as client:
        _populate(client, photo, PHOTOS, BOXES_PER_PHOTO)
        yield client


def _wait_for(
    client: httpx.Client, job_id: str, condition: Any, seconds: float = 120.0
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        if condition(job):
            return job
        assert job["state"] not in ("done", "failed", "cancelled", "interrupted"), job
        assert time.monotonic() < deadline, f"job never reached the condition: {job}"
        time.sleep(0.05)


def _start_tsne(client: httpx.Client, seed: int) -> str:
    # 1,440 boxes × 1,000 iterations: 28,800 work units, a job past the threshold of 20,000.
    answer = client.post(
        "/api/embeddings",
        json={"layer": "conv_head", "method": "tsne", "seed": seed, "n_iter": 1000},
    )
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["job_id"]
    _wait_for(client, job_id, lambda job: job["message"].startswith("tsne"))
    return job_id


def test_health_stays_fast_while_the_pool_is_busy(server: httpx.Client) -> None:
    _quiet_enough_for_cpu_timing()  # a wall-clock p99: as meaningless on a crowded machine
    base = str(server.base_url)
    job_id = _start_tsne(server, seed=0)  # the heavy one: one worker is busy for seconds
    answers: list[int] = []
    lock = threading.Lock()

    def predict() -> None:
        with httpx.Client(base_url=base, timeout=120) as client:
            status = client.post("/api/predictions", json={"image_id": 1, "k": 3}).status_code
        with lock:
            answers.append(status)

    threads = [threading.Thread(target=predict) for _ in range(PREDICTIONS)]
    for thread in threads:
        thread.start()
    latencies: list[float] = []
    pages: list[int] = []
    with httpx.Client(base_url=base, timeout=10) as probe:
        # Until the predictions are answered, and for at least 200 probes (a p99 of fewer
        # would be the maximum: one scheduling hiccup of this shared machine).
        while any(thread.is_alive() for thread in threads) or len(latencies) < 200:
            start = time.perf_counter()
            assert probe.get("/api/health").status_code == 200
            latencies.append(time.perf_counter() - start)
            if len(latencies) % 10 == 0:
                pages.append(probe.get("/").status_code)
            time.sleep(0.005)
    busy_until_the_end = server.get(f"/api/jobs/{job_id}").json()["state"] == "running"
    server.delete(f"/api/jobs/{job_id}")
    assert answers == [200] * PREDICTIONS
    assert set(pages) == {200}
    assert busy_until_the_end, "t-SNE finished before the predictions: use more boxes"
    p99 = sorted(latencies)[math.ceil(0.99 * len(latencies)) - 1]
    worst = [round(x * 1000) for x in sorted(latencies)[-5:]]
    assert p99 < 0.2, (
        f"/api/health p99 {p99 * 1000:.0f} ms over {len(latencies)} calls (worst {worst} ms)"
    )


def test_cancelled_tsne_stops_using_the_cpu_within_2_s(server: httpx.Client) -> None:
    _quiet_enough_for_cpu_timing()
    pid = _server_pid(int(server.base_url.port or 0))
    job_id = _start_tsne(server, seed=1)
    before = _cpu_seconds(pid)
    time.sleep(0.5)
    assert _cpu_seconds(pid) - before > 0.15, "t-SNE is not using the CPU; nothing to stop"
    cancelled_at = time.monotonic()
    assert server.delete(f"/api/jobs/{job_id}").status_code == 200
    job = _wait_for(server, job_id, lambda job: job["state"] == "cancelled", seconds=2.0)
    assert job["result"] is None and job["finished_at"] is not None
    time.sleep(max(0.0, cancelled_at + 2.0 - time.monotonic()))
    settled = _cpu_seconds(pid)
    time.sleep(1.0)
    assert _cpu_seconds(pid) - settled < 0.1, "the server still burns CPU after the cancel"


def test_a_client_that_leaves_stops_its_synchronous_tsne(server: httpx.Client) -> None:
    _quiet_enough_for_cpu_timing()
    pid = _server_pid(int(server.base_url.port or 0))
    # ~950 boxes × 1,000 iterations (19,000 work units: synchronous) and a neighbourhood near
    # the widest ((n − 1)/3 = 315), so that it computes well past the client's 2.5 s on a
    # quiet machine with stored descriptors: perplexity 100 took 2.3–2.7 s there (and once
    # answered within 2.5 s), 250 took 3.7–3.9 s.
    body = {
        "layer": "conv_head",
        "method": "tsne",
        "seed": 2,
        "labels": ["class1", "class2"],
        "n_iter": 1000,
        "perplexity": 300,
    }
    started = time.monotonic()
    samples: list[float] = []

    def sample_cpu() -> None:  # CPU time of the server while the request is in flight
        time.sleep(1.5)
        samples.append(_cpu_seconds(pid))

    sampler = threading.Thread(target=sample_cpu)
    sampler.start()
    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.Client(base_url=str(server.base_url), timeout=2.5) as client,
    ):
        client.post("/api/embeddings", json=body)  # ~960 boxes: a synchronous t-SNE
    left_at = time.monotonic()
    sampler.join()
    assert left_at - started < 4.0
    assert _cpu_seconds(pid) - samples[0] > 0.15, "the request was not computing; nothing to stop"
    time.sleep(2.0)
    settled = _cpu_seconds(pid)
    time.sleep(1.0)
    assert _cpu_seconds(pid) - settled < 0.1, "the server still burns CPU after the client left"


def test_a_killed_server_keeps_its_jobs_and_marks_the_running_one_interrupted(
    tmp_path: Path, photo: Any
) -> None:
    data = tmp_path / "data"
    with live_server(data, FEATUREGAP_ANALYSIS_JOB_THRESHOLD="1") as client:
        _populate(client, photo, ("coffee",), 400)
        pca = client.post("/api/embeddings", json={"layer": "conv_head", "method": "pca"})
        assert pca.status_code == 202, pca.text
        done_id = pca.json()["job_id"]
        done = _wait_for(client, done_id, lambda job: job["state"] == "done")
        running_id = _start_tsne(client, seed=0)
        os.kill(_server_pid(int(client.base_url.port or 0)), signal.SIGKILL)
    with live_server(data) as client:
        kept = client.get(f"/api/jobs/{done_id}").json()
        assert kept == done and len(kept["result"]["points"]) == 400
        crashed = client.get(f"/api/jobs/{running_id}").json()
        assert crashed["state"] == "interrupted" and crashed["finished_at"] is not None
        assert crashed["kind"] == "embedding" and crashed["result"] is None
        assert client.delete(f"/api/jobs/{running_id}").json()["state"] == "interrupted"


def test_cancelled_permutation_job_stops_using_the_cpu_within_2_s(server: httpx.Client) -> None:
    _quiet_enough_for_cpu_timing()
    pid = _server_pid(int(server.base_url.port or 0))
    answer = server.post(
        "/api/distances",
        json={
            "labels": ["class1", "class2"],
            "layer": "conv_head",
            "measure": "cosine",
            "descriptor": "grid",
            "permutations": 10_000,
            "seed": 3,
        },
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    _wait_for(server, job_id, lambda job: job["message"] == "measuring")
    before = _cpu_seconds(pid)
    time.sleep(0.5)
    assert _cpu_seconds(pid) - before > 0.15, "the test is not using the CPU; nothing to stop"
    cancelled_at = time.monotonic()
    assert server.delete(f"/api/jobs/{job_id}").status_code == 200
    job = _wait_for(server, job_id, lambda job: job["state"] == "cancelled", seconds=2.0)
    assert job["result"] is None
    time.sleep(max(0.0, cancelled_at + 2.0 - time.monotonic()))
    settled = _cpu_seconds(pid)
    time.sleep(1.0)
    assert _cpu_seconds(pid) - settled < 0.1, "the server still burns CPU after the cancel"


def test_a_coco_import_killed_mid_run_is_interrupted_and_a_retry_holds_the_file_once(
    tmp_path: Path, photo: Any
) -> None:
    data = tmp_path / "data"
    rng = np.random.default_rng(11)
    names = ("coffee", "chelsea", "rocket")
    images, annotations = [], []
    env = {"FEATUREGAP_IMPORT_JOB_THRESHOLD": "1", "FEATUREGAP_MAX_BOXES_PER_IMAGE": "20000"}
    with live_server(data, **env) as client:
        for index, name in enumerate(names, start=1):
            upload = client.post(
                "/api/images", files={"file": (f"{name}.png", photo.png(name), "image/png")}
            ).json()
            images.append(
                {
                    "id": index,
                    "file_name": f"{name}.png",
                    "width": upload["width"],
                    "height": upload["height"],
                }
            )
            for _ in range(8000):
                w, h = rng.uniform(5, 100, size=2)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": index,
                        "category_id": 1,
                        "bbox": [
                            float(rng.uniform(0, upload["width"] - w)),
                            float(rng.uniform(0, upload["height"] - h)),
                            float(w),
                            float(h),
                        ],
                    }
                )
        document = json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": 1, "name": "thing"}],
            }
        ).encode()
        answer = client.post(
            "/api/import/coco", files={"file": ("boxes.json", document, "application/json")}
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["job_id"]
        _wait_for(client, job_id, lambda job: job["progress"] > 0)
        os.kill(_server_pid(int(client.base_url.port or 0)), signal.SIGKILL)
    with live_server(data, **env) as client:
        crashed = client.get(f"/api/jobs/{job_id}").json()
        assert crashed["state"] == "interrupted" and crashed["kind"] == "import_coco"
        partial = {row["label"]: row["boxes"] for row in client.get("/api/labels").json()}
        assert partial.get("thing", 0) < len(annotations)  # killed mid-import
        retry = client.post(
            "/api/import/coco", files={"file": ("boxes.json", document, "application/json")}
        ).json()
        done = _wait_for(client, retry["job_id"], lambda job: job["state"] == "done")
        assert done["result"]["skipped"] == []
        labels = {row["label"]: row for row in client.get("/api/labels").json()}
        assert labels["thing"]["boxes"] == len(annotations), (partial, labels)
