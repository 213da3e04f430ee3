"""The store: dedupe by content, cascades, restart persistence, schema check, concurrency."""

from __future__ import annotations

import io
import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from app.config import Settings
from app.store import SchemaMismatchError, Store


def _png(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(Settings(data_dir=tmp_path / "data"))


def test_same_bytes_stored_once_and_file_named_by_hash(store: Store) -> None:
    data = _png(37, 23, 0)
    first, created = store.add_image(data, "../../etc/passwd")
    again, created_again = store.add_image(data, "other.png")
    assert created and not created_again
    assert again.id == first.id
    assert first.filename == "passwd"  # metadata only, never a path
    path = store.image_path(first)
    assert path == store.images_dir / first.sha256[:2] / f"{first.sha256}.png"
    assert path.read_bytes() == data
    assert (first.width, first.height) == (37, 23)
    assert not list(path.parent.glob(".tmp-*"))


def test_delete_image_removes_boxes_results_and_file(store: Store) -> None:
    image, _ = store.add_image(_png(40, 30, 1), "a.png")
    keep, _ = store.add_image(_png(40, 30, 2), "b.png")
    store.add_box(image.id, 1, 2, 10, 5, "cat")
    kept_box = store.add_box(keep.id, 0, 0, 40, 30, "dog")
    store.put_result("r1", "heatmap", {"v": [1, 2]}, image_id=image.id)
    store.put_result("r2", "distances", {"v": 3})
    path = store.image_path(image)
    store.delete_image(image.id)
    assert not path.exists()
    assert store.boxes() == [kept_box]
    assert store.get_result("r1") is None and store.get_result("r2") == {"v": 3}
    assert not store.has_result("r1") and store.has_result("r2")
    assert store.count_results(image.id) == 0
    with pytest.raises(KeyError, match="no image with id"):
        store.get_image(image.id)
    with pytest.raises(KeyError):
        store.delete_image(image.id)


def test_a_result_comes_back_as_the_json_module_would_give_it(store: Store) -> None:
    rng = np.random.default_rng(5)
    floats = [0.1, 1 / 3, 1e-300, 2.5e300, -0.0, 5e-324, *rng.normal(size=50).tolist()]
    value = {"π ✓": floats, 3: "int key", "n": {"a": None, "b": True, "c": [2**62, -7]}}
    store.put_result("k", "kind", value)
    got = store.get_result("k")
    assert got == json.loads(json.dumps(value))  # the reference: the standard library
    assert [math.copysign(1, v) for v in got["π ✓"]] == [math.copysign(1, v) for v in floats]


def test_cascade_in_the_database_itself(store: Store) -> None:
    """Foreign keys are on: deleting the row with raw SQL also drops its boxes."""
    image, _ = store.add_image(_png(20, 20, 3), "a.png")
    store.add_box(image.id, 0, 0, 5, 5, "x")
    with store.engine.begin() as connection:
        connection.execute(text("DELETE FROM images WHERE id = :i"), {"i": image.id})
    assert store.boxes() == []


def test_everything_survives_a_restart(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = Store(settings)
    image, _ = first.add_image(_png(50, 40, 4), "a.png", label="source")
    box = first.add_box(image.id, 1.5, 2.25, 10, 20, "cat")
    first.put_result("k", "kind", [1.0, 2.0], image_id=image.id)
    first.close()
    second = Store(settings)
    got = second.get_image(image.id)
    assert (got.sha256, got.label, got.box_count) == (image.sha256, "source", 1)
    assert second.boxes() == [box]
    assert second.get_result("k") == [1.0, 2.0]
    assert second.load_decoded(got).array().shape == (40, 50, 3)


def test_schema_version_mismatch_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    store = Store(settings)
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE schema_version SET version = 99"))
    store.close()
    with pytest.raises(SchemaMismatchError, match="schema version"):
        Store(settings)


def test_sqlite_runs_wal_with_foreign_keys(store: Store) -> None:
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_any_sqlalchemy_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    store = Store(Settings(data_dir=tmp_path / "data", database_url=url))
    image, _ = store.add_image(_png(10, 10, 5), "a.png")
    assert (tmp_path / "elsewhere.db").exists() and store.get_image(image.id).width == 10


def test_count_at_once_follows_the_store_and_never_waits(store: Store, tmp_path: Path) -> None:
    import sqlite3
    import time

    assert store.count_images_at_once() == 0
    first, _ = store.add_image(_png(10, 10, 1), "a.png")
    store.add_image(_png(11, 10, 2), "b.png")
    assert store.count_images_at_once() == store.count_images() == 2
    store.delete_image(first.id)
    assert store.count_images_at_once() == 1
    # Every pooled connection taken (workers busy) and a writer inside its transaction:
    # the count still answers at once, with what is committed.
    pool = store.engine.pool
    held = [store.engine.connect() for _ in range(pool.size() + pool._max_overflow)]  # type: ignore[attr-defined]
    writer = sqlite3.connect(tmp_path / "data" / "featuregap.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM images")
        started = time.perf_counter()
        assert store.count_images_at_once() == 1
        assert time.perf_counter() - started < 0.5
        writer.execute("COMMIT")
        assert store.count_images_at_once() == 0
    finally:
        writer.close()
        for connection in held:
            connection.close()
    store.close()


def test_count_at_once_declines_a_memory_database(tmp_path: Path) -> None:
    store = Store(Settings(data_dir=tmp_path / "data", database_url="sqlite://"))
    assert store.count_images_at_once() is None and store.count_images() == 0
    store.close()


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ((0, 0, 0, 5), "positive"),
        ((0, 0, 5, -1), "positive"),
        ((40, 0, 5, 5), "37×23"),
        ((0, -9, 5, 4), "37×23"),
        ((36.5, 0, 3, 5), "less than one pixel"),
        ((float("nan"), 0, 1, 1), "non-finite"),
    ],
)
def test_empty_or_outside_box_is_refused_with_the_size(
    store: Store, box: tuple[float, float, float, float], message: str
) -> None:
    image, _ = store.add_image(_png(37, 23, 6), "a.png")
    with pytest.raises(ValueError, match=message):
        store.add_box(image.id, *box, "cat")
    assert store.boxes() == []


