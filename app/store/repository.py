"""The store: images on disk by content hash, boxes and cached results in SQLAlchemy.

Every method opens and closes its own short transaction and returns frozen records, so
callers in any thread never hold ORM objects past their session. Writes to SQLite go
through one process-level lock (SQLite allows one writer; the lock turns "database is
locked" races into a queue), and every SQLite connection runs in WAL mode with foreign
keys on and a busy timeout.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Select,
    Table,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.elements import ColumnElement

from app.boxes import Box, check_box
from app.config import Settings
from app.errors import NotFound
from app.formats.labels import clean_label, normalize_label
from app.images import DecodedImage, content_hash, decode_image
from app.lru import LRU
from app.store.features import FeatureStore
from app.store.files import atomic_write, remove_leftover_temp_files
from app.store.tables import (
    ADDED_COLUMNS,
    SCHEMA_VERSION,
    Base,
    BoxRow,
    ImageRow,
    JobRow,
    ResultRow,
    SchemaVersionRow,
)

__all__ = [
    "Store",
    "ImageRecord",
    "BoxRecord",
    "ImportCount",
    "JobRecord",
    "LabelSummary",
    "Page",
    "SchemaMismatchError",
    "UNFINISHED_JOB_STATES",
]

_EXTENSIONS = {
    "PNG": "png",
    "JPEG": "jpg",
    "MPO": "jpg",
    "WEBP": "webp",
    "BMP": "bmp",
    "GIF": "gif",
    "TIFF": "tif",
}
_Row = TypeVar("_Row", ImageRow, BoxRow)
_Item = TypeVar("_Item")
_MAX_ID = 2**63 - 1  # SQL BIGINT; larger ids cannot exist and would overflow the driver
_BoxTuple = tuple[float, float, float, float, str]


def _decoded_size(decoded: DecodedImage) -> int:
    """Bytes a decoded RGB picture holds (Pillow keeps 4 bytes a pixel)."""
    return decoded.width * decoded.height * 4


class SchemaMismatchError(RuntimeError):
    """The database was written by another schema version of FeatureGap."""


@dataclass(frozen=True)
class ImageRecord:
    """A stored image's row plus its number of boxes."""

    id: int
    sha256: str
    filename: str
    width: int
    height: int
    format: str
    label: str | None
    created_at: datetime
    box_count: int = 0
    box_labels: tuple[str, ...] = ()
    """The distinct labels of the image's boxes, sorted."""


@dataclass(frozen=True)
class BoxRecord:
    """A stored box in the displayed image's pixels."""

    id: int
    image_id: int
    x: float
    y: float
    w: float
    h: float
    label: str
    created_at: datetime
    source_id: int | None = None
    """The box's id in the file it was imported from (a COCO annotation id), if any."""


@dataclass(frozen=True)
class Page(Generic[_Item]):
    """One page of a keyset-paginated listing, ordered by id.

    ``next_after`` is the id to pass as ``after`` for the next page (None on the last page);
    ``total`` counts every row that matches the filters, on all pages.
    """

    items: list[_Item]
    next_after: int | None
    total: int


@dataclass(frozen=True)
class LabelSummary:
    """A box label with its number of boxes and of images holding such boxes."""

    label: str
    boxes: int
    images: int


@dataclass(frozen=True)
class ImportCount:
    """What :meth:`Store.import_boxes` did: boxes added, boxes already there, images skipped.

    ``skipped`` maps an image id to the reason none of its boxes were added.
    """

    added: int
    present: int
    skipped: dict[int, str]


@dataclass(frozen=True)
class JobRecord:
    """A stored job; ``result`` is the decoded JSON answer of a ``done`` job."""

    id: str
    kind: str
    state: str
    progress: float
    message: str
    result: Any
    error: str | None
    created_at: datetime
    finished_at: datetime | None


UNFINISHED_JOB_STATES = ("queued", "running")
"""Job states that a restart turns into ``interrupted``."""

_JOB_FIELDS = frozenset({"state", "progress", "message", "result", "error", "finished_at"})


def _utc(moment: datetime) -> datetime:
    # SQLite drops the zone; every time the store writes is UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# Columns, not ORM objects, where many rows are only read: an analysis reads its boxes and
# their images on every request, and building identity-mapped objects was most of that cost.
_BOX_COLUMNS = tuple(BoxRow.__table__.c)
_IMAGE_COLUMNS = tuple(ImageRow.__table__.c)


def _image_record(
    row: ImageRow | Row[Any], box_count: int = 0, box_labels: Sequence[str] = ()
) -> ImageRecord:
    return ImageRecord(
        row.id,
        row.sha256,
        row.filename,
        row.width,
        row.height,
        row.format,
        row.label,
        _utc(row.created_at),
        box_count,
        tuple(box_labels),
    )


