"""Analyses in the service: work units, vanished boxes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image


@pytest.mark.slow
def test_a_box_deleted_while_distances_run_fails_naming_it(
    data_dir: Path, photo: Any, embedded_model: Any
) -> None:
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


def test_separation_work_counts_pairs_where_the_measure_loops_over_pairs() -> None:
    from app.service.analysis import SeparationRequest, separation_work

    def units(measure: str, descriptor: str) -> int:
        request = SeparationRequest("m", ["a", "b"], measure, descriptor)  # type: ignore[arg-type]
        return separation_work(request, 300)

    assert units("euclidean", "gap") == units("mahalanobis", "grid") == 600
    assert units("mmd", "pixels") == units("euclidean", "pixels") == 300 * 299 // 2 * 2
    assert units("mutual_information", "grid") == 300 * 299 // 2 * 2


def test_distance_work_counts_the_bootstrap_only_where_an_interval_is_computed() -> None:
    from app.service.analysis import DistanceRequest, distance_work

    def units(measure: str) -> int:
        return distance_work(DistanceRequest("m", "l", measure, permutations=9, bootstrap=100), 20)

    assert units("euclidean") == 20 * (9 + 100 * 26)  # studentized: 25 inner resamples each
    assert units("mahalanobis") == 20 * 9  # it gives no interval


def test_separation_and_embedding_are_cached_under_the_results_version(
    data_dir: Path, photo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    import torch

    from app.config import get_settings
    from app.service import analysis, results
    from app.store import Store

    store = Store(get_settings())
    image, _ = store.add_image(photo.png("coffee"), "coffee.png")
    boxes = [store.add_box(image.id, 10 + 30 * i, 10, 20 + i, 20, "ab"[i % 2]) for i in range(6)]
    calls: list[int] = []

    def descriptors(
        _store: Any, _model: Any, every: list[Any], layers: list[str], *_args: Any
    ) -> dict[str, list[torch.Tensor]]:
        calls.append(len(every))
        gen = torch.Generator().manual_seed(len(calls))
        return {
            layer: [torch.randn(3, generator=gen, dtype=torch.float64) for _ in every]
            for layer in layers
        }

    monkeypatch.setattr(analysis, "box_descriptors", descriptors)
    for budget in ("estimate_separation", "estimate_embedding"):  # they need a real model
        monkeypatch.setattr(analysis, budget, lambda *_args, **_kwargs: None)
    model: Any = SimpleNamespace(spec=SimpleNamespace(name="m"), weights_sha256="w")
    settings = get_settings()
    groups = {"a": boxes[1::2], "b": boxes[0::2]}
    runs = [
        lambda: analysis.separation_profile(
            store, settings, model, groups, analysis.SeparationRequest("m", ["l1", "l2"])
        ),
        lambda: analysis.embedding(
            store, settings, model, boxes, analysis.EmbeddingRequest("m", "l1", method="pca")
        ),
    ]
    for run in runs:
        calls.clear()
        first = run()
        assert run() == first and calls == [6]  # the second answer is the stored one
        with monkeypatch.context() as newer:
            newer.setattr(results, "results_version", lambda: "newer-code-0000")
            assert run() != first and calls == [6, 6]  # other code: computed again
    assert store.count_results() == 4
    store.close()


def test_a_cached_embedding_takes_the_labels_current_colours(
    data_dir: Path, photo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    import torch

    from app.config import get_settings
    from app.palette import label_colours
    from app.service import analysis
    from app.store import Store

    store = Store(get_settings())
    image, _ = store.add_image(photo.png("coffee"), "coffee.png")
    boxes = [store.add_box(image.id, 10 + 30 * i, 10, 20, 20, "cd"[i % 2]) for i in range(4)]
    calls: list[int] = []

    def descriptors(_s: Any, _m: Any, every: list[Any], layers: list[str], *_a: Any) -> Any:
        calls.append(len(every))
        gen = torch.Generator().manual_seed(1)
        return {layers[0]: [torch.randn(3, generator=gen, dtype=torch.float64) for _ in every]}

    monkeypatch.setattr(analysis, "box_descriptors", descriptors)
    monkeypatch.setattr(analysis, "estimate_embedding", lambda *_args, **_kwargs: None)
    model: Any = SimpleNamespace(spec=SimpleNamespace(name="m"), weights_sha256="w")
    request = analysis.EmbeddingRequest("m", "l1", method="pca")

    def colours() -> dict[str, str]:
        answer = analysis.embedding(store, get_settings(), model, boxes, request)
        return {t["name"]: t["marker"]["color"] for t in answer["figure"]["data"]}

    assert colours() == {k: label_colours("cd")[k] for k in "cd"}
    # Labels "a" and "b" on another image: "c" and "d" move down the palette's ranks.
    other, _ = store.add_image(photo.png("chelsea"), "chelsea.png")
    store.add_boxes(other.id, [(0, 0, 9, 9, "a"), (10, 10, 9, 9, "b")])
    assert (
        colours()
        == {k: label_colours("abcd")[k] for k in "cd"}
        != {k: label_colours("cd")[k] for k in "cd"}
    )
    assert calls == [4]  # the second answer is the stored one, repainted
    store.close()


@pytest.mark.slow
def test_auto_interval_is_the_measures_own_studentized_and_an_asked_one_is_kept(
    data_dir: Path, photo: Any, embedded_model: Any
) -> None:
    from app.config import get_settings
    from app.service.analysis import DistanceRequest, distances, resolve_groups
    from app.store import Store

    store = Store(get_settings())
    for name in ("brick", "grass"):
        for k, (x, y) in enumerate(((0, 0), (256, 0), (0, 256))):
            buffer = io.BytesIO()  # three corners of the photo: three images of a label
            Image.fromarray(photo(name)[y : y + 256, x : x + 256]).save(buffer, format="PNG")
            image = store.add_image(buffer.getvalue(), f"{name}-{k}.png")[0]
            store.add_boxes(image.id, [(16, 16, 200, 200, name)])
    groups = resolve_groups(store, None, ["brick", "grass"])

    def method(measure: str, descriptor: str, **asked: Any) -> str | None:
        request = DistanceRequest(
            "efficientnet_lite0", "blocks.5.1.add", measure, descriptor, bootstrap=40, **asked
        )
        answer = distances(store, get_settings(), embedded_model, groups, request)
        interval = answer["tests"][0]["interval"]
        return None if interval is None else str(interval["method"])

    unbiased = {"options": {"estimator": "unbiased"}}
    assert method("mmd", "pixels", **unbiased) == "studentized"
    assert method("euclidean", "gap") == "studentized"
    assert method("euclidean", "gap", interval_method="percentile") == "percentile"
    assert method("mmd", "pixels", interval_method="bca", **unbiased) == "bca"
    store.close()