def test_box_sticking_out_is_clipped_to_the_image(store: Store) -> None:
    image, _ = store.add_image(_png(37, 23, 6), "a.png")
    whole = store.add_box(image.id, 0, 0, 37, 23, "whole")
    assert (whole.x, whole.y, whole.w, whole.h) == (0, 0, 37, 23)
    left = store.add_box(image.id, -1.5, 2, 5, 30, "cat")
    assert (left.x, left.y, left.w, left.h) == (0, 2, 3.5, 21)
    assert store.get_box(left.id) == left


def test_boxes_filters_and_labels(store: Store) -> None:
    a, _ = store.add_image(_png(30, 30, 7), "a.png")
    b, _ = store.add_image(_png(30, 30, 8), "b.png")
    b1 = store.add_box(a.id, 0, 0, 5, 5, "cat")
    b2 = store.add_box(a.id, 1, 1, 5, 5, "dog")
    b3 = store.add_box(b.id, 2, 2, 5, 5, "cat")
    assert store.boxes(labels=["cat"]) == [b1, b3]
    assert store.boxes(image_id=a.id) == [b1, b2]
    assert store.boxes(ids=[b3.id, b1.id]) == [b1, b3]
    assert store.labels() == {"cat": 2, "dog": 1}
    with pytest.raises(KeyError, match=r"\[999\]"):
        store.boxes(ids=[b1.id, 999])
    with pytest.raises(KeyError, match="no boxes with ids"):
        store.boxes(ids=[2**70])
    with pytest.raises(KeyError):
        store.get_box(2**70)
    with pytest.raises(KeyError):
        store.get_image(-1)
    assert [i.box_count for i in store.images()] == [2, 1]


def test_update_box_keeps_it_inside(store: Store) -> None:
    image, _ = store.add_image(_png(30, 20, 9), "a.png")
    box = store.add_box(image.id, 0, 0, 5, 5, "cat")
    moved = store.update_box(box.id, x=25, label=" dog ")
    assert (moved.x, moved.w, moved.label) == (25, 5, "dog")
    assert store.update_box(box.id, w=8).w == 5  # clipped at the right edge
    with pytest.raises(ValueError, match="30×20"):
        store.update_box(box.id, x=31)
    assert store.get_box(box.id) == moved
    with pytest.raises(ValueError, match="cannot change"):
        store.update_box(box.id, image_id=3)


