"""Ids are never reused (also in stores written before AUTOINCREMENT); imports are idempotent."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from app.config import Settings
from app.store import Store
from app.store.tables import SCHEMA_VERSION, Base


def _png(width: int, height: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(
        np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
    ).save(buffer, format="PNG")
    return buffer.getvalue()


def test_ids_of_deleted_newest_rows_are_not_given_again_even_after_a_restart(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    store = Store(settings)
    a, _ = store.add_image(_png(20, 20, 1), "a.png")
    b, _ = store.add_image(_png(20, 20, 2), "b.png")
    first = store.add_box(a.id, 0, 0, 5, 5, "cat")
    newest = store.add_box(a.id, 1, 1, 5, 5, "cat")
    store.delete_box(newest.id)
    again = store.add_box(a.id, 1, 1, 5, 5, "cat")
    assert (first.id, newest.id, again.id) == (1, 2, 3)
    store.delete_image(b.id)
    store.close()
    store = Store(settings)
    store.delete_box(again.id)
    assert store.add_box(a.id, 2, 2, 5, 5, "dog").id == 4
    c, _ = store.add_image(_png(20, 20, 3), "c.png")
    assert c.id == 3


def _legacy_store(path: Path) -> None:
    """A database as FeatureGap wrote it before AUTOINCREMENT (rowid ids, reused)."""
    dialect = sqlite_dialect.dialect()
    connection = sqlite3.connect(path)
    for table in Base.metadata.sorted_tables:
        create = str(CreateTable(table).compile(dialect=dialect))
        connection.execute(create.replace(" AUTOINCREMENT", ""))
        for index in table.indexes:
            connection.execute(str(CreateIndex(index).compile(dialect=dialect)))
    connection.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
    connection.execute(
        "INSERT INTO images (id, sha256, filename, width, height, format, "
        "created_at) VALUES (1, ?, 'a.png', 20, 20, 'PNG', '2026-01-01')",
        ("0" * 64,),
    )
    for box_id in (1, 2, 3):
        connection.execute(
            "INSERT INTO boxes (id, image_id, x, y, w, h, label, created_at) "
            "VALUES (?, 1, ?, 0, 5, 5, 'cat', '2026-01-01')",
            (box_id, box_id),
        )
    connection.execute(
        "INSERT INTO results (key, kind, json, image_id, created_at) "
        "VALUES ('k', 'kind', '[1]', 1, '2026-01-01')"
    )
    connection.execute("DELETE FROM boxes WHERE id = 3")
    # The old behaviour this upgrade ends: the deleted newest id comes back.
    reused = connection.execute(
        "INSERT INTO boxes (image_id, x, y, w, h, label, created_at) "
        "VALUES (1, 9, 0, 5, 5, 'dog', '2026-01-01')"
    ).lastrowid
    assert reused == 3
    connection.execute("DELETE FROM boxes WHERE id = 3")
    connection.commit()
    connection.close()


def test_a_store_written_before_autoincrement_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _legacy_store(path)
    store = Store(Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{path}"))
    with sqlite3.connect(path) as connection:
        sql = dict(connection.execute("SELECT name, sql FROM sqlite_master"))
    assert "AUTOINCREMENT" in sql["images"] and "AUTOINCREMENT" in sql["boxes"]
    assert {"ix_boxes_image_id", "ix_boxes_label", "ix_images_sha256"} <= set(sql)
    assert "_new_boxes" not in sql and "_new_images" not in sql
    assert [(b.id, b.x, b.label) for b in store.boxes()] == [(1, 1.0, "cat"), (2, 2.0, "cat")]
    assert store.get_image(1).box_count == 2 and store.get_result("k") == [1]
    # Only ids deleted before the upgrade can come back (once); from now on ids only grow.
    third = store.add_box(1, 3, 3, 5, 5, "cat")
    store.delete_box(third.id)
    assert store.add_box(1, 3, 3, 5, 5, "cat").id == third.id + 1
    store.close()
    # Foreign keys survive the rebuild: deleting the image still drops its boxes and results.
    store = Store(Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{path}"))
    store.delete_image(1)
    assert store.boxes() == [] and store.count_results() == 0


def test_import_boxes_adds_only_what_is_missing_and_counts_repeats(tmp_path: Path) -> None:
    store = Store(Settings(data_dir=tmp_path / "data"))
    a, _ = store.add_image(_png(37, 23, 4), "a.png")
    b, _ = store.add_image(_png(37, 23, 5), "b.png")
    wanted = {
        a.id: [(1.5, 2, 3, 4, "cat"), (1.5, 2, 3, 4, "cat"), (-2, 0, 5, 5, "dog")],
        b.id: [(0, 0, 37, 23, "cafe\u0301")],
    }
    first = store.import_boxes(wanted)
    assert (first.added, first.present, first.skipped) == (4, 0, {})
    again = store.import_boxes(wanted)
    assert (again.added, again.present, again.skipped) == (0, 4, {})
    boxes = store.boxes()
    assert sorted((x.image_id, x.x, x.y, x.w, x.h, x.label) for x in boxes) == [
        (a.id, 0, 0, 3, 5, "dog"),
        (a.id, 1.5, 2, 3, 4, "cat"),
        (a.id, 1.5, 2, 3, 4, "cat"),
        (b.id, 0, 0, 37, 23, "caf\u00e9"),
    ]
    store.delete_box(next(x.id for x in boxes if x.label == "cat"))
    third = store.import_boxes(wanted)
    assert (third.added, third.present) == (1, 3)
    assert store.labels() == {"caf\u00e9": 1, "cat": 2, "dog": 1}


def test_import_boxes_skips_a_bad_image_whole_and_keeps_the_others(tmp_path: Path) -> None:
    store = Store(Settings(data_dir=tmp_path / "data", max_boxes_per_image=2))
    a, _ = store.add_image(_png(20, 20, 6), "a.png")
    b, _ = store.add_image(_png(20, 20, 7), "b.png")
    count = store.import_boxes(
        {
            a.id: [(0, 0, 5, 5, "ok"), (30, 30, 5, 5, "outside")],
            b.id: [(0, 0, 5, 5, "ok")],
            999: [(0, 0, 5, 5, "ok")],
        }
    )
    assert count.added == 1 and set(count.skipped) == {a.id, 999}
    assert "20×20" in count.skipped[a.id] and "no image with id 999" in count.skipped[999]
    assert [(x.image_id, x.label) for x in store.boxes()] == [(b.id, "ok")]
    with pytest.raises(ValueError, match="limit of 2 boxes"):
        store.import_image_boxes(b.id, [(0, 0, 5, 5, "ok"), (1, 1, 5, 5, "x"), (2, 2, 5, 5, "y")])
    assert store.import_image_boxes(b.id, [(0, 0, 5, 5, "ok"), (1, 1, 5, 5, "x")]).added == 1


@pytest.mark.parametrize("label", ["a\x00b", "tab\tin", "zero\u200bwidth", "x" * 201, "  "])
def test_every_store_entry_refuses_bad_labels(tmp_path: Path, label: str) -> None:
    store = Store(Settings(data_dir=tmp_path / "data"))
    image, _ = store.add_image(_png(20, 20, 8), "a.png")
    box = store.add_box(image.id, 0, 0, 5, 5, "ok")
    for attempt in (
        lambda: store.add_box(image.id, 0, 0, 5, 5, label),
        lambda: store.update_box(box.id, label=label),
        lambda: store.import_image_boxes(image.id, [(1, 1, 5, 5, label)]),
    ):
        with pytest.raises(ValueError, match="label"):
            attempt()
    if label.strip():
        with pytest.raises(ValueError, match="image label"):
            store.add_image(_png(20, 20, 9), "b.png", label=label)
    assert [x.label for x in store.boxes()] == ["ok"]


def test_labels_are_stored_nfc_and_found_by_any_form(tmp_path: Path) -> None:
    store = Store(Settings(data_dir=tmp_path / "data"))
    image, _ = store.add_image(_png(20, 20, 10), "we\x07ird\u200b.png", label=" cafe\u0301 ")
    assert image.label == "caf\u00e9" and image.filename == "weird.png"
    box = store.add_box(image.id, 0, 0, 5, 5, "\u212bngstr\u00f6m ")
    assert box.label == "\u00c5ngstr\u00f6m"
    assert store.boxes(labels=["A\u030angstro\u0308m"]) == [box]
    assert [i.id for i in store.images(label="cafe\u0301")] == [image.id]
    assert store.update_box(box.id, label="cafe\u0301").label == "caf\u00e9"


def test_a_failed_upgrade_leaves_the_old_store_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    _legacy_store(path)
    with sqlite3.connect(path) as connection:
        schema_before = sorted(connection.execute("SELECT name, sql FROM sqlite_master"))
    real = Store._rebuild
    done: list[str] = []

    def failing(self: Store, connection: object, table: object) -> None:
        if done:
            raise OSError("disk full")
        real(self, connection, table)  # type: ignore[arg-type]
        done.append("one")

    monkeypatch.setattr(Store, "_rebuild", failing)
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{path}")
    with pytest.raises(OSError, match="disk full"):
        Store(settings)
    with sqlite3.connect(path) as connection:
        assert sorted(connection.execute("SELECT name, sql FROM sqlite_master")) == schema_before
        assert connection.execute("SELECT id FROM boxes ORDER BY id").fetchall() == [(1,), (2,)]
    monkeypatch.setattr(Store, "_rebuild", real)
    assert [b.id for b in Store(settings).boxes()] == [1, 2]
