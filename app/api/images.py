"""Images: upload (stored once per content), list, read, delete, file and thumbnail."""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from PIL import Image

from app.api.deps import ERRORS, MAX_ID, ImageDep, SettingsDep, StoreDep
from app.api.pagination import (
    DEFAULT_LIMIT,
    CursorQuery,
    LimitQuery,
    Paged,
    paged,
)
from app.api.schemas import BoxIn, BoxOut, ImageOut
from app.errors import LimitExceeded

__all__ = ["router", "read_limited"]

router = APIRouter(prefix="/api/images", tags=["images"])

_CHUNK = 1024 * 1024
_MEDIA_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
}


def read_limited(upload: UploadFile, limit: int) -> bytes:
    """Read an upload in chunks, stopping as soon as it passes ``limit`` bytes.

    Raises:
        LimitExceeded: the upload is larger than ``limit``.
    """
    parts: list[bytes] = []
    size = 0
    while chunk := upload.file.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise LimitExceeded(
                f"the upload is larger than the limit of {limit} bytes "
                f"(setting FEATUREGAP_MAX_UPLOAD_BYTES); send a smaller file"
            )
        parts.append(chunk)
    return b"".join(parts)


@router.post(
    "",
    response_model=ImageOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {
            "model": ImageOut,
            "description": "the same bytes were stored before: the existing image",
        },
        413: {"description": "the upload is too large"},
        422: {"description": "not a readable image, or too many pixels"},
    },
)
def upload_image(
    store: StoreDep,
    settings: SettingsDep,
    response: Response,
    file: Annotated[UploadFile, File(description="PNG, JPEG, WebP, BMP, GIF or TIFF")],
    label: Annotated[str | None, Form(max_length=200)] = None,
) -> ImageOut:
    """Store an image; the same bytes again return the stored image with 200."""
    data = read_limited(file, settings.max_upload_bytes)
    record, created = store.add_image(data, file.filename or "upload", label or None)
    if not created:
        response.status_code = status.HTTP_200_OK
    return ImageOut.of(record)


@router.get("", response_model=Paged[ImageOut], responses={422: ERRORS[422]})
def list_images(
    store: StoreDep,
    label: Annotated[
        str | None, Query(max_length=200, description=("Only images with this image-level label."))
    ] = None,
    box_label: Annotated[
        list[str] | None,
        Query(
            max_length=200,
            description=("Only images holding a box with one of these labels (repeatable)."),
        ),
    ] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Paged[ImageOut]:
    """A page of images by id with their box counts, filtered by image or box label."""
    return paged(
        "images",
        cursor,
        lambda after: store.image_page(after=after, limit=limit, label=label, box_labels=box_label),
        ImageOut.of,
    )


@router.get("/{image_id}", response_model=ImageOut)
def get_image(image: ImageDep) -> ImageOut:
    """One image's metadata."""
    return ImageOut.of(image)


@router.delete("/{image_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_image(image: ImageDep, store: StoreDep) -> Response:
    """Delete an image with its boxes and cached results."""
    store.delete_image(image.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{image_id}/file",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}, "description": "the stored bytes"}},
)
def image_file(image: ImageDep, store: StoreDep) -> Response:
    """The stored bytes, exactly as uploaded, with their content type."""
    return Response(
        store.image_bytes(image),
        media_type=_MEDIA_TYPES.get(image.format, "application/octet-stream"),
        headers={
            "Cache-Control": "private, max-age=31536000, immutable",
            "ETag": f'"{image.sha256}"',
        },
    )


@router.get(
    "/{image_id}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "a PNG"}},
)
def thumbnail(
    image: ImageDep,
    store: StoreDep,
    box_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    size: Annotated[int, Query(ge=16, le=1024)] = 128,
) -> Response:
    """A PNG of the image, or of one of its boxes, fitted inside ``size``×``size``."""
    picture = store.load_decoded(image).pixels
    if box_id is not None:
        box = store.get_box(box_id)
        if box.image_id != image.id:
            raise ValueError(
                f"box {box_id} belongs to image {box.image_id}, not {image.id}; "
                f"use /api/images/{box.image_id}/thumbnail?box_id={box_id}"
            )
        left, top = int(box.x), int(box.y)
        right = max(left + 1, int(round(box.x + box.w)))
        bottom = max(top + 1, int(round(box.y + box.h)))
        picture = picture.crop((left, top, min(right, image.width), min(bottom, image.height)))
    picture = picture.copy()
    picture.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return Response(buffer.getvalue(), media_type="image/png")


@router.post(
    "/{image_id}/boxes", response_model=BoxOut, status_code=status.HTTP_201_CREATED, tags=["boxes"]
)
def add_box(image: ImageDep, box: BoxIn, store: StoreDep) -> BoxOut:
    """Add a box in the displayed image's pixels."""
    return BoxOut.of(store.add_box(image.id, box.x, box.y, box.w, box.h, box.label))


@router.get("/{image_id}/boxes", response_model=list[BoxOut], tags=["boxes"])
def image_boxes(image: ImageDep, store: StoreDep) -> list[BoxOut]:
    """The boxes of one image."""
    return [BoxOut.of(b) for b in store.boxes(image_id=image.id)]
