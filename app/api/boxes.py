"""Boxes: list and filter, read, change, delete; labels with their counts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.api.deps import ERRORS, MAX_ID, BoxDep, StoreDep
from app.api.pagination import (
    DEFAULT_LIMIT,
    CursorQuery,
    LimitQuery,
    Paged,
    paged,
)
from app.api.schemas import BoxOut, BoxPatch, LabelCount
from app.palette import label_colours

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["boxes"])


@router.get("/boxes", response_model=Paged[BoxOut], responses={422: ERRORS[422]})
def list_boxes(
    store: StoreDep,
    label: Annotated[list[str] | None, Query(max_length=200)] = None,
    image_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Paged[BoxOut]:
    """A page of boxes by id, filtered by label (repeatable) and image."""
    return paged(
        "boxes",
        cursor,
        lambda after: store.box_page(after=after, limit=limit, labels=label, image_id=image_id),
        BoxOut.of,
    )


@router.get("/boxes/{box_id}", response_model=BoxOut)
def get_box(box: BoxDep) -> BoxOut:
    """One box."""
    return BoxOut.of(box)


@router.patch("/boxes/{box_id}", response_model=BoxOut)
def patch_box(box: BoxDep, patch: BoxPatch, store: StoreDep) -> BoxOut:
    """Change a box's position, size or label; it must stay inside its image."""
    changes = patch.model_dump(exclude_unset=True, exclude_none=True)
    return BoxOut.of(store.update_box(box.id, **changes))


@router.delete("/boxes/{box_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_box(box: BoxDep, store: StoreDep) -> Response:
    """Delete a box."""
    store.delete_box(box.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/labels", response_model=list[LabelCount])
def labels(store: StoreDep) -> list[LabelCount]:
    """Every box label with its numbers of boxes and images (one aggregate query), and colour."""
    summaries = store.label_summary()
    colours = label_colours(s.label for s in summaries)
    return [
        LabelCount(label=s.label, boxes=s.boxes, images=s.images, colour=colours[s.label])
        for s in summaries
    ]
