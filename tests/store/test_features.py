"""The per-box descriptor store: round trip, keys, invalidation by box edits and deletes,
compaction, and its size against the raw descriptors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.config import Settings
from app.store import BoxRecord, Store
from app.store.features import FeatureSet, StoredBox


@pytest.fixture
def store(tmp_path: Path, photo: object) -> Iterator[Store]:
    one = Store(Settings(data_dir=tmp_path / "data"))
    for name in ("chelsea", "coffee"):
        image = one.add_image(photo.png(name), f"{name}.png")[0]  # type: ignore[attr-defined]
        one.add_boxes(image.id, [(10 + k, 20, 31 + k, 17, f"l{k % 3}") for k in range(7)])
    yield one
    one.close()


def _keys(store: Store, boxes: list[BoxRecord]) -> list[StoredBox]:
    images = store.get_images({b.image_id for b in boxes})
    return [StoredBox(b.id, images[b.image_id].sha256, b.x, b.y, b.w, b.h) for b in boxes]


def _set(store: Store, layer: str = "blocks.3", rows: int = 1, width: int = 37) -> FeatureSet:
    return store.features.feature_set(
        model="m",
        weights_sha256="ab" * 32,
        layer=layer,
        descriptor="pixels" if rows > 1 else "grid",
        grid_size=3,
        mode="resize",
        rows_per_box=rows,
        width=width,
    )


def test_round_trip_is_exact_across_segments_and_sets(store: Store) -> None:
    rng = np.random.default_rng(7)
    boxes = store.boxes()
    keys = _keys(store, boxes)
    one, other = _set(store), _set(store, rows=9, width=5)
    assert _set(store).id == one.id  # the same key is the same set
    first = rng.standard_normal((9, 37)).astype(np.float32)
    second = rng.standard_normal((len(boxes) - 9, 37)).astype(np.float32)
    assert store.features.write(one, keys[:9], first) == 9
    assert store.features.write(one, keys[9:], second) == len(boxes) - 9
    pixels = rng.standard_normal((len(boxes), 9, 5)).astype(np.float32)
    store.features.write(other, keys, pixels)

    read = store.features.read(one, keys[::-1])  # any order, from two files
    expected = np.concatenate([first, second])
    for k, key in enumerate(keys):
        np.testing.assert_array_equal(read[key.box_id], expected[k][None])
    read = store.features.read(other, keys)
    for k, key in enumerate(keys):
        np.testing.assert_array_equal(read[key.box_id], pixels[k])
    # Another process (a new Store on the same data dir) reads the same bytes.
    again = Store(store.settings)
    try:
        assert np.array_equal(again.features.read(one, keys[:1])[keys[0].box_id], first[:1])
    finally:
        again.close()


def test_a_row_is_read_only_for_its_image_and_geometry(store: Store) -> None:
    boxes = store.boxes()
    keys = _keys(store, boxes)
    feature_set = _set(store)
    store.features.write(feature_set, keys, np.ones((len(keys), 37), np.float32))
    key = keys[0]
    moved = StoredBox(key.box_id, key.image_sha256, key.x + 0.5, key.y, key.w, key.h)
    other_image = StoredBox(key.box_id, "0" * 64, key.x, key.y, key.w, key.h)
    assert store.features.present(feature_set, [moved, other_image, keys[1]]) == {keys[1].box_id}
    with pytest.raises(ValueError, match="drop the feature store"):
        _set(store, width=38)


def test_box_edits_and_deletes_invalidate_exactly_their_rows(store: Store) -> None:
    boxes = store.boxes()
    keys = _keys(store, boxes)
    sets = [_set(store), _set(store, layer="conv_head")]
    values = np.arange(len(keys) * 37, dtype=np.float32).reshape(len(keys), 37)
    for feature_set in sets:
        store.features.write(feature_set, keys, values)
    edited, relabelled, deleted = boxes[0], boxes[1], boxes[2]
    store.update_box(edited.id, w=edited.w + 3)
    store.update_box(relabelled.id, label="renamed")  # same geometry: still valid
    store.delete_box(deleted.id)
    for feature_set in sets:
        there = store.features.present(feature_set, keys)
        assert there == {k.box_id for k in keys} - {edited.id, deleted.id}
    # The rows are gone from the index, not merely unmatched: the old key misses too.
    with store.session() as session:
        from sqlalchemy import select

        from app.store.tables import FeatureRow

        ids = set(session.scalars(select(FeatureRow.box_id)))
    assert ids == {k.box_id for k in keys} - {edited.id, deleted.id}
    # Deleting an image drops its boxes' rows.
    store.delete_image(boxes[-1].image_id)
    left = {b.id for b in boxes if b.image_id != boxes[-1].image_id} - {edited.id, deleted.id}
    assert store.features.present(sets[0], keys) == left


def test_write_skips_boxes_deleted_meanwhile(store: Store) -> None:
    boxes = store.boxes()
    keys = _keys(store, boxes[:4])
    store.delete_box(boxes[1].id)
    assert store.features.write(_set(store), keys, np.zeros((4, 37), np.float32)) == 3


def test_compaction_rewrites_segments_with_dead_rows_and_keeps_values(store: Store) -> None:
    rng = np.random.default_rng(3)
    boxes = store.boxes()
    keys = _keys(store, boxes)
    feature_set = _set(store)
    values = rng.standard_normal((len(keys), 37)).astype(np.float32)
    store.features.write(feature_set, keys[:7], values[:7])
    store.features.write(feature_set, keys[7:], values[7:])
    for box in boxes[:5]:  # 5 of 7 dead in the first segment, none in the second
        store.delete_box(box.id)
    before = store.features.stats()
    assert before.segments == 2 and before.rows == len(keys) - 5
    assert store.features.compact() == 1
    after = store.features.stats()
    assert after.segments == 2 and after.rows == before.rows
    assert after.file_bytes < before.file_bytes
    read = store.features.read(feature_set, keys)
    assert set(read) == {k.box_id for k in keys[5:]}
    for k in range(5, len(keys)):
        np.testing.assert_array_equal(read[keys[k].box_id][0], values[k])
    for box in boxes[5:7]:  # the rewritten segment empties: it goes
        store.delete_box(box.id)
    assert store.features.compact() == 1
    assert store.features.stats().segments == 1
    assert len(list(store.features.directory.glob("*.npy"))) == 1


def test_files_add_little_to_the_raw_descriptors(store: Store) -> None:
    boxes = store.boxes()
    keys = _keys(store, boxes)
    feature_set = _set(store, width=1280)  # a gap descriptor of EfficientNet's head
    store.features.write(feature_set, keys, np.zeros((len(keys), 1280), np.float32))
    stats = store.features.stats()
    assert stats.raw_bytes == len(keys) * 1280 * 4
    assert stats.raw_bytes <= stats.file_bytes <= 1.01 * stats.raw_bytes


def test_a_bad_shape_is_refused(store: Store) -> None:
    keys = _keys(store, store.boxes()[:2])
    with pytest.raises(ValueError, match="floats per box"):
        store.features.write(_set(store), keys, np.zeros((2, 36), np.float32))
    with pytest.raises(ValueError, match="positive sizes"):
        _set(store, width=0)


def test_a_feature_set_once_seen_is_remembered_and_another_shape_still_refused(
    store: Store,
) -> None:
    first = _set(store)
    writes = []
    real = store.features._write

    def counted() -> object:
        writes.append(1)
        return real()

    store.features._write = counted  # type: ignore[method-assign]
    assert _set(store) == first and writes == []  # no transaction for a known set
    assert _set(store, layer="other") != first and writes == [1]
    with pytest.raises(ValueError, match="now 1×38"):
        _set(store, width=38)  # the same key with another shape goes to the table again
    reopened = Store(store.settings)  # another process's view: the row, not the memory
    try:
        assert (
            reopened.features.feature_set(
                model="m",
                weights_sha256="ab" * 32,
                layer="blocks.3",
                descriptor="grid",
                grid_size=3,
                mode="resize",
                rows_per_box=1,
                width=37,
            )
            == first
        )
    finally:
        reopened.close()


def test_a_segment_gone_since_the_lookup_reads_as_missing(store: Store) -> None:
    keys = _keys(store, store.boxes())
    feature_set = _set(store)
    store.features.write(feature_set, keys[:3], np.ones((3, 37), np.float32))
    store.features.write(feature_set, keys[3:], np.zeros((len(keys) - 3, 37), np.float32))
    first = next(iter(store.features.locate(feature_set, keys[:1]).values()))[0]
    first.unlink()  # as a compaction in another process would
    read = store.features.read(feature_set, keys)
    assert set(read) == {k.box_id for k in keys[3:]}


def test_dense_runs_sparse_ids_and_a_box_asked_twice_read_their_own_rows(store: Store) -> None:
    # Enough boxes for runs of ids fetched with one BETWEEN (at least _RUN of them, at
    # least half of the ids they span), ids inside a run that were not asked, sparse ids,
    # and one box asked twice: each row must be its own box's.
    from app.store.features import _RUN, _id_runs

    image = store.images()[0]
    store.add_boxes(image.id, [(1 + k % 50, 2, 10, 10, "many") for k in range(3 * _RUN)])
    boxes = store.boxes()
    keys = _keys(store, boxes)
    feature_set = _set(store)
    rng = np.random.default_rng(3)
    written = rng.standard_normal((len(keys), 37)).astype(np.float32)
    stored = [k for k in range(len(keys)) if k % 7 != 3]  # some boxes never stored
    store.features.write(feature_set, [keys[k] for k in stored], written[stored])
    asked = [k for k in range(len(keys)) if k % 5 != 1]  # holes inside the dense run
    asked = [*asked[::-1], asked[4], len(keys) - 1]  # any order, one asked twice, a last one
    runs, _ = _id_runs(sorted({keys[k].box_id for k in asked}))
    assert runs  # the BETWEEN path is taken
    values, found = store.features.read_rows(feature_set, [keys[k] for k in asked])
    assert found.tolist() == [k % 7 != 3 for k in asked]
    for row, k in zip(values, asked, strict=True):
        np.testing.assert_array_equal(row, written[k] if k % 7 != 3 else np.zeros(37))