def _box_record(row: BoxRow | Row[Any]) -> BoxRecord:
    return BoxRecord(
        row.id,
        row.image_id,
        float(row.x),
        float(row.y),
        float(row.w),
        float(row.h),
        row.label,
        _utc(row.created_at),
        row.source_id,
    )


def _job_record(row: JobRow) -> JobRecord:
    return JobRecord(
        row.id,
        row.kind,
        row.state,
        float(row.progress),
        row.message,
        None if row.result is None else json.loads(row.result),
        row.error,
        _utc(row.created_at),
        None if row.finished_at is None else _utc(row.finished_at),
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Store:
    """Images, boxes and cached results of one FeatureGap project.

    Args:
        settings: where the data lives (``data_dir``, ``database_url``) and the limits.

    Raises:
        SchemaMismatchError: the database was created by another schema version.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.images_dir = self.data_dir / "images"
        self.images_dir.mkdir(parents=True, exist_ok=True)
        remove_leftover_temp_files(self.images_dir, recursive=True)
        url = settings.sqlalchemy_url
        self.is_sqlite = url.startswith("sqlite")
        connect_args: dict[str, Any] = {}
        if self.is_sqlite:
            connect_args = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, connect_args=connect_args)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.RLock()
        self._probe: sqlite3.Connection | None = None
        self._probe_lock = threading.Lock()
        # bounded by bytes, not entries: sixteen 6300×6300 photos would keep 2.5 GB
        self._decoded: LRU[str, DecodedImage] = LRU(
            self.settings.max_decoded_bytes // 4, size=_decoded_size
        )
        self._create_or_check_schema()
        self.features = FeatureStore(self.data_dir / "features", self._read, self._write)

    # -- sessions ---------------------------------------------------------------------------

    def session(self) -> Session:
        """A new SQLAlchemy session (the caller closes it)."""
        return self._sessions()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One write transaction, serialised in this process, committed on success."""
        with self._write_lock, self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    @contextmanager
    def _core(self) -> Iterator[Connection]:
        """A plain connection for the reads every request makes: a fraction of an ORM
        session's cost on SQLite (bench_api's health and moved-box rows time them)."""
        with self.engine.connect() as connection:
            yield connection

    def _create_or_check_schema(self) -> None:
        with self._write_lock:
            Base.metadata.create_all(self.engine)
            if self.is_sqlite:
                self._upgrade_to_autoincrement()
            self._add_missing_columns()
            with self._sessions() as session, session.begin():
                versions = list(session.scalars(select(SchemaVersionRow.version)))
                if not versions:
                    session.add(SchemaVersionRow(version=SCHEMA_VERSION))
                elif versions != [SCHEMA_VERSION]:
                    raise SchemaMismatchError(
                        f"the store at {self.settings.sqlalchemy_url} has schema version "
                        f"{versions}, this FeatureGap needs {SCHEMA_VERSION}; use another "
                        "FEATUREGAP_DATA_DIR or FEATUREGAP_DATABASE_URL, or migrate the data"
                    )

    def _upgrade_to_autoincrement(self) -> None:
        """Rebuild SQLite tables written before their ids were AUTOINCREMENT.

        Such tables hand the id of a deleted newest row out again. The rebuild (SQLite's
        documented create-copy-drop-rename, with foreign keys off, in one transaction) keeps
        every row and id; from then on ids only grow. It cannot know ids that were deleted
        before it ran, so the largest id deleted before the upgrade may be given once more.
        """
        tables = [
            table
            for table in Base.metadata.sorted_tables
            if table.dialect_options["sqlite"]["autoincrement"]
        ]
        raw = self.engine.raw_connection()
        try:
            connection = raw.driver_connection
            assert connection is not None  # a fresh pool connection
            stale = [table for table in tables if not _has_autoincrement(connection, table)]
            if not stale:
                return
            connection.commit()
            isolation = connection.isolation_level
            connection.isolation_level = None  # explicit BEGIN/COMMIT: DDL inside the transaction
            connection.execute("PRAGMA foreign_keys=OFF")
            try:
                connection.execute("BEGIN IMMEDIATE")
                before = set(connection.execute("PRAGMA foreign_key_check").fetchall())
                for table in stale:
                    self._rebuild(connection, table)
                broken = set(connection.execute("PRAGMA foreign_key_check").fetchall()) - before
                if broken:
                    raise RuntimeError(
                        f"rebuilding the store's tables broke foreign keys "
                        f"{sorted(broken)[:5]}; the store was left unchanged"
                    )
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            finally:
                connection.execute("PRAGMA foreign_keys=ON")
                connection.isolation_level = isolation
        finally:
            raw.close()

    def _add_missing_columns(self) -> None:
        """Add the nullable columns of :data:`ADDED_COLUMNS` that an older store lacks.

        ``ALTER TABLE ... ADD COLUMN`` keeps every row (the new column is NULL in them); it
        runs in one transaction, so a store is upgraded whole or not at all.
        """
        inspector = inspect(self.engine)
        missing = []
        for table_name, names in ADDED_COLUMNS.items():
            have = {column["name"] for column in inspector.get_columns(table_name)}
            table = Base.metadata.tables[table_name]
            missing += [(table_name, table.c[name]) for name in names if name not in have]
        if not missing:
            return
        with self.engine.begin() as connection:
            for table_name, column in missing:
                kind = column.type.compile(dialect=self.engine.dialect)
                connection.execute(
                    text(f'ALTER TABLE "{table_name}" ADD COLUMN "{column.name}" {kind}')
                )

    def _rebuild(self, connection: Any, table: Table) -> None:
        dialect = self.engine.dialect
        name, new = table.name, f"_new_{table.name}"
        have = {row[1] for row in connection.execute(f'PRAGMA table_info("{name}")')}
        columns = ", ".join(f'"{c.name}"' for c in table.columns if c.name in have)
        create = str(CreateTable(table).compile(dialect=dialect)).strip()
        prefix = f"CREATE TABLE {name} ("
        assert create.startswith(prefix), create
        connection.execute(f'CREATE TABLE "{new}" (' + create[len(prefix) :])
        connection.execute(f'INSERT INTO "{new}" ({columns}) SELECT {columns} FROM "{name}"')
        connection.execute(f'DROP TABLE "{name}"')
        connection.execute(f'ALTER TABLE "{new}" RENAME TO "{name}"')
        for index in table.indexes:
            connection.execute(str(CreateIndex(index).compile(dialect=dialect)))

    def close(self) -> None:
        """Release the database connections."""
        with self._probe_lock:
            if self._probe is not None:
                self._probe.close()
                self._probe = None
        self.engine.dispose()

    # -- images -----------------------------------------------------------------------------

    def add_image(
        self, data: bytes, filename: str, label: str | None = None
    ) -> tuple[ImageRecord, bool]:
        """Store an image once per content.

        Args:
            data: the uploaded bytes (kept as they are).
            filename: the name the client gave; kept as metadata, never used as a path.
            label: an optional image-level label.

        Returns:
            The stored image and whether it was new (False: the same bytes were stored before).

        Raises:
            ValueError: the bytes are not a readable image or have too many pixels, or the
                label is not a clean label (see :func:`app.formats.labels.clean_label`).
        """
        if label is not None:
            label = clean_label(label, "the image label") if label.strip() else None
        sha = content_hash(data)
        existing = self._image_by_sha(sha)
        if existing is not None:
            return existing, False
        decoded = decode_image(
            data,
            max_pixels=self.settings.max_image_pixels,
            max_bytes=self.settings.max_decoded_bytes,
        )
        path = self._path_for(sha, decoded.format)
        with self._write() as session:
            row = session.scalar(select(ImageRow).where(ImageRow.sha256 == sha))
            if row is not None:
                return self._with_boxes(session, row), False
            if not path.exists():
                atomic_write(path, lambda handle: handle.write(data))
            row = ImageRow(
                sha256=sha,
                filename=_clean_filename(filename),
                width=decoded.width,
                height=decoded.height,
                format=decoded.format,
                label=label,
            )
            session.add(row)
            session.flush()
            record = _image_record(row)
        self._remember(decoded)
        return record, True

    def _image_by_sha(self, sha: str) -> ImageRecord | None:
        with self._read() as session:
            row = session.scalar(select(ImageRow).where(ImageRow.sha256 == sha))
            return None if row is None else self._with_boxes(session, row)

    @staticmethod
    def _count_boxes(session: Session | Connection, image_id: int) -> int:
        count = session.scalar(select(func.count()).where(BoxRow.image_id == image_id))
        return int(count or 0)

    @staticmethod
    def _box_labels(
        session: Session | Connection, image_ids: Select[tuple[int]] | list[int]
    ) -> dict[int, list[str]]:
        """The distinct box labels of these images, sorted, by image id (one query)."""
        query = (
            select(BoxRow.image_id, BoxRow.label)
            .where(BoxRow.image_id.in_(image_ids))
            .group_by(BoxRow.image_id, BoxRow.label)
            .order_by(BoxRow.image_id, BoxRow.label)
        )
        labels: dict[int, list[str]] = {}
        for image_id, label in session.execute(query):
            labels.setdefault(int(image_id), []).append(label)
        return labels

    def _with_boxes(self, session: Session | Connection, row: ImageRow | Row[Any]) -> ImageRecord:
        return _image_record(
            row,
            self._count_boxes(session, row.id),
            self._box_labels(session, [row.id]).get(row.id, ()),
        )

    def get_image(self, image_id: int, *, counts: bool = True) -> ImageRecord:
        """The image with this id.

        Args:
            image_id: its id.
            counts: also count its boxes and list their labels (two more queries); without,
                ``box_count`` is 0 and ``box_labels`` empty.

        Raises:
            KeyError: no such image.
        """
        query = select(*_IMAGE_COLUMNS).where(ImageRow.id == image_id)
        with self._core() as connection:
            row = connection.execute(query).first() if 0 < image_id <= _MAX_ID else None
            if row is None:
                raise KeyError(_MISSING[ImageRow].format(image_id))
            return self._with_boxes(connection, row) if counts else _image_record(row)

    def get_images(self, image_ids: Iterable[int]) -> dict[int, ImageRecord]:
        """The images with these ids, by id (box counts left at 0).

        Raises:
            KeyError: an id does not exist (the message lists them).
        """
        wanted = sorted({int(i) for i in image_ids})
        found: dict[int, ImageRecord] = {}
        with self._read() as session:
            for start in range(0, len(wanted), 500):
                chunk = [i for i in wanted[start : start + 500] if 0 < i <= _MAX_ID]
                query = select(*_IMAGE_COLUMNS).where(ImageRow.id.in_(chunk))
                for row in session.execute(query):
                    found[row.id] = _image_record(row)
        missing = [i for i in wanted if i not in found]
        if missing:
            raise KeyError(f"no images with ids {missing[:20]}; GET /api/images lists them")
        return found

    def count_images(self) -> int:
        """How many images are stored."""
        with self._core() as connection:
            return int(connection.scalar(select(func.count()).select_from(ImageRow)) or 0)

    def count_images_at_once(self) -> int | None:
        """How many images are stored, asked without waiting for anything, or ``None``.

        For the event loop (``/api/health``): on SQLite the count runs on a connection of
        this store's own, outside the pool (which may be empty for a moment while workers
        hold its connections), with no busy wait; a WAL reader is never blocked by the
        writer. ``None`` when that cannot be promised (another database, the connection in
        use by another thread, SQLite busy): ask :meth:`count_images` from a thread then.
        """
        if not self.is_sqlite or not self._probe_lock.acquire(blocking=False):
            return None
        try:
            if self._probe is None:
                database = self.engine.url.database
                if not database or database == ":memory:":
                    return None  # a memory database is one per connection
                self._probe = sqlite3.connect(database, timeout=0, check_same_thread=False)
            row = self._probe.execute(f"SELECT count(*) FROM {ImageRow.__tablename__}").fetchone()
            return int(row[0])
        except sqlite3.OperationalError:  # locked for a moment (recovery, schema change)
            return None
        finally:
            self._probe_lock.release()

    def images(self, label: str | None = None) -> list[ImageRecord]:
        """Every image (optionally only those with an image label), with box counts, by id."""
        counts = (
            select(BoxRow.image_id, func.count().label("n")).group_by(BoxRow.image_id).subquery()
        )
        query = (
            select(ImageRow, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.image_id == ImageRow.id)
            .order_by(ImageRow.id)
        )
        if label is not None:
            query = query.where(ImageRow.label == normalize_label(label))
        with self._read() as session:
            labels = self._box_labels(session, select(ImageRow.id))
            return [
                _image_record(row, int(n), labels.get(row.id, ()))
                for row, n in session.execute(query)
            ]

    def image_page(
        self,
        *,
        after: int = 0,
        limit: int = 100,
        label: str | None = None,
        box_labels: Iterable[str] | None = None,
    ) -> Page[ImageRecord]:
        """One page of images with box counts, by id, from the first id above ``after``.

        Keyset pagination (``id > after``), never OFFSET: a page costs the same at the end
        of a large store as at its start, and rows added or deleted meanwhile neither repeat
        nor skip the others.

        Args:
            after: the last id of the previous page (0 for the first page).
            limit: the most images on the page (≥ 1).
            label: only images with this image-level label.
            box_labels: only images holding at least one box with one of these labels.

        Returns:
            The page, the ``after`` of the next one, and how many images match in all.

        Raises:
            ValueError: ``limit`` below 1.
        """
        _check_limit(limit)
        where: list[ColumnElement[bool]] = []
        if label is not None:
            where.append(ImageRow.label == normalize_label(label))
        if box_labels is not None:
            holding = select(BoxRow.image_id).where(
                BoxRow.label.in_([normalize_label(k) for k in box_labels])
            )
            where.append(ImageRow.id.in_(holding))
        ids = (
            select(ImageRow.id)
            .where(*where, ImageRow.id > _clamp_id(after))
            .order_by(ImageRow.id)
            .limit(limit + 1)
        )
        counts = (
            select(BoxRow.image_id, func.count().label("n"))
            .where(BoxRow.image_id.in_(ids))
            .group_by(BoxRow.image_id)
            .subquery()
        )
        query = (
            select(ImageRow, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.image_id == ImageRow.id)
            .where(ImageRow.id.in_(ids))
            .order_by(ImageRow.id)
        )
        total = select(func.count()).select_from(ImageRow).where(*where)
        with self._read() as session:
            rows = list(session.execute(query))
            labels = self._box_labels(session, [row.id for row, _ in rows])
            records = [_image_record(row, int(n), labels.get(row.id, ())) for row, n in rows]
            return _page(records, limit, int(session.scalar(total) or 0))

    def delete_image(self, image_id: int) -> None:
        """Delete an image with its boxes, cached results and, if unused, its file.

        Raises:
            KeyError: no such image.
        """
        with self._write() as session:
            row = _require(session, ImageRow, image_id)
            sha, fmt = row.sha256, row.format
            # Explicit deletes as well as ON DELETE CASCADE: other databases may lack the pragma.
            box_ids = list(session.scalars(select(BoxRow.id).where(BoxRow.image_id == image_id)))
            self.features.forget_boxes(session, box_ids)
            session.execute(delete(BoxRow).where(BoxRow.image_id == image_id))
            session.execute(delete(ResultRow).where(ResultRow.image_id == image_id))
            session.delete(row)
        # After the commit: a failed delete must not lose the file. sha256 is unique, so no
        # other row can still point at it.
        self._path_for(sha, fmt).unlink(missing_ok=True)
        self._decoded.pop(sha)

    def image_path(self, image: ImageRecord) -> Path:
        """Where the image's bytes lie on disk."""
        return self._path_for(image.sha256, image.format)

    def image_bytes(self, image: ImageRecord) -> bytes:
        """The stored bytes of an image, exactly as uploaded."""
        return self.image_path(image).read_bytes()

    def load_decoded(self, image: ImageRecord, *, remember: bool = True) -> DecodedImage:
        """The image decoded as displayed (RGB, EXIF orientation applied), cached by hash.

        ``remember=False`` decodes without caching (a pass over a whole dataset would only
        push out the images people are looking at); a cached copy is still used.
        """
        cached = self._decoded.get(image.sha256)
        if cached is not None:
            return cached
        decoded = decode_image(
            self.image_bytes(image),
            max_pixels=max(self.settings.max_image_pixels, image.width * image.height),
            max_bytes=self.settings.max_decoded_bytes,
        )
        if remember:
            self._remember(decoded)
        return decoded

    def _remember(self, decoded: DecodedImage) -> None:
        self._decoded.put(decoded.sha256, decoded)

    def _path_for(self, sha: str, fmt: str) -> Path:
        ext = _EXTENSIONS.get(fmt.upper(), "img")
        return self.images_dir / sha[:2] / f"{sha}.{ext}"

    # -- boxes ------------------------------------------------------------------------------

    def add_box(
        self, image_id: int, x: float, y: float, w: float, h: float, label: str
    ) -> BoxRecord:
        """Add a box to an image.

        The box is checked and clipped to the image by
        :func:`app.boxes.check_box` (the stored box is the clipped one).

        Raises:
            KeyError: no such image.
            ValueError: the box is empty, outside the image, or the image has too many boxes.
        """
        return self.add_boxes(image_id, [(x, y, w, h, label)])[0]

    def add_boxes(
        self, image_id: int, boxes: Sequence[tuple[float, float, float, float, str]]
    ) -> list[BoxRecord]:
        """Add several boxes to one image in one transaction (all or none).

        Raises:
            KeyError: no such image.
            ValueError: a box is empty or outside the image, a label is empty, or the image
                would have more than ``max_boxes_per_image`` boxes.
        """
        with self._write() as session:
            image = _require(session, ImageRow, image_id)
            limit = self.settings.max_boxes_per_image
            have = self._count_boxes(session, image_id)
            if have + len(boxes) > limit:
                raise ValueError(
                    f"image {image_id} would have {have + len(boxes)} boxes, above the limit of "
                    f"{limit} boxes per image (setting FEATUREGAP_MAX_BOXES_PER_IMAGE)"
                )
            rows = []
            for x, y, w, h, label in boxes:
                box = check_box(Box(x, y, w, h), image.width, image.height)
                rows.append(
                    BoxRow(
                        image_id=image_id,
                        x=box.x,
                        y=box.y,
                        w=box.w,
                        h=box.h,
                        label=clean_label(label),
                    )
                )
            session.add_all(rows)
            session.flush()
            return [_box_record(row) for row in rows]

    def import_boxes(
        self,
        boxes_by_image: Mapping[int, Sequence[_BoxTuple]],
        source_ids: Mapping[int, Sequence[int | None]] | None = None,
    ) -> ImportCount:
        """Make sure these boxes exist, for several images in one transaction.

        Importing is idempotent: a box counts as already there when its image holds a box
        with the same label and the same geometry once clipped, and repeats count (a file
        with the same box twice gets it twice, once). So a retry after a cancel, a crash or
        a failed batch adds only what is missing. Each image's boxes are added all or none:
        an image that does not exist, or whose boxes fail the checks of :meth:`add_boxes`,
        is skipped with the reason and the others go on.

        Args:
            boxes_by_image: ``(x, y, w, h, label)`` boxes by image id.
            source_ids: per image, the boxes' ids in the imported file (same order; None
                where there is none), kept on the boxes that are added.

        Returns:
            Boxes added, boxes already there, and the reasons for skipped images.
        """
        added = present = 0
        skipped: dict[int, str] = {}
        with self._write() as session:
            for image_id, boxes in boxes_by_image.items():
                try:
                    ids = None if source_ids is None else source_ids.get(image_id)
                    rows, there = self._missing_rows(session, image_id, boxes, ids)
                except (KeyError, ValueError) as exc:
                    skipped[image_id] = str(exc.args[0]) if exc.args else str(exc)
                    continue
                session.add_all(rows)
                added, present = added + len(rows), present + there
        return ImportCount(added, present, skipped)

    def import_image_boxes(self, image_id: int, boxes: Sequence[_BoxTuple]) -> ImportCount:
        """:meth:`import_boxes` for one image, raising instead of skipping it.

        Raises:
            KeyError: no such image.
            ValueError: a box fails the checks of :meth:`add_boxes` (nothing is added).
        """
        with self._write() as session:
            rows, present = self._missing_rows(session, image_id, boxes)
            session.add_all(rows)
        return ImportCount(len(rows), present, {})

    def _missing_rows(
        self,
        session: Session,
        image_id: int,
        boxes: Sequence[_BoxTuple],
        source_ids: Sequence[int | None] | None = None,
    ) -> tuple[list[BoxRow], int]:
        """New rows for the boxes the image lacks, and how many it already has."""
        image = _require(session, ImageRow, image_id)
        if source_ids is not None and len(source_ids) != len(boxes):
            raise ValueError(
                f"{len(source_ids)} source ids for {len(boxes)} boxes; give one "
                "per box (None where there is none)"
            )
        ids = list(source_ids) if source_ids is not None else [None] * len(boxes)
        wanted = []
        for x, y, w, h, label in boxes:
            box = check_box(Box(x, y, w, h), image.width, image.height)
            wanted.append((box.x, box.y, box.w, box.h, clean_label(label)))
        stored = Counter(
            (float(r.x), float(r.y), float(r.w), float(r.h), r.label)
            for r in session.scalars(select(BoxRow).where(BoxRow.image_id == image_id))
        )
        have = sum(stored.values())
        rows: list[BoxRow] = []
        for key, source_id in zip(wanted, ids, strict=True):
            if stored[key] > 0:
                stored[key] -= 1
            else:
                rows.append(
                    BoxRow(
                        image_id=image_id,
                        x=key[0],
                        y=key[1],
                        w=key[2],
                        h=key[3],
                        label=key[4],
                        source_id=source_id,
                    )
                )
        limit = self.settings.max_boxes_per_image
        if have + len(rows) > limit:
            raise ValueError(
                f"image {image_id} would have {have + len(rows)} boxes, above the limit of "
                f"{limit} boxes per image (setting FEATUREGAP_MAX_BOXES_PER_IMAGE)"
            )
        return rows, len(wanted) - len(rows)

    def get_box(self, box_id: int) -> BoxRecord:
        """The box with this id.

        Raises:
            KeyError: no such box.
        """
        with self._read() as session:
            row = _require(session, BoxRow, box_id)
            return _box_record(row)

    def boxes(
        self,
        ids: Iterable[int] | None = None,
        labels: Iterable[str] | None = None,
        image_id: int | None = None,
        *,
        missing_ok: bool = False,
    ) -> list[BoxRecord]:
        """Boxes filtered by ids, labels and image (all filters combine), ordered by id.

        Raises:
            KeyError: an id in ``ids`` does not exist (the message lists them), unless
                ``missing_ok``.
        """
        query = select(*_BOX_COLUMNS).order_by(BoxRow.id)
        wanted = None if ids is None else list(dict.fromkeys(int(i) for i in ids))
        if wanted is not None:
            query = query.where(BoxRow.id.in_([i for i in wanted if 0 < i <= _MAX_ID]))
        if labels is not None:
            query = query.where(BoxRow.label.in_([normalize_label(k) for k in labels]))
        if image_id is not None:
            query = query.where(BoxRow.image_id == min(max(image_id, 0), _MAX_ID))
        with self._core() as connection:
            records = [_box_record(row) for row in connection.execute(query)]
        if wanted is not None and labels is None and image_id is None and not missing_ok:
            missing = sorted(set(wanted) - {r.id for r in records})
            if missing:
                raise KeyError(f"no boxes with ids {missing}; GET /api/boxes lists them")
        return records

    def box_page(
        self,
        *,
        after: int = 0,
        limit: int = 100,
        labels: Iterable[str] | None = None,
        image_id: int | None = None,
    ) -> Page[BoxRecord]:
        """One page of boxes by id, from the first id above ``after`` (keyset, never OFFSET).

        Args:
            after: the last id of the previous page (0 for the first page).
            limit: the most boxes on the page (≥ 1).
            labels: only boxes with one of these labels.
            image_id: only boxes of this image.

        Returns:
            The page, the ``after`` of the next one, and how many boxes match in all.

        Raises:
            ValueError: ``limit`` below 1.
        """
        _check_limit(limit)
        where: list[ColumnElement[bool]] = []
        if labels is not None:
            where.append(BoxRow.label.in_([normalize_label(k) for k in labels]))
        if image_id is not None:
            where.append(BoxRow.image_id == _clamp_id(image_id))
        query = (
            select(BoxRow)
            .where(*where, BoxRow.id > _clamp_id(after))
            .order_by(BoxRow.id)
            .limit(limit + 1)
        )
        total = select(func.count()).select_from(BoxRow).where(*where)
        with self._read() as session:
            records = [_box_record(row) for row in session.scalars(query)]
            return _page(records, limit, int(session.scalar(total) or 0))

    def update_box(self, box_id: int, **changes: Any) -> BoxRecord:
        """Change some of a box's ``x, y, w, h, label``; the result is clipped to the image.

        Raises:
            KeyError: no such box.
            ValueError: an unknown field, or the changed box is empty or outside the image.
        """
        unknown = set(changes) - {"x", "y", "w", "h", "label"}
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)}; change x, y, w, h or label")
        with self._write() as session:
            row = _require(session, BoxRow, box_id)
            image = session.get(ImageRow, row.image_id)
            assert image is not None  # foreign key
            new = {"x": row.x, "y": row.y, "w": row.w, "h": row.h, **changes}
            box = check_box(
                Box(float(new["x"]), float(new["y"]), float(new["w"]), float(new["h"])),
                image.width,
                image.height,
            )
            if (box.x, box.y, box.w, box.h) != (row.x, row.y, row.w, row.h):
                self.features.forget_boxes(session, [box_id])  # its descriptors are stale
            row.x, row.y, row.w, row.h = box.x, box.y, box.w, box.h
            if "label" in changes:
                row.label = clean_label(changes["label"])
            session.flush()
            return _box_record(row)

    def delete_box(self, box_id: int) -> None:
        """Delete a box.

        Raises:
            KeyError: no such box.
        """
        with self._write() as session:
            row = _require(session, BoxRow, box_id)
            self.features.forget_boxes(session, [box_id])
            session.delete(row)

    def labels(self) -> dict[str, int]:
        """Every box label with its number of boxes, by label."""
        query = select(BoxRow.label, func.count()).group_by(BoxRow.label).order_by(BoxRow.label)
        with self._core() as connection:
            return {label: int(n) for label, n in connection.execute(query)}

    def label_summary(self) -> list[LabelSummary]:
        """Every box label with its numbers of boxes and images, by label, in one query."""
        query = (
            select(BoxRow.label, func.count(), func.count(func.distinct(BoxRow.image_id)))
            .group_by(BoxRow.label)
            .order_by(BoxRow.label)
        )
        with self._read() as session:
            return [
                LabelSummary(label, int(boxes), int(images))
                for label, boxes, images in session.execute(query)
            ]

    # -- cached results ---------------------------------------------------------------------

    def put_result(self, key: str, kind: str, value: Any, image_id: int | None = None) -> None:
        """Cache a JSON-serialisable result under ``key`` (replacing an older one).

        Raises:
            NotFound: ``image_id`` names an image deleted while the result was computed.
        """
        # orjson: ~50× json.dumps on a heat-map answer (1.5 ms → 0.03 ms); NaN (never in a
        # JSON-safe answer) would become null, as the API writes it.
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
        with self._write() as session:
            if image_id is not None and session.get(ImageRow, image_id) is None:
                raise NotFound(
                    f"image {image_id} was deleted while its answer was computed; "
                    "upload it again to analyse it"
                )
            row = session.get(ResultRow, key)
            if row is None:
                session.add(ResultRow(key=key, kind=kind, json=text, image_id=image_id))
            else:
                row.kind, row.json, row.image_id = kind, text, image_id

    def get_result(self, key: str) -> Any | None:
        """The cached result under ``key``, or None."""
        with self._core() as connection:
            text = connection.scalar(select(ResultRow.json).where(ResultRow.key == key))
            return None if text is None else orjson.loads(text)

    def has_result(self, key: str) -> bool:
        """Whether a result is cached under ``key`` (its JSON is neither read nor decoded)."""
        with self._core() as connection:
            return connection.scalar(select(ResultRow.key).where(ResultRow.key == key)) is not None

    def drop_results_not_matching(self, pattern: str) -> int:
        """Delete cached results whose key is not ``LIKE pattern``; returns how many went."""
        with self._write() as session:
            gone = session.execute(delete(ResultRow).where(ResultRow.key.not_like(pattern)))
            return int(getattr(gone, "rowcount", 0) or 0)

    def count_results(self, image_id: int | None = None) -> int:
        """How many results are cached (for one image, when given)."""
        query = select(func.count()).select_from(ResultRow)
        if image_id is not None:
            query = query.where(ResultRow.image_id == image_id)
        with self._read() as session:
            return int(session.scalar(query) or 0)

    # -- jobs -------------------------------------------------------------------------------

    def add_job(self, job_id: str, kind: str) -> JobRecord:
        """Record a new ``queued`` job.

        Raises:
            ValueError: a job with this id exists already.
        """
        with self._write() as session:
            if session.get(JobRow, job_id) is not None:
                raise ValueError(f"a job with id {job_id!r} exists already; use a new id")
            row = JobRow(id=job_id, kind=kind, state="queued", progress=0.0, message="queued")
            session.add(row)
            session.flush()
            return _job_record(row)

    def update_job(self, job_id: str, **changes: Any) -> JobRecord:
        """Change some of a job's ``state, progress, message, result, error, finished_at``.

        ``result`` is any JSON-serialisable value (stored as JSON text).

        Raises:
            KeyError: no such job.
            ValueError: an unknown field.
        """
        unknown = set(changes) - _JOB_FIELDS
        if unknown:
            raise ValueError(
                f"cannot change a job's {sorted(unknown)}; change one of {sorted(_JOB_FIELDS)}"
            )
        if "result" in changes:
            changes["result"] = json.dumps(changes["result"], allow_nan=False)
        with self._write() as session:
            row = _require_job(session, job_id)
            for name, value in changes.items():
                setattr(row, name, value)
            session.flush()
            return _job_record(row)

    def get_job(self, job_id: str) -> JobRecord:
        """The job with this id.

        Raises:
            KeyError: no such job.
        """
        with self._read() as session:
            row = _require_job(session, job_id)
            return _job_record(row)

    def interrupt_jobs(self) -> int:
        """Mark every ``queued`` or ``running`` job ``interrupted`` (a restart: their work is
        gone); returns how many were marked."""
        with self._write() as session:
            marked = session.execute(
                update(JobRow)
                .where(JobRow.state.in_(UNFINISHED_JOB_STATES))
                .values(
                    state="interrupted",
                    finished_at=_now_utc(),
                    message="interrupted: the server stopped before the job finished; "
                    "send the request again",
                )
            )
            return int(getattr(marked, "rowcount", 0) or 0)

    def prune_jobs(self, keep: int) -> int:
        """Delete finished jobs but the ``keep`` newest (results of old jobs can be large);
        unfinished ones are never deleted. Returns how many were deleted."""
        finished = JobRow.state.not_in(UNFINISHED_JOB_STATES)
        with self._write() as session:
            kept = (
                select(JobRow.id)
                .where(finished)
                .order_by(JobRow.created_at.desc(), JobRow.id)
                .limit(keep)
            )
            gone = session.execute(delete(JobRow).where(finished, JobRow.id.not_in(kept)))
            return int(getattr(gone, "rowcount", 0) or 0)


