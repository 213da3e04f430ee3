"""The Ray backend on a local Ray (2 CPUs) and the synthetic dataset: the same descriptors
as the local pipeline, the same per-label statistics as one machine, and a complete store
after an actor dies mid-run."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from app.config import Settings
from app.engine.measures.euclidean import euclidean
from app.engine.measures.mahalanobis import mahalanobis
from app.engine.measures.mmd import mmd
from app.engine.measures.std_euclidean import std_euclidean
from app.service.extraction import extract_boxes, feature_sets, stored_box
from app.store import Store
from benchmarks.synthetic import make_dataset

ray = pytest.importorskip("ray")

from app.service.ray_extraction import (  # noqa: E402  (after the skip when Ray is missing)
    DescriptorActor,
    RayOptions,
    extract_boxes_ray,
)
from app.service.statistics import label_statistics  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]

LAYERS = ["blocks.2.1.add", "conv_head"]
KIND, GRID, MODE, BATCH = "pixels", 2, "native", 4


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A Ray of two CPUs for this module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("synthetic")
    return make_dataset(root, images=7, boxes_per_image=3, seed=4, size=(150, 110), formats=())


def _store(root: Path, dataset: Any) -> Store:
    store = Store(Settings(data_dir=root))
    ids = {
        name: store.add_image((dataset.images_dir / name).read_bytes(), name)[0].id
        for name in dataset.file_names
    }
    for _, name, box in dataset.boxes:
        store.add_boxes(ids[name], [(box.x, box.y, box.w, box.h, box.label)])
    return store


def _stored(store: Store, model: Any, layer: str) -> dict[int, np.ndarray]:
    """Every box's stored descriptor, by the box's position in the dataset."""
    chosen = feature_sets(store, model, [layer], KIND, GRID, MODE)[layer]
    boxes = store.boxes()
    found = store.features.read(chosen, [stored_box(b, store.get_image(b.image_id)) for b in boxes])
    return {
        k: found[b.id] for k, b in enumerate(sorted(boxes, key=lambda b: b.id)) if b.id in found
    }


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory, dataset: Any, embedded_model: Any
) -> dict[str, dict[int, np.ndarray]]:
    """The local pipeline's descriptors, with one torch thread as each actor has (so the
    sums run in the same order and the numbers agree to the last bit)."""
    store = _store(tmp_path_factory.mktemp("local"), dataset)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        extract_boxes(store, embedded_model, store.boxes(), LAYERS, KIND, GRID, MODE, BATCH)
        return {layer: _stored(store, embedded_model, layer) for layer in LAYERS}
    finally:
        torch.set_num_threads(threads)
        store.close()


def _same_as_reference(
    store: Store, model: Any, reference: dict[str, dict[int, np.ndarray]]
) -> None:
    for layer in LAYERS:
        got = _stored(store, model, layer)
        want = reference[layer]
        assert sorted(got) == sorted(want) == list(range(21))
        diff = max(float(np.abs(got[k] - want[k]).max()) for k in want)
        assert diff <= 1e-5, (layer, diff)


def _groups(store: Store, model: Any, layer: str) -> dict[str, np.ndarray]:
    """Each label's rows of the stored descriptors, float64 (the one-machine input)."""
    rows = _stored(store, model, layer)
    per_label: dict[str, list[np.ndarray]] = {}
    for k, box in enumerate(sorted(store.boxes(), key=lambda b: b.id)):
        per_label.setdefault(box.label, []).append(rows[k].astype(np.float64))
    return {label: np.concatenate(parts) for label, parts in per_label.items()}


MEASURES = {"euclidean": euclidean, "std_euclidean": std_euclidean, "mahalanobis": mahalanobis}