def test_box_limit_per_image(tmp_path: Path) -> None:
    store = Store(Settings(data_dir=tmp_path / "d", max_boxes_per_image=3))
    image, _ = store.add_image(_png(10, 10, 10), "a.png")
    store.add_boxes(image.id, [(0, 0, 1, 1, "a")] * 2)
    with pytest.raises(ValueError, match="limit of 3 boxes"):
        store.add_boxes(image.id, [(0, 0, 1, 1, "a")] * 2)
    assert len(store.boxes()) == 2  # all or none


def test_concurrent_writes_lose_nothing(store: Store) -> None:
    images = [store.add_image(_png(16, 16, 100 + i), f"{i}.png")[0] for i in range(4)]
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(25):
                store.add_box(images[(worker + i) % 4].id, 0, 0, 3, 3, f"w{worker}")
                # The same bytes from several threads at once: still one image.
                store.add_image(_png(8, 8, 999), "shared.png")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.boxes()) == 8 * 25
    assert store.labels() == {f"w{w}": 25 for w in range(8)}
    assert len(store.images()) == 5


def test_load_decoded_is_cached_by_hash(store: Store) -> None:
    image, _ = store.add_image(_png(12, 9, 11), "a.png")
    first = store.load_decoded(image)
    assert store.load_decoded(image) is first
    assert first.sha256 == image.sha256 and first.pixels.size == (12, 9)


def test_load_decoded_without_remembering_uses_the_cache_but_never_fills_it(
    store: Store,
) -> None:
    image, _ = store.add_image(_png(12, 9, 11), "a.png")
    cached = store.load_decoded(image)
    assert store.load_decoded(image, remember=False) is cached
    store._decoded.clear()  # as after the image was pushed out
    once = store.load_decoded(image, remember=False)
    assert np.array_equal(once.array(), cached.array()) and once is not cached
    assert store.load_decoded(image, remember=False) is not once  # decoded again: not kept


def test_jobs_are_stored_updated_interrupted_and_pruned(store: Store) -> None:
    from datetime import UTC, datetime

    first = store.add_job("a" * 32, "distances")
    assert (first.state, first.progress, first.message, first.result, first.finished_at) == (
        "queued",
        0.0,
        "queued",
        None,
        None,
    )
    with pytest.raises(ValueError, match="exists already"):
        store.add_job("a" * 32, "distances")
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    done = store.update_job(
        "a" * 32, state="done", progress=1.0, result={"m": [[0.5, None]]}, finished_at=moment
    )
    assert (done.result, done.finished_at) == ({"m": [[0.5, None]]}, moment)
    assert store.get_job("a" * 32) == done
    with pytest.raises(ValueError, match="cannot change a job's \\['kind'\\]"):
        store.update_job("a" * 32, kind="other")
    with pytest.raises(ValueError):  # NaN is not JSON: refused when stored, not when read
        store.update_job("a" * 32, result={"x": float("nan")})
    with pytest.raises(KeyError, match="no job with id 'zz'"):
        store.get_job("zz")
    with pytest.raises(KeyError, match="no job"):
        store.update_job("zz", state="done")
    store.add_job("queued", "import_coco")
    store.add_job("running", "embedding")
    store.update_job("running", state="running")
    for index in range(4):
        store.add_job(f"old{index}", "embedding")
        store.update_job(f"old{index}", state="failed", error="ValueError: x")
    assert store.interrupt_jobs() == 2
    assert {store.get_job(i).state for i in ("queued", "running")} == {"interrupted"}
    assert store.interrupt_jobs() == 0
    # 7 finished now: keep the 3 newest finished ones.
    assert store.prune_jobs(keep=3) == 4
    with pytest.raises(KeyError):
        store.get_job("a" * 32)
    assert [store.get_job(f"old{i}").state for i in (2, 3)] == ["failed", "failed"]
