"""The on-disk cache of what the command line lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.catalog import cached, fingerprint, torch_hub_dir


def test_a_value_is_computed_once_then_read_back(tmp_path: Path) -> None:
    calls: list[int] = []

    def compute() -> dict[str, object]:
        calls.append(1)
        return {"rows": [1, 2.5, "x"], "t": (3, 4)}

    first = cached(tmp_path / "data", tmp_path / "models", "k", compute)
    second = cached(tmp_path / "data", tmp_path / "models", "k", compute)
    assert first == second == {"rows": [1, 2.5, "x"], "t": [3, 4]}  # JSON's types both times
    assert len(calls) == 1
    assert cached(tmp_path / "data", tmp_path / "models", "other", lambda: 7) == 7
    (path,) = (tmp_path / "data" / "cache").glob("catalog-*.json")
    assert json.loads(path.read_text())["other"] == 7


def test_a_new_file_in_the_models_folder_makes_a_new_fingerprint(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    before = fingerprint(models)
    assert fingerprint(models) == before
    cached(tmp_path / "data", models, "models", lambda: ["a"])
    (models / "resnet18.json").write_text("{}")
    assert fingerprint(models) != before
    # The stale answer is not served, and its file goes when the new one is written.
    assert cached(tmp_path / "data", models, "models", lambda: ["a", "b"]) == ["a", "b"]
    assert len(list((tmp_path / "data" / "cache").glob("catalog-*.json"))) == 1


def test_a_damaged_file_is_computed_again_and_errors_are_not_cached(tmp_path: Path) -> None:
    def fail() -> object:
        raise KeyError("unknown model 'nope'")

    with pytest.raises(KeyError, match="nope"):
        cached(tmp_path / "data", None, "layers:nope", fail)
    folder = tmp_path / "data" / "cache"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"catalog-{fingerprint(None)}.json").write_text('{"models": [')
    assert cached(tmp_path / "data", None, "models", lambda: ["m"]) == ["m"]


def test_a_cache_that_cannot_be_written_only_costs_speed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "cache").write_text("a file where the folder would go")  # fails even for root
    calls: list[int] = []
    for _ in range(2):
        assert cached(data, None, "models", lambda: calls.append(1) or [1]) == [1]
    assert len(calls) == 2


def test_torch_hub_dir_matches_torch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    for env in ({}, {"TORCH_HOME": str(tmp_path / "th")}, {"XDG_CACHE_HOME": str(tmp_path)}):
        monkeypatch.delenv("TORCH_HOME", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert torch_hub_dir() == Path(torch.hub.get_dir())
