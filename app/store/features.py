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
_RUN = 32  # ids fetched with one BETWEEN rather than in IN lists, at least


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


def _id_runs(ids: Sequence[int]) -> tuple[list[tuple[int, int]], list[int]]:
    """Sorted distinct ``ids`` split into dense runs ``(lo, hi)`` (at least ``_RUN`` ids,
    at least half of the ids they span) and the sparse rest."""
    runs: list[tuple[int, int]] = []
    sparse: list[int] = []
    start = 0
    for end in range(1, len(ids) + 1):
        # close the run at ``end`` when the next id would leave it less than half full
        if end < len(ids) and ids[end] - ids[start] + 1 <= 2 * (end - start + 1):
            continue
        if end - start >= _RUN:
            runs.append((ids[start], ids[end - 1]))
        else:
            sparse.extend(ids[start:end])
        start = end
    return runs, sparse


@dataclass(frozen=True)
class _Found:
    """Index rows found by a lookup: per box asked, the position of the first box with its
    id in the caller's list; per row found, the position of its box, its segment and its
    row in the segment; and the set's segment files by id."""

    first: np.ndarray
    index: np.ndarray
    segment: np.ndarray
    position: np.ndarray
    filenames: dict[int, str]


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
        found = self._lookup(feature_set, boxes)
        return {boxes[i].box_id for i in found.index.tolist()}

    def read(self, feature_set: FeatureSet, boxes: Sequence[StoredBox]) -> dict[int, np.ndarray]:
        """The stored descriptors of ``boxes`` (those present), each ``rows_per_box ×
        width`` float32 (a copy, not a view of the file).

        A box whose segment was compacted away between the lookup and the read is left
        out, like a box that was never stored: callers extract what is missing.
        """
        values, found = self.read_rows(feature_set, boxes)
        shape = (feature_set.rows_per_box, feature_set.width)
        return {boxes[i].box_id: values[i].reshape(shape) for i in np.flatnonzero(found).tolist()}

    def read_rows(
        self, feature_set: FeatureSet, boxes: Sequence[StoredBox]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The stored descriptors of ``boxes`` as one matrix, in the order of ``boxes``.

        Returns:
            ``values``, ``len(boxes) × row_floats`` float32 (a copy, not a view of the
            files; zeros in the rows of boxes not found), and ``found``, a boolean per box:
            stored for its image hash and geometry (and its segment still on disk).
        """
        values = np.zeros((len(boxes), feature_set.row_floats), dtype=np.float32)
        found = np.zeros(len(boxes), dtype=bool)
        where = self._lookup(feature_set, boxes)
        for segment_id in np.unique(where.segment).tolist():
            try:
                array = self._open(where.filenames[segment_id])
            except FileNotFoundError:  # compacted away since the lookup: those boxes miss
                continue
            chosen = where.segment == segment_id
            positions, index = where.position[chosen], where.index[chosen]
            order = np.argsort(positions, kind="stable")  # read the file front to back
            values[index[order]] = array[positions[order]]
            found[index] = True
        if len(where.first) and not np.array_equal(where.first, np.arange(len(boxes))):
            values, found = values[where.first], found[where.first]  # a box asked twice
        return values, found

    def locate(
        self, feature_set: FeatureSet, boxes: Sequence[StoredBox]
    ) -> dict[int, tuple[Path, int]]:
        """Where each present box's descriptor lies: its segment file and row in it (for
        readers in other processes; a later :meth:`compact` may move it)."""
        where = self._lookup(feature_set, boxes)
        return {
            boxes[i].box_id: (self.directory / where.filenames[segment], position)
            for i, segment, position in zip(
                where.index.tolist(),
                where.segment.tolist(),
                where.position.tolist(),
                strict=True,
            )
        }

    def _lookup(self, feature_set: FeatureSet, boxes: Sequence[StoredBox]) -> _Found:
        """The index rows of ``boxes`` that match their image hash and geometry.

        Dense runs of box ids (a label's boxes from one import) are fetched with one
        ``BETWEEN`` each, sparse ids with ``IN`` lists: a statement of 500 bound ids costs
        about as much to build as fetching its rows.
        """
        wanted: dict[int, int] = {}
        first = np.fromiter(
            (wanted.setdefault(b.box_id, i) for i, b in enumerate(boxes)),
            dtype=np.int64,
            count=len(boxes),
        )
        index: list[int] = []
        segments: list[int] = []
        positions: list[int] = []
        columns = (
            FeatureRow.box_id,
            FeatureRow.image_sha256,
            FeatureRow.x,
            FeatureRow.y,
            FeatureRow.w,
            FeatureRow.h,
            FeatureRow.segment_id,
            FeatureRow.position,
        )
        in_set = FeatureRow.set_id == feature_set.id
        ranges, sparse = _id_runs(sorted(wanted))
        conditions = [FeatureRow.box_id.between(lo, hi) for lo, hi in ranges]
        conditions += [FeatureRow.box_id.in_(chunk) for chunk in _chunks(sparse)]
        with self._read() as session:
            # Core rows on the session's connection, not ORM results: a lookup of 10⁴
            # boxes stays in milliseconds.
            connection = session.connection()
            for condition in conditions:
                for box_id, sha, x, y, w, h, segment, position in connection.execute(
                    select(*columns).where(in_set, condition)
                ):
                    i = wanted.get(box_id)
                    if i is None:
                        continue
                    box = boxes[i]
                    if (sha, x, y, w, h) == (box.image_sha256, box.x, box.y, box.w, box.h):
                        index.append(i)
                        segments.append(segment)
                        positions.append(position)
            names: dict[int, str] = {}
            if index:
                for segment, filename in connection.execute(
                    select(FeatureSegmentRow.id, FeatureSegmentRow.filename).where(
                        FeatureSegmentRow.id.in_(set(segments))  # only the segments found
                    )
                ):
                    names[segment] = filename
        return _Found(
            first,
            np.asarray(index, dtype=np.int64),
            np.asarray(segments, dtype=np.int64),
            np.asarray(positions, dtype=np.int64),
            names,
        )

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
