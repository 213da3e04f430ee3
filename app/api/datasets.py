"""Whole datasets in: from a folder under ``FEATUREGAP_IMPORT_ROOT``, or an uploaded ``.zip``.

Both answer 202 with a job (poll ``GET /api/jobs/{job_id}``; its result is the summary
with every skipped annotation's reason, the first 1000 listed). What can be refused is
refused before the job: paths outside the import root (403), missing files (422), zips
that are too large, too many members, bombs (413) or that hold paths leading out (422).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, UploadFile, status
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import JobsDep, SettingsDep, StoreDep
from app.api.schemas import JobAccepted
from app.service import dataset_jobs

__all__ = ["DatasetImportIn", "router"]

router = APIRouter(prefix="/api/import", tags=["formats"])

_PATH = Field(min_length=1, max_length=4096)


class DatasetImportIn(BaseModel):
    """A dataset on the server's disk; paths are relative to ``FEATUREGAP_IMPORT_ROOT``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "format": "coco",
                    "annotations": "coco/val/instances.json",
                    "images_dir": "coco/val/images",
                }
            ]
        },
    )

    format: Literal["coco", "voc", "yolo"]
    annotations: Annotated[str, _PATH] = Field(
        description="COCO: the JSON file; VOC and YOLO: the dataset folder"
    )
    images_dir: Annotated[str, _PATH] | None = Field(
        None, description="COCO: the images folder (required); VOC: optional"
    )
    classes: Annotated[str, _PATH] | list[Annotated[str, Field(max_length=200)]] | None = Field(
        None,
        max_length=10_000,
        description="YOLO: the class-names file, or the names as a list (index 0 first)",
    )


_REFUSED: dict[int | str, dict[str, Any]] = {
    403: {"description": "FEATUREGAP_IMPORT_ROOT is unset, or a path leads outside it"},
    413: {"description": "the zip is too large, has too many members or is a zip bomb"},
    422: {"description": "a path is missing or of the wrong kind; a zip member leads out"},
}


@router.post(
    "/dataset", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted, responses=_REFUSED
)
def post_dataset(
    body: DatasetImportIn, store: StoreDep, settings: SettingsDep, jobs: JobsDep
) -> JobAccepted:
    """Import a COCO, VOC or YOLO dataset from the server's disk as a job."""
    request = dataset_jobs.plan_dataset(
        settings, body.format, body.annotations, body.images_dir, body.classes
    )
    return JobAccepted(
        job_id=jobs.submit("import_dataset", dataset_jobs.dataset_job(store, request))
    )


@router.post(
    "/zip", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted, responses=_REFUSED
)
def post_zip(
    store: StoreDep,
    settings: SettingsDep,
    jobs: JobsDep,
    file: Annotated[UploadFile, File(description="a .zip of images and annotations")],
    format: Annotated[Literal["coco", "voc", "yolo"], Form()],
    annotations: Annotated[
        str | None,
        Form(
            max_length=4096,
            description="COCO: the JSON member when there are several; YOLO: "
            "the class-names member when it is not classes.txt",
        ),
    ] = None,
) -> JobAccepted:
    """Import a dataset uploaded as a .zip (checked, then unpacked and imported as a job)."""
    path = dataset_jobs.receive_zip(settings, file.file, settings.max_zip_upload_bytes)
    job = dataset_jobs.zip_job(store, settings, path, format, annotations or None)
    try:
        return JobAccepted(job_id=jobs.submit("import_zip", job))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