def test_extract_and_stats_on_ray_equal_one_machine(
    local_ray: None,
    data_dir: Path,
    dataset: Any,
    embedded_model: Any,
    reference: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from app.cli import main

    _store(data_dir, dataset).close()
    common = ["--descriptor", KIND, "--grid-size", str(GRID), "--mode", MODE]
    argv = ["extract", "--layers", ",".join(LAYERS), *common, "--batch-size", str(BATCH)]
    assert main([*argv, "--ray", "--ray-actors", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["boxes"], report["images"], report["extracted"]) == (21, 7, 42)
    store = Store(Settings(data_dir=data_dir))
    try:
        _same_as_reference(store, embedded_model, reference)
        groups = _groups(store, embedded_model, "conv_head")
    finally:
        store.close()
    # Per-label statistics reduced by Ray tasks over shards of 4 boxes == the rows.
    stats = ["stats", "--layer", "conv_head", *common, "--shard-boxes", "4", "--mmd", "4096"]
    stats += ["--ray", "--json"]
    assert main(stats) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["shards"], result["rows"]) == (6, 21 * GRID * GRID)
    names = [entry["label"] for entry in result["labels"]]
    assert {n: e["rows"] for n, e in zip(names, result["labels"], strict=True)} == {
        n: len(x) for n, x in groups.items()
    }
    for measure, by_rows in MEASURES.items():
        matrix = result["distances"][measure]
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                want = (
                    0.0
                    if i == j
                    else by_rows(torch.from_numpy(groups[a]), torch.from_numpy(groups[b]))
                )
                assert abs(matrix[i][j] - want) <= 1e-9 * max(1.0, want), (measure, a, b)
    # MMD² from per-shard random-feature sums is near the exact MMD² under the same kernel
    # (the multi-kernel family centred on all chosen rows pooled).
    scales = result["mmd"]["kernel_scales"]
    sigma = (scales[len(scales) // 2] / 2) ** 0.5
    for i, a in enumerate(names):
        for j, b in enumerate(names[:i]):
            x, y = torch.from_numpy(groups[a]), torch.from_numpy(groups[b])
            want = mmd(x, y, kernel="multi", sigma=sigma)
            got = result["distances"]["mmd"][i][j]
            # Measured: within 1.2% (few rows per label, so the kernel errors barely average).
            assert abs(got - want) <= 0.03 * want + 2e-3, (a, b, got, want)
    # Everything is stored: a second run sends nothing to the cluster.
    assert main([*argv, "--ray", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["extracted"], again["images"], again["present"]) == (0, 0, 42)


def test_a_worker_that_dies_mid_run_still_leaves_a_complete_store(
    local_ray: None, tmp_path: Path, dataset: Any, embedded_model: Any, reference: Any
) -> None:
    store = _store(tmp_path / "data", dataset)
    marker = tmp_path / "died"

    class DiesOnce(DescriptorActor):
        """Exits its process in the first shard any actor runs (a crashed worker)."""

        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            try:
                marker.touch(exist_ok=False)
            except FileExistsError:
                return super().__call__(batch)
            os._exit(1)

    try:
        report = extract_boxes_ray(
            store,
            embedded_model,
            store.boxes(),
            LAYERS,
            KIND,
            GRID,
            MODE,
            BATCH,
            options=RayOptions(actors=2),
            actor=DiesOnce,
        )
        assert marker.exists()  # an actor did die
        assert report.extracted == 42
        _same_as_reference(store, embedded_model, reference)
        assert store.features.stats().rows == 42
        # Per-label moments over shards of 5 boxes (in this process) == the rows.
        layer = "conv_head"
        chosen = feature_sets(store, embedded_model, [layer], KIND, GRID, MODE)[layer]
        stats = label_statistics(store, chosen, store.boxes(), shard_boxes=5)
        groups = _groups(store, embedded_model, layer)
        assert stats.shards == 5 and list(stats.moments) == list(groups)
        for label, x in groups.items():
            got = stats.moments[label]
            assert got.count == x.shape[0]
            np.testing.assert_allclose(got.mean, x.mean(0), rtol=0, atol=1e-9)
            np.testing.assert_allclose(got.covariance(), np.cov(x.T), rtol=0, atol=1e-9)
    finally:
        store.close()
