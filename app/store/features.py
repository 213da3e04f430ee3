"""The per-box descriptor store: float32 ``.npy`` segments on disk, their index in SQL.

A *feature set* is what descriptors were computed with (model, weights hash, layer,
descriptor, grid size, input mode); all its rows have one shape. Descriptors are appended
in segments (one ``.npy`` file of ``boxes × (rows_per_box · width)`` float32, written whole
to a temp file and renamed), and one index row per box says which segment and position hold
it, with the image hash and box geometry it was computed for. A lookup returns only rows
whose box still has that image and geometry, so an edited box misses and is extracted
again; a box edit or delete also drops its rows (:meth:`FeatureStore.forget_boxes`), and
:meth:`FeatureStore.compact` rewrites segments that hold dead rows.

Files are read through ``np.load(mmap_mode="r")``: a lookup reads only the rows it asks for.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from app.store.files import TEMP_MAX_AGE_S, atomic_write, remove_leftover_temp_files
from app.store.tables import BoxRow, FeatureRow, FeatureSegmentRow, FeatureSetRow

__all__ = ["FeatureSet", "FeatureStore", "StoredBox", "StoreStats"]

_CHUNK = 500  # ids per IN (...): SQLite allows 999 parameters per statement
_OPEN_FILES = 64


@dataclass(frozen=True)
class FeatureSet:
    """A feature set's key and the shape of one box's descriptor (``rows_per_box × width``;
    ``gap`` and ``grid`` have one row)."""

    id: int
    model: str
    weights_sha256: str
    layer: str
    descriptor: str
    grid_size: int
    mode: str
    rows_per_box: int
    width: int

    @property
    def row_floats(self) -> int:
        """Floats per box."""
        return self.rows_per_box * self.width


@dataclass(frozen=True)
class StoredBox:
    """What a descriptor is keyed by besides its feature set: the box, the hash of its
    image, and its geometry (clipped, as the store keeps boxes)."""

    box_id: int
    image_sha256: str
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class StoreStats:
    """Sizes of the descriptor store: live descriptors' raw float32 bytes, the bytes of the
    segment files on disk, and counts."""

    sets: int
    segments: int
    rows: int
    raw_bytes: int
    file_bytes: int


def _chunks(items: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class FeatureStore:
    """Descriptors of boxes, persisted under ``directory`` and indexed in the store's SQL.

    Built by :class:`app.store.Store` (``store.features``), which hands over its sessions.

    Args:
        directory: where segment files live (``<data_dir>/features``).
        read: opens a read session.
        write: opens a serialised write transaction, committed on success.
    """

    def __init__(
        self,
        directory: Path,
        read: Callable[[], AbstractContextManager[Session]],
        write: Callable[[], AbstractContextManager[Session]],
    ) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._read, self._write = read, write
        self._maps: dict[str, np.ndarray] = {}
        self._maps_lock = threading.Lock()
        self._sets: dict[tuple[str | int, ...], FeatureSet] = {}
        remove_leftover_temp_files(self.directory)

    # -- feature sets -----------------------------------------------------------------------

    def feature_set(
        self,
        *,
        model: str,
        weights_sha256: str,
        layer: str,
        descriptor: str,
        grid_size: int,
        mode: str,
        rows_per_box: int,
        width: int,
    ) -> FeatureSet:
        """The feature set with this key, created when new.

        ``grid_size`` is stored as 0 for ``gap`` (it does not change a ``gap`` descriptor).

        Raises:
            ValueError: the set exists with another descriptor shape (the layer changed
                under the same weights hash: a bug), or a size is not positive.
        """
        if rows_per_box < 1 or width < 1:
            raise ValueError(f"a descriptor needs positive sizes, got {rows_per_box}×{width}")
        grid = 0 if descriptor == "gap" else grid_size
        # Sets are never deleted or reshaped, so one seen is served from memory: every
        # analysis asks for its sets, and a write transaction each time was most of the
        # overhead of a cached answer.
        remembered = (model, weights_sha256, layer, descriptor, grid, mode, rows_per_box, width)
        known = self._sets.get(remembered)
        if known is not None:
            return known
        where = (
            FeatureSetRow.model == model,
            FeatureSetRow.weights_sha256 == weights_sha256,
            FeatureSetRow.layer == layer,
            FeatureSetRow.descriptor == descriptor,
            FeatureSetRow.grid_size == grid,
            FeatureSetRow.mode == mode,
        )
        with self._write() as session:
            row = session.scalar(select(FeatureSetRow).where(*where))
            if row is None:
                row = FeatureSetRow(
                    model=model,
                    weights_sha256=weights_sha256,
                    layer=layer,
                    descriptor=descriptor,
                    grid_size=grid,
                    mode=mode,
                    rows_per_box=rows_per_box,
                    width=width,
                )
                session.add(row)
                session.flush()
            elif (row.rows_per_box, row.width) != (rows_per_box, width):
                raise ValueError(
                    f"stored {descriptor} descriptors of {model}/{layer} are "
                    f"{row.rows_per_box}×{row.width}, now {rows_per_box}×{width}; "
                    "drop the feature store (FEATUREGAP_DATA_DIR/features) and extract again"
                )
            found = _feature_set(row)
        self._sets[remembered] = found
        return found

    # -- reading ----------------------------------------------------------------------------

    def present(self, feature_set: FeatureSet, boxes: Sequence[StoredBox]) -> set[int]:
        """Ids of ``boxes`` whose descriptor is stored for this image hash and geometry."""
        return set(self._locations(feature_set, boxes))

    def read(self, feature_set: FeatureSet, boxes: Sequence[StoredBox]) -> dict[int, np.ndarray]:
        """The stored descriptors of ``boxes`` (those present), each ``rows_per_box ×
        width`` float32 (a copy, not a view of the file).

        A box whose segment was compacted away between the lookup and the read is left
        out, like a box that was never stored: callers extract what is missing.
        """
        where = self._locations(feature_set, boxes)
        by_file: dict[str, list[tuple[int, int]]] = {}
        for box_id, (filename, position) in where.items():
            by_file.setdefault(filename, []).append((box_id, position))
        out: dict[int, np.ndarray] = {}
        shape = (feature_set.rows_per_box, feature_set.width)
        for filename, items in by_file.items():
            try:
                array = self._open(filename)
            except FileNotFoundError:  # compacted away since the lookup: those boxes miss
                continue
            positions = np.fromiter((p for _, p in items), dtype=np.int64, count=len(items))
            order = np.argsort(positions, kind="stable")  # read the file front to back
            rows = np.asarray(array[positions[order]], dtype=np.float32)
            for k, row in zip(order.tolist(), rows, strict=True):
                out[items[k][0]] = row.reshape(shape)
        return out

    def locate(
        self, feature_set: FeatureSet, boxes: Sequence[StoredBox]
    ) -> dict[int, tuple[Path, int]]:
        """Where each present box's descriptor lies: its segment file and row in it (for
        readers in other processes; a later :meth:`compact` may move it)."""
        found = self._locations(feature_set, boxes)
        return {box_id: (self.directory / name, row) for box_id, (name, row) in found.items()}

    def _locations(
        self, feature_set: FeatureSet, boxes: Sequence[StoredBox]
    ) -> dict[int, tuple[str, int]]:
        wanted = {b.box_id: b for b in boxes}
        found: dict[int, tuple[str, int]] = {}
        ids = list(wanted)
        with self._read() as session:
            for chunk in _chunks(ids):
                # Columns, not ORM objects: a lookup of 10⁴ boxes stays in milliseconds.
                query = (
                    select(
                        FeatureRow.box_id,
                        FeatureRow.image_sha256,
                        FeatureRow.x,
                        FeatureRow.y,
                        FeatureRow.w,
                        FeatureRow.h,
                        FeatureSegmentRow.filename,
                        FeatureRow.position,
                    )
                    .join(FeatureSegmentRow, FeatureSegmentRow.id == FeatureRow.segment_id)
                    .where(FeatureRow.set_id == feature_set.id, FeatureRow.box_id.in_(chunk))
                )
                for box_id, sha, x, y, w, h, filename, position in session.execute(query):
                    box = wanted[box_id]
                    if (sha, x, y, w, h) == (box.image_sha256, box.x, box.y, box.w, box.h):
                        found[box_id] = (filename, int(position))
        return found

    def _open(self, filename: str) -> np.ndarray:
        with self._maps_lock:
            array = self._maps.get(filename)
            if array is None:
                if len(self._maps) >= _OPEN_FILES:
                    self._maps.pop(next(iter(self._maps)))
                array = np.load(self.directory / filename, mmap_mode="r")
                self._maps[filename] = array
            return array

    # -- writing ----------------------------------------------------------------------------

    def write(self, feature_set: FeatureSet, boxes: Sequence[StoredBox], values: np.ndarray) -> int:
        """Store descriptors of ``boxes`` (one segment), replacing older rows of those boxes.

        Boxes deleted meanwhile are left out (their descriptors would never be read).

        Args:
            feature_set: the set they belong to.
            boxes: the boxes, with the image hash and geometry they were computed for.
            values: ``len(boxes) × rows_per_box × width`` (or ``len(boxes) × row_floats``).

        Returns:
            How many boxes were indexed.

        Raises:
            ValueError: ``values`` does not fit ``boxes`` and the set's shape.
        """
        if not boxes:
            return 0
        flat = np.ascontiguousarray(values, dtype=np.float32).reshape(len(boxes), -1)
        if flat.shape[1] != feature_set.row_floats:
            raise ValueError(
                f"descriptors of {flat.shape[1]} floats for a set of "
                f"{feature_set.row_floats} floats per box"
            )
        filename = f"{feature_set.id}-{uuid.uuid4().hex}.npy"
        _save(self.directory / filename, flat)
        try:
            with self._write() as session:
                ids = [b.box_id for b in boxes]
                alive: set[int] = set()
                for chunk in _chunks(ids):
                    alive.update(session.scalars(select(BoxRow.id).where(BoxRow.id.in_(chunk))))
                    session.execute(
                        delete(FeatureRow).where(
                            FeatureRow.set_id == feature_set.id, FeatureRow.box_id.in_(chunk)
                        )
                    )
                segment = FeatureSegmentRow(
                    set_id=feature_set.id, filename=filename, boxes=len(boxes)
                )
                session.add(segment)
                session.flush()
                rows = [
                    {
                        "set_id": feature_set.id,
                        "box_id": b.box_id,
                        "image_sha256": b.image_sha256,
                        "x": b.x,
                        "y": b.y,
                        "w": b.w,
                        "h": b.h,
                        "segment_id": segment.id,
                        "position": i,
                    }
                    for i, b in enumerate(boxes)
                    if b.box_id in alive
                ]
                if rows:  # one executemany, not an ORM object a row (a tenth of the time)
                    session.execute(insert(FeatureRow), rows)
        except BaseException:
            (self.directory / filename).unlink(missing_ok=True)
            raise
        return len(rows)

    def forget_boxes(self, session: Session, box_ids: Iterable[int]) -> None:
        """Drop every stored descriptor of these boxes, inside the caller's transaction
        (a box edit or delete; the space is reclaimed by :meth:`compact`)."""
        ids = list(box_ids)
        for chunk in _chunks(ids):
            session.execute(delete(FeatureRow).where(FeatureRow.box_id.in_(chunk)))

    # -- housekeeping -----------------------------------------------------------------------

    def compact(self, min_dead_share: float = 0.25) -> int:
        """Rewrite segments whose share of dead rows (edited or deleted boxes) is at least
        ``min_dead_share``, delete empty ones, and delete files no segment names.

        Returns:
            How many segment files were removed.
        """
        with self._read() as session:
            live = {
                segment_id: int(n)
                for segment_id, n in session.execute(
                    select(FeatureRow.segment_id, func.count()).group_by(FeatureRow.segment_id)
                )
            }
            segments = list(session.scalars(select(FeatureSegmentRow)))
            sets = {row.id: _feature_set(row) for row in session.scalars(select(FeatureSetRow))}
        removed = 0
        for segment in segments:
            alive = int(live.get(segment.id, 0))
            if alive and (segment.boxes - alive) < min_dead_share * segment.boxes:
                continue
            if alive:
                self._rewrite(sets[segment.set_id], segment.id, segment.filename)
            else:
                with self._write() as session:
                    session.execute(
                        delete(FeatureSegmentRow).where(FeatureSegmentRow.id == segment.id)
                    )
            self._drop_file(segment.filename)
            removed += 1
        with self._read() as session:
            known = set(session.scalars(select(FeatureSegmentRow.filename)))
        cutoff = time.time() - TEMP_MAX_AGE_S
        for path in self.directory.glob("*.npy"):
            with suppress(OSError):
                if path.name not in known and path.stat().st_mtime < cutoff:
                    self._drop_file(path.name)
                    removed += 1
        return removed

    def _rewrite(self, feature_set: FeatureSet, segment_id: int, filename: str) -> None:
        """Move a segment's live rows into a new file, then drop the old segment."""
        with self._read() as session:
            rows = list(
                session.scalars(
                    select(FeatureRow)
                    .where(FeatureRow.segment_id == segment_id)
                    .order_by(FeatureRow.position)
                )
            )
        old = self._open(filename)
        values = np.asarray(old[[r.position for r in rows]], dtype=np.float32)
        new_name = f"{feature_set.id}-{uuid.uuid4().hex}.npy"
        _save(self.directory / new_name, values)
        with self._write() as session:
            segment = FeatureSegmentRow(set_id=feature_set.id, filename=new_name, boxes=len(rows))
            session.add(segment)
            session.flush()
            for position, row in enumerate(rows):
                session.execute(
                    update(FeatureRow)
                    .where(
                        FeatureRow.set_id == row.set_id,
                        FeatureRow.box_id == row.box_id,
                        FeatureRow.segment_id == segment_id,
                    )
                    .values(segment_id=segment.id, position=position)
                )
            session.execute(delete(FeatureSegmentRow).where(FeatureSegmentRow.id == segment_id))

    def _drop_file(self, filename: str) -> None:
        with self._maps_lock:
            self._maps.pop(filename, None)
        (self.directory / filename).unlink(missing_ok=True)

    def stats(self) -> StoreStats:
        """Live rows, their raw float32 bytes, and the segment files' size on disk."""
        with self._read() as session:
            per_set = [
                (int(floats), int(n))
                for floats, n in session.execute(
                    select(FeatureSetRow.rows_per_box * FeatureSetRow.width, func.count())
                    .join(FeatureRow, FeatureRow.set_id == FeatureSetRow.id)
                    .group_by(FeatureSetRow.id, FeatureSetRow.rows_per_box, FeatureSetRow.width)
                )
            ]
            names = list(session.scalars(select(FeatureSegmentRow.filename)))
            sets = int(session.scalar(select(func.count()).select_from(FeatureSetRow)) or 0)
        rows = sum(n for _, n in per_set)
        raw = sum(4 * floats * n for floats, n in per_set)
        size = 0
        for name in names:
            with suppress(OSError):
                size += (self.directory / name).stat().st_size
        return StoreStats(sets, len(names), rows, raw, size)


def _feature_set(row: FeatureSetRow) -> FeatureSet:
    return FeatureSet(
        row.id,
        row.model,
        row.weights_sha256,
        row.layer,
        row.descriptor,
        row.grid_size,
        row.mode,
        row.rows_per_box,
        row.width,
    )


def _save(path: Path, values: np.ndarray) -> None:
    """Write an ``.npy`` so that readers see the whole file or none."""
    atomic_write(path, lambda handle: np.save(handle, values, allow_pickle=False), ".npy")
