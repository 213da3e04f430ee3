"""Boxes: list and filter, read, change, delete; labels with their counts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.api.deps import MAX_ID, BoxDep, StoreDep
from app.api.schemas import BoxOut, BoxPatch, LabelCount

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["boxes"])


@router.get("/boxes", response_model=list[BoxOut])
def list_boxes(store: StoreDep,
               label: Annotated[list[str] | None, Query(max_length=200)] = None,
               image_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None) -> list[BoxOut]:
    """List boxes, filtered by label (repeatable) and image."""
    return [BoxOut.of(b) for b in store.boxes(labels=label, image_id=image_id)]


@router.get("/boxes/{box_id}", response_model=BoxOut)
def get_box(box: BoxDep) -> BoxOut:
    """One box."""
    return BoxOut.of(box)


@router.patch("/boxes/{box_id}", response_model=BoxOut)
def patch_box(box: BoxDep, patch: BoxPatch, store: StoreDep) -> BoxOut:
    """Change a box's position, size or label; it must stay inside its image."""
    changes = patch.model_dump(exclude_unset=True, exclude_none=True)
    return BoxOut.of(store.update_box(box.id, **changes))


@router.delete("/boxes/{box_id}", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response)
def delete_box(box: BoxDep, store: StoreDep) -> Response:
    """Delete a box."""
    store.delete_box(box.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/labels", response_model=list[LabelCount])
def labels(store: StoreDep) -> list[LabelCount]:
    """Every box label with its number of boxes."""
    return [LabelCount(label=k, count=v) for k, v in store.labels().items()]
