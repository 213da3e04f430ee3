"""Per-label statistics reduced shard by shard from the feature store (no Ray, no model)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.engine import random_features as rf
from app.engine.moments import Moments
from app.service.extraction import stored_box
from app.service.statistics import label_mmd, label_statistics
from app.store import Store
from app.store.features import FeatureSet

WIDTH = 7


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (seed, 3, 9)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[tuple[Store, FeatureSet, dict[int, np.ndarray]]]:
    """43 boxes of 3 labels on 4 images, 2 rows of 7 floats each (a ``pixels`` set), written
    in 3 segments; the rows far from the origin."""
    store = Store(Settings(data_dir=tmp_path / "data"))
    chosen = store.features.feature_set(
        model="m",
        weights_sha256="0" * 64,
        layer="l",
        descriptor="pixels",
        grid_size=1,
        mode="resize",
        rows_per_box=2,
        width=WIDTH,
    )
    rng = np.random.default_rng(8)
    values: dict[int, np.ndarray] = {}
    for k, count in enumerate([11, 9, 17, 6]):
        image = store.add_image(_png(k), f"{k}.png")[0]
        labels = [("a", "b", "c")[(k + j) % 3] for j in range(count)]
        boxes = store.add_boxes(image.id, [(j, 1, 5, 5, lab) for j, lab in enumerate(labels)])
        rows = rng.normal(size=(count, 2, WIDTH)) * (1 + k) + 50
        store.features.write(chosen, [stored_box(b, image) for b in boxes], rows)
        values.update({b.id: r for b, r in zip(boxes, rows.astype(np.float32), strict=True)})
    yield store, chosen, values
    store.close()


def _groups(store: Store, values: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    for box in store.boxes():
        out.setdefault(box.label, []).append(values[box.id].astype(np.float64))
    return {label: np.concatenate(parts) for label, parts in out.items()}


def test_sharded_statistics_equal_the_rows(filled: tuple[Store, FeatureSet, dict]) -> None:
    store, chosen, values = filled
    seen: list[float] = []
    stats = label_statistics(
        store, chosen, store.boxes(), shard_boxes=7, progress=lambda f, _: seen.append(f)
    )
    assert (stats.boxes, stats.rows, stats.shards) == (43, 86, 7)
    assert seen == sorted(seen) and seen[-1] == 1.0
    groups = _groups(store, values)
    assert list(stats.moments) == list(groups)  # first-seen order
    for label, x in groups.items():
        got = stats.moments[label]
        assert got.count == len(x)
        np.testing.assert_allclose(got.mean, x.mean(0), rtol=0, atol=1e-9)
        np.testing.assert_allclose(got.covariance(), np.cov(x.T), rtol=0, atol=1e-9)


def test_sharded_mmd_equals_the_same_features_on_all_rows(
    filled: tuple[Store, FeatureSet, dict],
) -> None:
    store, chosen, values = filled
    names, matrix, scales = label_mmd(store, chosen, store.boxes(), features=256, shard_boxes=5)
    groups = _groups(store, values)
    assert names == list(groups)
    shift = values[min(values)][0].astype(np.float64)  # the first stored row
    pooled = [Moments.of(x, shift) for x in groups.values()]
    want_scales, weight = rf.multi_kernel(pooled)
    np.testing.assert_allclose(scales, want_scales, rtol=1e-12)
    features = rf.RandomFeatures(want_scales, weight, 256, WIDTH, 0)
    sums = {n: rf.label_sums(features, x, [n] * len(x), shift)[n] for n, x in groups.items()}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            want = 0.0 if i == j else rf.mmd_from_features(sums[a], sums[b], features.at_zero)
            assert abs(matrix[i, j] - want) <= 1e-12


def test_boxes_without_descriptors_are_named(filled: tuple[Store, FeatureSet, dict]) -> None:
    store, chosen, _ = filled
    image = store.add_image(_png(99), "new.png")[0]
    store.add_boxes(image.id, [(1, 1, 4, 4, "a")])
    with pytest.raises(ValueError, match="1 boxes .* run featuregap extract"):
        label_statistics(store, chosen, store.boxes())
    with pytest.raises(ValueError, match="no boxes"):
        label_statistics(store, chosen, [])
    with pytest.raises(ValueError, match="unknown estimator"):
        label_mmd(store, chosen, store.boxes(), estimator="linear")
