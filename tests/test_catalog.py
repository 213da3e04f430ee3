"""The on-disk cache of what the command line lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.catalog import SEED, cached, fingerprint, seeded, torch_hub_dir, versions


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
    no_seed = tmp_path / "no-seed.json"
    cached(tmp_path / "data", models, "models", lambda: ["a"], no_seed)
    (models / "resnet18.json").write_text("{}")
    assert fingerprint(models) != before
    # The stale answer is not served, and its file goes when the new one is written.
    assert cached(tmp_path / "data", models, "models", lambda: ["a", "b"], no_seed) == ["a", "b"]
    assert len(list((tmp_path / "data" / "cache").glob("catalog-*.json"))) == 1


def test_a_damaged_file_is_computed_again_and_errors_are_not_cached(tmp_path: Path) -> None:
    def fail() -> object:
        raise KeyError("unknown model 'nope'")

    with pytest.raises(KeyError, match="nope"):
        cached(tmp_path / "data", None, "layers:nope", fail)
    folder = tmp_path / "data" / "cache"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"catalog-{fingerprint(None)}.json").write_text('{"models": [')
    assert cached(tmp_path / "data", None, "models", lambda: ["m"], tmp_path / "none") == ["m"]


def test_a_cache_that_cannot_be_written_only_costs_speed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "cache").write_text("a file where the folder would go")  # fails even for root
    calls: list[int] = []
    for _ in range(2):
        assert cached(data, None, "models", lambda: calls.append(1) or [1], data / "none") == [1]
    assert len(calls) == 2


def test_torch_hub_dir_matches_torch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    # Another test may have called torch.hub.set_dir (which outlives its restore): the
    # environment decides only while no directory is set, as in a fresh process.
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    for env in ({}, {"TORCH_HOME": str(tmp_path / "th")}, {"XDG_CACHE_HOME": str(tmp_path)}):
        monkeypatch.delenv("TORCH_HOME", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert torch_hub_dir() == Path(torch.hub.get_dir())


def _write_seed(path: Path, **changes: object) -> Path:
    seed = {
        "versions": versions(),
        "hub_files": ["resnet18-f37072fd.pth"],
        "entries": {"models": [{"name": "m"}], "layers:m": [{"name": "conv"}], "methods": []},
    }
    path.write_text(json.dumps({**seed, **changes}))
    return path


def test_the_seed_is_served_only_where_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    seed = _write_seed(tmp_path / "seed.json")
    models = tmp_path / "models"
    models.mkdir()
    (models / "README.md").write_text("weights and sidecars go here")
    assert seeded("models", models, seed) == [{"name": "m"}]
    assert seeded("layers:m", models, seed) == [{"name": "conv"}]
    assert seeded("methods", models, seed) == []  # an empty list is an answer, not a miss
    assert seeded("layers:other", models, seed) is None
    assert seeded("models", models, tmp_path / "absent.json") is None
    # A file in the hub cache adds a model only when torchvision names it as its weights.
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "my-own.pth").write_bytes(b"")
    assert seeded("models", models, seed) == [{"name": "m"}]
    (checkpoints / "resnet18-f37072fd.pth").write_bytes(b"")
    assert seeded("models", models, seed) is None
    assert seeded("layers:m", models, seed) == [{"name": "conv"}]
    (checkpoints / "resnet18-f37072fd.pth").unlink()
    # A sidecar adds a model the seed does not know: the models list is computed.
    (models / "resnet18.json").write_text("{}")
    assert seeded("models", models, seed) is None
    assert seeded("layers:m", models, seed) == [{"name": "conv"}]
    # Made with another version of a package: nothing is served.
    other = _write_seed(tmp_path / "old.json", versions={**versions(), "timm": "0.0.1"})
    assert seeded("layers:m", None, other) is None


def test_cached_takes_the_seed_before_computing(tmp_path: Path) -> None:
    seed = _write_seed(tmp_path / "seed.json")

    def compute() -> object:
        raise AssertionError("computed although seeded")

    assert cached(tmp_path / "data", None, "layers:m", compute, seed) == [{"name": "conv"}]
    assert cached(tmp_path / "data", None, "layers:n", lambda: [3], seed) == [3]


@pytest.mark.slow  # loads the embedded model for its layers
def test_the_shipped_seed_equals_the_live_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails when code or packages change a list: run ``python -m app.catalog_seed``."""
    import torch

    from app.catalog_seed import torchvision_weight_files
    from app.cli import catalog_value
    from app.config import get_settings
    from app.engine.models import BUILTIN_MODELS

    # Where the seed is served: no sidecar, nothing in the hub cache.
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FEATUREGAP_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    get_settings.cache_clear()
    try:
        shipped = json.loads(SEED.read_text(encoding="utf-8"))
        stale = "is stale: run python -m app.catalog_seed"
        assert shipped["versions"] == versions(), f"{SEED.name} {stale}"
        assert shipped["hub_files"] == torchvision_weight_files(), f"{SEED.name} {stale}"
        keys = {"models", "methods", "measures", *(f"layers:{name}" for name in BUILTIN_MODELS)}
        assert set(shipped["entries"]) == keys, f"{SEED.name} {stale}"
        for key, value in shipped["entries"].items():
            assert value == catalog_value(key), f"{SEED.name}: {key} {stale}"
    finally:
        get_settings.cache_clear()
