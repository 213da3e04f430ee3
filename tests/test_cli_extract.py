"""``featuregap extract``: batched extraction into the feature store from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.cli import main

pytestmark = pytest.mark.slow


def test_extract_fills_the_store_once(
    data_dir: Path, photo: Any, embedded_model: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.config import get_settings
    from app.service.features import box_descriptors
    from app.store import Store

    store = Store(get_settings())
    for name in ("chelsea", "coffee", "rocket"):
        image = store.add_image(photo.png(name), f"{name}.png")[0]
        store.add_boxes(image.id, [(5, 7, 120, 90, "a"), (30, 40, 61, 33, "b")])
    store.close()
    argv = [
        "extract",
        "--layers",
        "blocks.4.0.conv_pw, conv_head",
        "--labels",
        "a",
        "--batch-size",
        "2",
        "--json",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["boxes"], report["layers"], report["images"]) == (3, 2, 3)
    assert (report["extracted"], report["present"]) == (6, 0)
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["extracted"], again["present"], again["images"]) == (0, 6, 0)
    # What the command stored is what an analysis reads: the "a" boxes come from the store.
    store = Store(get_settings())
    try:
        rows = store.features.stats().rows
        boxes = store.boxes(labels=["a"])
        box_descriptors(store, embedded_model, boxes, ["conv_head"], "gap")
        assert store.features.stats().rows == rows
    finally:
        store.close()
    assert (
        main(["extract", "--layers", "conv_head", "--descriptor", "pixels", "--grid-size", "2"])
        == 0
    )
    assert "6 boxes × 1 layers: 6 extracted from 3 images" in capsys.readouterr().out


def test_extract_refuses_an_unknown_layer(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["extract", "--layers", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("featuregap extract: error: unknown layer 'nope'")