def _require_job(session: Session, job_id: str) -> JobRow:
    """The job row with this id.

    Raises:
        KeyError: no such job; says which id to pass.
    """
    row = session.get(JobRow, job_id)
    if row is None:
        raise KeyError(f"no job with id {job_id!r}; the id is the job_id a 202 answer gave")
    return row


def _now_utc() -> datetime:
    return datetime.now(UTC)


_MISSING: dict[type, str] = {
    ImageRow: "no image with id {}; GET /api/images lists them",
    BoxRow: "no box with id {}; GET /api/boxes lists them",
}


def _require(session: Session, table: type[_Row], row_id: int) -> _Row:
    """The row with this id.

    Raises:
        KeyError: no such row (also for ids no database can hold); says where to list them.
    """
    row = session.get(table, row_id) if 0 < row_id <= _MAX_ID else None
    if row is None:
        raise KeyError(_MISSING[table].format(row_id))
    return row


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"a page holds at least one row; got limit={limit}")


def _clamp_id(row_id: int) -> int:
    """An id inside what SQL BIGINT holds (larger ones would overflow the driver)."""
    return min(max(int(row_id), 0), _MAX_ID)


def _page(records: list[_Item], limit: int, total: int) -> Page[_Item]:
    """A page from up to ``limit + 1`` rows read by id: the extra row says there is more."""
    more = len(records) > limit
    records = records[:limit]
    last = getattr(records[-1], "id", None) if more and records else None
    return Page(records, None if last is None else int(last), total)


def _has_autoincrement(connection: Any, table: Table) -> bool:
    row = connection.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table.name,)
    ).fetchone()
    return row is None or "AUTOINCREMENT" in str(row[0]).upper()


def _clean_filename(filename: str) -> str:
    """Keep only the last path part of a client's file name (metadata only, never a path).

    Control and format characters are dropped, so the name can go into XML, CSV and logs.
    """
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(
        c
        for c in unicodedata.normalize("NFC", name)
        if unicodedata.category(c) not in {"Cc", "Cf", "Cs"}
    ).strip()
    return (name or "upload")[:255]
