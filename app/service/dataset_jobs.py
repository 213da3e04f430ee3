"""Dataset imports as jobs: from folders under ``FEATUREGAP_IMPORT_ROOT``, or from a zip.

The checks that can fail fast run before a job is queued, so a refused request answers at
once: a path outside the import root (403, symlinks resolved first), a missing file (422),
a hostile zip (413/422). The job then streams the import (:mod:`app.service.datasets`);
a zip is unpacked inside the job into a temporary folder of the data directory, and both
the zip and the folder are removed when the job ends, however it ends.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from app.config import Settings
from app.errors import Forbidden, InvalidInput, LimitExceeded
from app.formats.labels import clean_label
from app.jobs import Cancelled, JobFunction, Progress
from app.service import datasets
from app.service.datasets import DatasetFormat, DatasetSummary
from app.service.zips import check_zip, extract_zip, find_layout
from app.store import Store

__all__ = [
    "DatasetRequest",
    "MAX_SKIPPED_IN_RESULT",
    "dataset_job",
    "plan_dataset",
    "receive_zip",
    "zip_job",
    "under_root",
]

MAX_SKIPPED_IN_RESULT = 1000
"""Skipped items a job's result lists (the count is complete; the CLI's report lists all)."""

_CHUNK = 1024 * 1024
_OFF = (
    "importing from the server's disk is off; set FEATUREGAP_IMPORT_ROOT to the folder "
    "that holds the datasets (paths are then given relative to it), or upload a .zip "
    "to POST /api/import/zip"
)


def under_root(settings: Settings, given: str, what: str) -> Path:
    """``given`` (relative to the import root, or absolute) resolved, when it stays inside
    ``FEATUREGAP_IMPORT_ROOT`` with every symlink followed.

    Raises:
        Forbidden: the setting is off, or the path leads outside the root (403).
        InvalidInput: nothing is there (422).
    """
    if settings.import_root is None:
        raise Forbidden(_OFF)
    root = settings.import_root.resolve()
    path = Path(given)
    resolved = (path if path.is_absolute() else root / path).resolve()
    if not resolved.is_relative_to(root):
        raise Forbidden(
            f"{what} {given!r} leads outside FEATUREGAP_IMPORT_ROOT ({root}); "
            "give a path inside it (symlinks are followed before this check)"
        )
    if not resolved.exists():
        raise InvalidInput(f"{what} {given!r}: nothing there under FEATUREGAP_IMPORT_ROOT")
    return resolved


@dataclass(frozen=True)
class DatasetRequest:
    """A checked dataset import: its format and resolved paths (or YOLO class names)."""

    format: DatasetFormat
    annotations: Path
    images_dir: Path | None = None
    classes: list[str] | None = None


def plan_dataset(
    settings: Settings,
    format: DatasetFormat,
    annotations: str,
    images_dir: str | None = None,
    classes: str | list[str] | None = None,
) -> DatasetRequest:
    """Check a request to import a dataset from the server's disk (before any job runs).

    Args:
        settings: gives ``import_root``.
        format: ``"coco"``, ``"voc"`` or ``"yolo"``.
        annotations: COCO: the JSON file; VOC and YOLO: the dataset folder.
        images_dir: COCO: the images folder (required); VOC: optional; YOLO: unused.
        classes: YOLO: the class-names file (a path) or the names themselves (a list).

    Raises:
        Forbidden: importing from disk is off, or a path leads outside the root.
        InvalidInput: a path is missing or of the wrong kind, or a field the format needs
            is absent.
    """
    ann = under_root(settings, annotations, "annotations")
    images = None if images_dir is None else under_root(settings, images_dir, "images_dir")
    if images is not None and not images.is_dir():
        raise InvalidInput(f"images_dir {images_dir!r} is not a folder")
    if format == "coco":
        if not ann.is_file():
            raise InvalidInput(
                f"annotations {annotations!r} is not a file; for COCO give the JSON file"
            )
        if images is None:
            raise InvalidInput("a COCO import needs images_dir, the folder of its images")
    elif not ann.is_dir():
        raise InvalidInput(
            f"annotations {annotations!r} is not a folder; for {format} give the dataset folder"
        )
    names = None
    if format == "yolo":
        if classes is None:
            raise InvalidInput(
                "a YOLO import needs classes: the class-names file (a path) "
                "or the names as a list, index 0 first"
            )
        if isinstance(classes, str):
            names = datasets.read_classes(under_root(settings, classes, "classes"))
        else:
            names = [clean_label(name, f"YOLO class {i}") for i, name in enumerate(classes)]
            if not names:
                raise InvalidInput("classes is an empty list; give the names, index 0 first")
    return DatasetRequest(format, ann, images, names)


def _advance(progress: Progress) -> datasets.Advance:
    def advance(done: int, total: int) -> None:
        progress(done / max(total, 1), f"{done}/{total} images")

    return advance


def _import(
    store: Store, request: DatasetRequest, progress: Progress, cancelled: Cancelled
) -> DatasetSummary:
    advance = _advance(progress)
    if request.format == "coco":
        assert request.images_dir is not None  # plan_dataset requires it
        return datasets.import_coco_dataset(
            store, request.annotations, request.images_dir, advance, cancelled
        )
    if request.format == "voc":
        return datasets.import_voc_dataset(
            store, request.annotations, request.images_dir, advance, cancelled
        )
    assert request.classes is not None  # plan_dataset requires them
    return datasets.import_yolo_dataset(
        store, request.annotations, request.classes, advance, cancelled
    )


def dataset_job(store: Store, request: DatasetRequest) -> JobFunction:
    """The job that imports a planned dataset; its result is the summary."""

    def run(progress: Progress, cancelled: Cancelled) -> dict[str, Any]:
        return _import(store, request, progress, cancelled).as_dict(MAX_SKIPPED_IN_RESULT)

    return run


def _imports_dir(settings: Settings) -> Path:
    folder = Path(settings.data_dir) / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def receive_zip(settings: Settings, stream: BinaryIO, limit: int) -> Path:
    """Copy an upload to a temporary ``.zip`` in the data directory, chunk by chunk.

    Raises:
        LimitExceeded: the upload is larger than ``limit`` (the file is removed).
    """
    handle = tempfile.NamedTemporaryFile(
        dir=_imports_dir(settings), prefix="upload-", suffix=".zip", delete=False
    )
    path = Path(handle.name)
    try:
        with handle:
            size = 0
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise LimitExceeded(
                        f"the upload is larger than the limit of {limit} bytes (setting "
                        "FEATUREGAP_MAX_ZIP_UPLOAD_BYTES); send a smaller zip"
                    )
                handle.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def zip_job(
    store: Store,
    settings: Settings,
    zip_path: Path,
    format: DatasetFormat,
    annotations: str | None = None,
) -> JobFunction:
    """Check the zip now (raising on a hostile one, after removing it) and return the job
    that unpacks and imports it, removing the zip and the unpacked files at its end.

    Raises:
        InvalidInput, LimitExceeded: see :func:`app.service.zips.check_zip`.
    """
    try:
        members = check_zip(zip_path, settings)
    except BaseException:
        zip_path.unlink(missing_ok=True)
        raise

    def run(progress: Progress, cancelled: Cancelled) -> dict[str, Any]:
        folder = Path(tempfile.mkdtemp(dir=_imports_dir(settings), prefix="unpacked-"))
        try:
            progress(0.0, "unpacking")
            extract_zip(zip_path, members, folder)
            zip_path.unlink(missing_ok=True)
            layout = find_layout(folder, format, annotations)
            classes = None if layout.classes is None else datasets.read_classes(layout.classes)
            request = DatasetRequest(format, layout.annotations, layout.images_dir, classes)
            return _import(store, request, progress, cancelled).as_dict(MAX_SKIPPED_IN_RESULT)
        finally:
            zip_path.unlink(missing_ok=True)
            shutil.rmtree(folder, ignore_errors=True)

    return run
