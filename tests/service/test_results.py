"""The results cache never serves numbers computed by other code."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from app.config import get_settings
from app.service import results
from app.store import Store


def test_version_changes_with_any_source_change(tmp_path: Path) -> None:
    tree = tmp_path / "app"
    shutil.copytree(
        Path(results.__file__).resolve().parent.parent,
        tree,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    before = results.source_hash(tree)
    assert before == results.source_hash(tree)  # deterministic
    measure = tree / "engine" / "measures" / "euclidean.py"
    measure.write_text(measure.read_text() + "\n# a changed measure\n")
    after_edit = results.source_hash(tree)
    assert after_edit != before
    (tree / "engine" / "new_descriptor.py").write_text("X = 1\n")
    assert results.source_hash(tree) not in (before, after_edit)
    assert (
        results.results_version()
        == results.source_hash(Path(results.__file__).resolve().parent.parent)[:16]
    )


def _counter() -> tuple[list[int], Callable[[], dict[str, int]]]:
    """A computation that answers how many times it ran, and the list of its runs."""
    calls: list[int] = []

    def compute() -> dict[str, int]:
        calls.append(1)
        return {"value": len(calls)}

    return calls, compute


def test_old_version_is_never_served_and_dropped_at_start(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(get_settings())
    calls, compute = _counter()
    assert results.cached(store, "distances", {"a": 1}, compute) == {"value": 1}
    assert results.cached(store, "distances", {"a": 1}, compute) == {"value": 1}
    assert len(calls) == 1
    monkeypatch.setattr(results, "results_version", lambda: "newer-code-0000")
    assert results.cached(store, "distances", {"a": 1}, compute) == {"value": 2}
    assert store.count_results() == 2
    assert results.drop_stale_results(store) == 1
    assert store.count_results() == 1
    assert results.cached(store, "distances", {"a": 1}, compute) == {"value": 2}
    store.close()


def test_an_image_deleted_while_its_answer_is_computed_is_a_not_found(
    data_dir: Path, photo: object
) -> None:
    from app.errors import NotFound

    store = Store(get_settings())
    image = store.add_image(photo.png("coffee"), "coffee.png")[0]  # type: ignore[attr-defined]

    def compute() -> dict[str, int]:
        store.delete_image(image.id)  # another request deletes it meanwhile
        return {"value": 1}

    with pytest.raises(NotFound, match=f"image {image.id} was deleted"):
        results.cached(store, "heatmap", {"image": image.id}, compute, image_id=image.id)
    assert store.count_results() == 0
    store.close()


def test_an_answer_not_kept_is_computed_each_time_and_a_kept_one_still_served(
    data_dir: Path,
) -> None:
    store = Store(get_settings())
    calls, compute = _counter()
    assert results.cached(store, "heatmap", {"a": 1}, compute, keep=False) == {"value": 1}
    assert results.cached(store, "heatmap", {"a": 1}, compute, keep=False) == {"value": 2}
    assert store.count_results() == 0
    assert results.cached(store, "heatmap", {"a": 1}, compute) == {"value": 3}
    assert results.cached(store, "heatmap", {"a": 1}, compute, keep=False) == {"value": 3}
    assert store.count_results() == 1 and len(calls) == 3
    store.close()
