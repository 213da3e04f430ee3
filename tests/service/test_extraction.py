"""Batched extraction into the feature store, and box descriptors read back from it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from app.boxes import Box
from app.config import Settings
from app.engine.features import extract
from app.engine.preprocess import InputMode
from app.engine.regions import Descriptor, region_descriptors
from app.jobs import JobCancelled
from app.service.extraction import extract_boxes
from app.service.features import box_descriptors
from app.store import Store

pytestmark = pytest.mark.slow

LAYERS = ["blocks.2.1.add", "conv_head"]


def _fill(store: Store, photo: Any) -> None:
    """Five images of four sizes (one a crop), 3–4 boxes each, some sticking out."""
    rng = np.random.default_rng(11)
    arrays = [
        photo("chelsea"),
        photo("coffee"),
        photo("astronaut"),
        photo("coffee")[13:230, 41:374],
        photo("rocket"),
    ]
    for k, array in enumerate(arrays):
        image = store.add_image(_png(array), f"{k}.png")[0]
        boxes = []
        for j in range(3 + k % 2):
            w, h = rng.uniform(5, image.width / 2), rng.uniform(5, image.height / 2)
            x, y = rng.uniform(-4, image.width - w), rng.uniform(-4, image.height - h)
            boxes.append((float(x), float(y), float(w), float(h), f"label{j % 2}"))
        store.add_boxes(image.id, boxes)


def _png(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def store(tmp_path: Path, photo: Any) -> Iterator[Store]:
    one = Store(Settings(data_dir=tmp_path / "data"))
    _fill(one, photo)
    yield one
    one.close()


def _one_at_a_time(
    store: Store, model: Any, layer: str, kind: Descriptor, grid: int, mode: InputMode
) -> dict[int, torch.Tensor]:
    """The reference: each image forwarded alone, each box's region in float32."""
    out = {}
    maps: dict[int, torch.Tensor] = {}
    for box in store.boxes():
        image = store.get_image(box.image_id)
        if image.id not in maps:
            maps[image.id] = extract(
                model,
                [store.load_decoded(image)],
                [layer],
                mode=mode,
                native_max_side=store.settings.native_max_side,
            )[0][layer]
        out[box.id] = region_descriptors(
            maps[image.id],
            (image.width, image.height),
            [Box(box.x, box.y, box.w, box.h)],
            kind,
            grid,
        )[0]
    return out


@pytest.mark.parametrize(
    ("kind", "mode"), [("gap", "resize"), ("grid", "native"), ("pixels", "resize")]
)
def test_batched_pipeline_equals_one_image_at_a_time(
    store: Store, embedded_model: Any, kind: Descriptor, mode: InputMode
) -> None:
    boxes = store.boxes()
    report, fresh = extract_boxes(
        store, embedded_model, boxes, LAYERS, kind, 3, mode, batch_size=2, keep=True
    )
    assert (report.boxes, report.images, report.present) == (len(boxes), 5, 0)
    assert report.extracted == len(boxes) * len(LAYERS)
    for layer in LAYERS:
        reference = _one_at_a_time(store, embedded_model, layer, kind, 3, mode)
        for box in boxes:
            got, want = fresh[layer][box.id], reference[box.id]
            assert got.dtype == torch.float32 and got.shape == want.shape
            scale = max(1.0, want.abs().max().item())
            assert (got - want).abs().max().item() <= 1e-5 * scale, (layer, box.id)
    # Everything is stored now: a second run extracts nothing.
    again, _ = extract_boxes(store, embedded_model, boxes, LAYERS, kind, 3, mode)
    assert (again.extracted, again.images, again.present) == (0, 0, len(boxes) * len(LAYERS))


def test_descriptors_read_from_the_store_equal_fresh_ones(
    store: Store, embedded_model: Any, tmp_path: Path, photo: Any
) -> None:
    boxes = store.boxes()
    for kind in ("gap", "pixels"):
        first = box_descriptors(store, embedded_model, boxes, LAYERS, kind, 4)
        stats = store.features.stats()
        read = box_descriptors(store, embedded_model, boxes, LAYERS, kind, 4)  # from disk
        assert store.features.stats() == stats  # nothing was written the second time
        for layer in LAYERS:
            for a, b in zip(first[layer], read[layer], strict=True):
                assert a.shape == b.shape
                assert (a.double() - b.double()).abs().max().item() <= 1e-6
    # Fresh in another data dir, boxes in another order: the same numbers.
    other = Store(Settings(data_dir=tmp_path / "other"))
    try:
        _fill(other, photo)
        theirs = other.boxes()[::-1]
        fresh = box_descriptors(other, embedded_model, theirs, LAYERS, "gap")
        ours = box_descriptors(store, embedded_model, boxes[::-1], LAYERS, "gap")
        for layer in LAYERS:
            for a, b in zip(fresh[layer], ours[layer], strict=True):
                assert (a.double() - b.double()).abs().max().item() <= 1e-6
    finally:
        other.close()


def test_an_edited_box_alone_is_extracted_again(store: Store, embedded_model: Any) -> None:
    boxes = store.boxes()
    box_descriptors(store, embedded_model, boxes, LAYERS, "gap")
    edited = store.update_box(boxes[3].id, x=boxes[3].x + 7)
    store.delete_box(boxes[5].id)
    now = store.boxes()
    report, fresh = extract_boxes(store, embedded_model, now, LAYERS, "gap", keep=True)
    assert report.images == 1 and report.extracted == len(LAYERS)
    assert {layer: set(v) for layer, v in fresh.items()} == {name: {edited.id} for name in LAYERS}
    reference = _one_at_a_time(store, embedded_model, "conv_head", "gap", 4, "resize")
    got = box_descriptors(store, embedded_model, now, ["conv_head"], "gap")["conv_head"]
    for box, value in zip(now, got, strict=True):
        assert torch.allclose(value, reference[box.id], rtol=1e-5, atol=1e-5)


def test_cancel_keeps_what_was_done(store: Store, embedded_model: Any) -> None:
    boxes = store.boxes()
    polls: list[int] = []

    def cancelled() -> bool:
        polls.append(1)
        return len(polls) > 2  # two batches run, then stop

    with pytest.raises(JobCancelled):
        extract_boxes(
            store, embedded_model, boxes, ["conv_head"], batch_size=2, cancelled=cancelled
        )
    report, _ = extract_boxes(store, embedded_model, boxes, ["conv_head"], batch_size=2)
    assert report.images == 1  # the fifth image alone was left
    assert report.present + report.extracted == len(boxes)


def test_progress_counts_images_after_each_batch(store: Store, embedded_model: Any) -> None:
    boxes = store.boxes()
    images = len({b.image_id for b in boxes})
    told: list[tuple[float, str]] = []
    extract_boxes(
        store,
        embedded_model,
        boxes,
        ["conv_head"],
        batch_size=2,
        progress=lambda fraction, message: told.append((fraction, message)),
        force=True,
    )
    # one step a batch of 2 images, the last one possibly short, ending at all of them
    done = [min(k, images) for k in range(2, images + 2, 2)]
    assert told == [(d / images, f"features of {d}/{images} images") for d in done]
