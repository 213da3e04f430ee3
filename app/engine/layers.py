"""The layers of a model: graph nodes whose output is a 4-D feature map."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from app.engine.graph import forward_nodes, node_names
from app.engine.models import LoadedModel

__all__ = ["LayerInfo", "list_layers", "check_layer"]


@dataclass(frozen=True)
class LayerInfo:
    """A feature-map node and its output shape at the model's input size."""

    name: str
    channels: int
    height: int
    width: int


_CACHE: dict[tuple[str, str], list[LayerInfo]] = {}
_LOCK = threading.Lock()


def list_layers(model: LoadedModel) -> list[LayerInfo]:
    """Every graph node of ``model`` with a ``1×C×h×w`` output, in execution order (cached)."""
    key = (model.spec.name, model.weights_sha256)
    with _LOCK:
        if key in _CACHE:
            return list(_CACHE[key])
        names = node_names(model.module)
        size = model.spec.input_size
        x = torch.zeros(1, 3, size, size)
        with torch.inference_mode():
            outputs = forward_nodes(model.module, x, [n for n in names if n != "x"])
        found = [
            LayerInfo(name, int(out.shape[1]), int(out.shape[2]), int(out.shape[3]))
            for name, out in outputs.items()
            if isinstance(out, torch.Tensor) and out.dim() == 4
        ]
        _CACHE[key] = found
        return list(found)


def check_layer(model: LoadedModel, layer: str) -> LayerInfo:
    """The :class:`LayerInfo` of ``layer``.

    Raises:
        KeyError: not a feature-map layer of this model (the message lists valid ones).
    """
    layers = list_layers(model)
    for info in layers:
        if info.name == layer:
            return info
    names = [info.name for info in layers]
    shown = ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "")
    raise KeyError(f"unknown layer {layer!r} for model {model.spec.name!r}; use one of {shown}")
