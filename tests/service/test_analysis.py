"""Distances in the service: units, vanished boxes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def test_a_box_deleted_while_distances_run_fails_naming_it(
        data_dir: Path, photo: Any, embedded_model: Any) -> None:
    from app.config import get_settings
    from app.service.analysis import DistanceRequest, distances, resolve_groups
    from app.store import Store

    store = Store(get_settings())
    for name in ("brick", "grass"):
        image = store.add_image(photo.png(name), f"{name}.png")[0]
        store.add_boxes(image.id, [(10, 10, 200, 200, name), (250, 250, 200, 200, name)])
    groups = resolve_groups(store, None, ["brick", "grass"])
    victim = groups["grass"][1]
    deleted: list[int] = []

    def progress(fraction: float, message: str) -> None:
        if not deleted:
            store.delete_box(victim.id)
            deleted.append(victim.id)

    request = DistanceRequest("efficientnet_lite0", "conv_head", "euclidean")
    with pytest.raises(KeyError, match=rf"deleted meanwhile: box\(es\) \[{victim.id}\]"):
        distances(store, get_settings(), embedded_model, groups, request, progress=progress)
    assert store.count_results() == 0  # nothing half-done was cached
    store.close()
