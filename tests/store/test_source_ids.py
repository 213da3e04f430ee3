"""Boxes keep the id they had in an imported file (``source_id``); older stores gain the
column at start with every row kept."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.store import Store


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (23, 37, 3), np.uint8)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def _columns(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        return [row[1] for row in connection.execute("PRAGMA table_info(boxes)")]


def test_a_store_without_source_ids_gains_the_column_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{path}")
    store = Store(settings)
    image, _ = store.add_image(_png(1), "a.png")
    kept = store.add_box(image.id, 1, 2, 3, 4, "cat")
    store.close()
    with sqlite3.connect(path) as connection:  # as a store of the previous release was
        connection.execute("ALTER TABLE boxes DROP COLUMN source_id")
    assert "source_id" not in _columns(path)
    store = Store(settings)
    assert "source_id" in _columns(path)
    assert store.boxes() == [kept] and kept.source_id is None
    added = store.import_boxes(
        {image.id: [(1, 2, 3, 4, "cat"), (5, 6, 7, 8, "dog")]}, {image.id: [41, 2**63 - 1]}
    )
    assert (added.added, added.present) == (1, 1)
    assert [(b.label, b.source_id) for b in store.boxes()] == [("cat", None), ("dog", 2**63 - 1)]
    store.close()
    assert [b.source_id for b in Store(settings).boxes()] == [None, 2**63 - 1]


def test_source_ids_must_match_the_boxes_one_for_one(tmp_path: Path) -> None:
    store = Store(Settings(data_dir=tmp_path / "data"))
    image, _ = store.add_image(_png(2), "a.png")
    count = store.import_boxes({image.id: [(1, 2, 3, 4, "cat")]}, {image.id: [1, 2]})
    assert count.added == 0 and "2 source ids for 1 boxes" in count.skipped[image.id]
    with pytest.raises(KeyError):
        store.get_box(1)
