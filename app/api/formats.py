"""Boxes in and out in the formats people already have: COCO JSON, Pascal VOC XML, YOLO txt.

Routes only: the codecs are in :mod:`app.formats`, the joins to the store in
:mod:`app.service.imports`. Conventions (boxes that stick out of the image are clipped to
it, as everywhere):
- COCO ``bbox`` is ``[x, y, w, h]`` in pixels. Images are matched by ``file_name`` (its
  last path part) to stored images' upload names; ``categories`` give the labels.
- Pascal VOC uses 1-based inclusive pixel indices: ``x = xmin − 1, w = xmax − xmin + 1``.
- YOLO lines are ``class cx cy w h`` normalised by the image size; class names come from the
  ``classes`` field (one per line or comma-separated, index 0 first). Export uses the
  ``classes`` query (comma-separated) or, without it, every box label sorted by name
  (``GET /api/labels`` order).
Imports are idempotent: a box the image already has (same label and geometry) is counted
in ``boxes_present`` and not added again.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from fastapi.responses import JSONResponse

from app.api.deps import ImageDep, JobsDep, PoolDep, SettingsDep, StoreDep
from app.api.images import read_limited
from app.api.schemas import ImportResult, JobAccepted
from app.formats.coco import annotation_count, decode_coco
from app.formats.voc import parse_voc
from app.formats.yolo import parse_classes, parse_yolo
from app.service import imports

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["formats"])

# A refused file answers {"detail": "<what to fix>"}; a malformed request (no file part)
# answers FastAPI's list of field errors. Both are documented, so clients and schemathesis
# know either shape.
_REFUSED: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "the file is malformed or hostile (detail says what to fix), or the "
        "request lacks a field",
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {
                            "type": "object",
                            "properties": {"detail": {"type": "string"}},
                            "required": ["detail"],
                        },
                        {"$ref": "#/components/schemas/HTTPValidationError"},
                    ]
                }
            }
        },
    }
}


@router.post(
    "/import/coco",
    response_model=ImportResult,
    responses={
        202: {
            "model": JobAccepted,
            "description": "a large import runs as a job: poll GET /api/jobs/{job_id}",
        },
        **_REFUSED,
    },
)
async def post_coco(
    store: StoreDep,
    settings: SettingsDep,
    jobs: JobsDep,
    pool: PoolDep,
    file: Annotated[UploadFile, File(description="a COCO JSON file")],
) -> ImportResult | JSONResponse:
    """Add a COCO file's boxes to the stored images with the same file names."""
    return await pool.run(lambda _cancelled: _coco(store, settings, jobs, file))


def _coco(
    store: StoreDep, settings: SettingsDep, jobs: JobsDep, file: UploadFile
) -> ImportResult | JSONResponse:
    document = decode_coco(read_limited(file, settings.max_upload_bytes))
    if annotation_count(document) > settings.import_job_threshold:
        job_id = jobs.submit(
            "import_coco",
            lambda progress, cancelled: asdict(
                imports.import_coco(store, document, progress, cancelled)
            ),
        )
        return JSONResponse(
            status_code=status.HTTP_202_ACCEPTED, content=JobAccepted(job_id=job_id).model_dump()
        )
    return ImportResult.of(imports.import_coco(store, document))


@router.get("/export/coco", response_model=dict[str, Any])
def get_coco(store: StoreDep) -> dict[str, object]:
    """Every image and box as one COCO document."""
    return imports.export_coco(store)


@router.post("/images/{image_id}/import/voc", response_model=ImportResult, responses=_REFUSED)
def post_voc(
    image: ImageDep,
    store: StoreDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="a Pascal VOC XML file")],
) -> ImportResult:
    """Add a Pascal VOC file's boxes to this image (all or none)."""
    boxes = parse_voc(read_limited(file, settings.max_upload_bytes), image.width, image.height)
    return ImportResult.of(imports.import_into_image(store, image, boxes))


@router.get(
    "/images/{image_id}/export/voc",
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}}},
)
def get_voc(image: ImageDep, store: StoreDep) -> Response:
    """This image's boxes as Pascal VOC XML."""
    return Response(imports.export_voc(store, image), media_type="application/xml")


@router.post("/images/{image_id}/import/yolo", response_model=ImportResult, responses=_REFUSED)
def post_yolo(
    image: ImageDep,
    store: StoreDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="YOLO txt: class cx cy w h")],
    classes: Annotated[
        str,
        Form(
            description="class names, one per line or comma-separated, index 0 first",
            examples=["cat,dog"],
        ),
    ],
) -> ImportResult:
    """Add a YOLO txt file's boxes to this image (all or none)."""
    raw = read_limited(file, settings.max_upload_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("the YOLO file must be UTF-8 text") from exc
    boxes = parse_yolo(text, parse_classes(classes), image.width, image.height)
    return ImportResult.of(imports.import_into_image(store, image, boxes))


@router.get(
    "/images/{image_id}/export/yolo",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def get_yolo(
    image: ImageDep,
    store: StoreDep,
    classes: Annotated[str | None, Query(max_length=10_000)] = None,
) -> Response:
    """This image's boxes as YOLO txt; the class order is in the X-Yolo-Classes header."""
    names = parse_classes(classes) if classes else sorted(store.labels())
    return Response(
        imports.export_yolo(store, image, names),
        media_type="text/plain",
        headers={"X-Yolo-Classes": json.dumps(names)},
    )
