"""The model registry: embedded default, sidecar discovery, safe and exact weight loading."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from app.engine import models
from app.engine.models import (
    BUILTIN_MODELS,
    BuiltinModel,
    ModelSpec,
    get_model,
    list_models,
    read_sidecar,
)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def _tiny_resnet(seed: int = 0, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    module: nn.Module = torchvision.models.resnet18(num_classes=classes)
    return module.eval()


def _sidecar(folder: Path, name: str, weights: str, classes: int = 3, **extra: object) -> None:
    body = {
        "architecture": "resnet18",
        "source": "torchvision",
        "input_size": 64,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "class_names": [f"c{i}" for i in range(classes)],
        "weights": weights,
        **extra,
    }
    (folder / f"{name}.json").write_text(json.dumps(body))


@pytest.mark.parametrize("suffix", ["pt", "safetensors"])
def test_sidecar_model_is_discovered_and_loads_exactly(models_dir: Path, suffix: str) -> None:
    reference = _tiny_resnet(seed=1)
    state = reference.state_dict()
    if suffix == "pt":
        torch.save(state, models_dir / "tiny.pt")
    else:
        tensors = {k: v.contiguous() for k, v in state.items()}
        save_file(tensors, str(models_dir / "tiny.safetensors"))
    _sidecar(models_dir, "tiny", f"tiny.{suffix}")

    specs = {spec.name: spec for spec in list_models(models_dir)}
    assert "efficientnet_lite0" in specs and "tiny" in specs
    assert specs["tiny"].class_names == ("c0", "c1", "c2") and specs["tiny"].input_size == 64

    loaded = get_model("tiny", models_dir)
    assert get_model("tiny", models_dir) is loaded
    assert not loaded.module.training and loaded.max_stride == 32
    x = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        torch.testing.assert_close(loaded.module(x), reference(x), rtol=0, atol=0)


def test_mismatched_weights_are_an_error(models_dir: Path) -> None:
    torch.save(_tiny_resnet(classes=5).state_dict(), models_dir / "five.pt")
    _sidecar(models_dir, "five", "five.pt", classes=3)
    with pytest.raises(ValueError, match="shape mismatch"):
        get_model("five", models_dir)

    state = _tiny_resnet().state_dict()
    state.pop("fc.bias")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, models_dir / "gappy.pt")
    _sidecar(models_dir, "gappy", "gappy.pt")
    with pytest.raises(ValueError, match=r"missing 1 keys.*1 unexpected keys"):
        get_model("gappy", models_dir)


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


def test_pickled_objects_are_refused(models_dir: Path) -> None:
    (models_dir / "evil.pt").write_bytes(pickle.dumps({"fc.weight": _Payload()}))
    _sidecar(models_dir, "evil", "evil.pt")
    with pytest.raises(ValueError, match="not a plain state dict"):
        get_model("evil", models_dir)
    torch.save({"a": [1, 2]}, models_dir / "lists.pt")
    _sidecar(models_dir, "lists", "lists.pt")
    with pytest.raises(ValueError, match="mapping of parameter names to tensors"):
        get_model("lists", models_dir)


def test_weights_from_the_torch_hub_cache(models_dir: Path, tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    reference = _tiny_resnet(seed=4)
    torch.save(reference.state_dict(), hub / "checkpoints" / "resnet18-tiny.pth")
    _sidecar(models_dir, "hubbed", "hub:resnet18-tiny.pth")
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        loaded = get_model("hubbed", models_dir)
    finally:
        torch.hub.set_dir(previous)
    x = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(loaded.module(x), reference(x), rtol=0, atol=0)


def test_unknown_names_and_missing_files(models_dir: Path) -> None:
    with pytest.raises(KeyError, match="efficientnet_lite0"):
        get_model("no_such_model", models_dir)
    _sidecar(models_dir, "absent", "absent.pt")
    with pytest.raises(ValueError, match="not found"):
        get_model("absent", models_dir)
    _sidecar(models_dir, "weird", "weird.pt", architecture="resnet_9000")
    torch.save({}, models_dir / "weird.pt")
    with pytest.raises(ValueError, match="unknown torchvision architecture"):
        get_model("weird", models_dir)


def test_sidecar_validation(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"architecture": "resnet18", "class_names": "imagenet"}))
    spec = read_sidecar(path)
    assert spec.name == "m" and len(spec.class_names) == 1000 and spec.class_names[281] == "tabby"
    for body, message in [
        ("{not json", "not valid JSON"),
        (json.dumps({"class_names": "imagenet"}), "architecture"),
        (json.dumps({"architecture": "resnet18", "std": [1, 0, 1]}), "std positive"),
        (json.dumps({"architecture": "resnet18", "source": "keras"}), "source"),
    ]:
        path.write_text(body)
        with pytest.raises(ValueError, match=message):
            read_sidecar(path)


def test_register_model_refuses_duplicates() -> None:
    spec = next(s for s in list_models() if s.name == "efficientnet_lite0")

    class Other(BuiltinModel):
        spec = ModelSpec(
            "other",
            "resnet18",
            "torchvision",
            64,
            models.IMAGENET_MEAN,
            models.IMAGENET_STD,
            ("a",),
            None,
            "",
        )

        @classmethod
        def load(cls, spec: ModelSpec) -> tuple[nn.Module, str]:
            return nn.Identity(), ""

    with pytest.raises(ValueError, match="already registered"):
        BUILTIN_MODELS.register("efficientnet_lite0")(Other)
    assert not hasattr(Other, "name")  # refused before the class was touched
    assert isinstance(spec, ModelSpec) and BUILTIN_MODELS["efficientnet_lite0"].name == spec.name


def test_sidecars_are_found_only_in_the_folder_given(models_dir: Path) -> None:
    torch.save(_tiny_resnet(seed=2).state_dict(), models_dir / "tiny.pt")
    _sidecar(models_dir, "tiny", "tiny.pt")
    assert "tiny" in [spec.name for spec in list_models(models_dir)]
    assert "tiny" not in [spec.name for spec in list_models()]
    with pytest.raises(KeyError, match="unknown model 'tiny'; use one of efficientnet_lite0"):
        get_model("tiny")
    assert get_model("tiny", models_dir).spec.input_size == 64


@pytest.mark.slow
def test_embedded_model_loads_offline() -> None:
    loaded = get_model("efficientnet_lite0")
    assert loaded.spec.architecture == "tf_efficientnet_lite0"
    assert len(loaded.spec.class_names) == 1000 and len(loaded.weights_sha256) == 64
    assert get_model("efficientnet_lite0") is loaded


def test_broken_sidecar_is_skipped_with_a_warning(models_dir: Path) -> None:
    (models_dir / "broken.json").write_text("{oops")
    with pytest.warns(UserWarning, match="broken.json is not valid JSON"):
        names = [spec.name for spec in list_models(models_dir)]
    assert "broken" not in names and "efficientnet_lite0" in names
    with pytest.raises(ValueError, match="not valid JSON"):
        get_model("broken", models_dir)
    (models_dir / "broken.json").unlink()
    _sidecar(models_dir, "efficientnet_lite0", "x.pt")
    with pytest.warns(UserWarning, match="is taken"):
        list_models(models_dir)


def test_torchvision_weights_in_the_hub_cache_are_discovered(
    models_dir: Path, tmp_path: Path
) -> None:
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.manual_seed(3)
    reference = torchvision.models.squeezenet1_0().eval()
    torch.save(reference.state_dict(), hub / "checkpoints" / "squeezenet1_0-b66bff10.pth")
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        spec = next(s for s in list_models(models_dir) if s.name == "squeezenet1_0")
        loaded = get_model("squeezenet1_0", models_dir)
    finally:
        torch.hub.set_dir(previous)
    assert spec.source == "torchvision" and spec.input_size == 224
    assert spec.class_names[285] == "Egyptian cat" and spec.mean == models.IMAGENET_MEAN
    x = torch.randn(1, 3, 96, 80, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(loaded.module(x), reference(x), rtol=0, atol=0)
