"""The classifier-head search: which layer feeds global average pooling, then one Linear.

Found on the traced graph, once per model (kept by :func:`app.engine.graph.traced`): from the
output back through one ``Linear``, then only flatten/dropout/identity/reshape steps, to an
adaptive average pool to 1×1 (or a mean over the two spatial dimensions), whose input is
the layer. CAM is defined only there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from app.engine.cams.base import STATE_LOCK, frozen_model
from app.engine.graph import TRACE_LOCK, traced

__all__ = ["cam_layers", "cam_linear"]

_PASSTHROUGH_MODULES = (nn.Flatten, nn.Dropout, nn.Identity)
_PASSTHROUGH_CALLS = {torch.flatten, F.dropout}
_PASSTHROUGH_METHODS = {"flatten", "view", "reshape", "squeeze", "contiguous"}


def cam_layers(module: nn.Module) -> list[str]:
    """The layers where ``cam`` works: outputs that feed global average pooling, then one Linear."""
    with STATE_LOCK, frozen_model(module):
        return list(_cam_head(module)[0])


def cam_linear(module: nn.Module, layer: str) -> nn.Linear:
    """The head ``Linear`` that CAM weighs ``layer``'s channels with.

    Raises:
        ValueError: ``layer`` does not feed global average pooling and then one Linear
            (the message names the layer that does, if any).
    """
    layers, head = _cam_head(module)
    if layer not in layers or head is None:
        where = f"use layer {layers[0]!r}" if layers else "this model has no such layer"
        raise ValueError(
            f"CAM needs the layer whose output feeds global average pooling and then one "
            f"Linear; {where}, or use gradcam, which works on every layer"
        )
    linear = module.get_submodule(head)
    assert isinstance(linear, nn.Linear)
    return linear


def _cam_head(module: nn.Module) -> tuple[list[str], str | None]:
    """(CAM layers, the head Linear's module name), found once per model."""
    graph = traced(module)
    return graph.remember("cam_head", lambda: _find_cam_head(module, graph.names))


def _find_cam_head(module: nn.Module, known: list[str]) -> tuple[list[str], str | None]:
    graph, names = _traced(module, set(known))
    outputs = [n for n in graph.nodes if n.op == "output"]
    if not outputs or not isinstance(outputs[0].args[0], fx.Node):
        return [], None
    last: fx.Node = outputs[0].args[0]
    if not (last.op == "call_module" and isinstance(_submodule(module, last), nn.Linear)):
        return [], None
    node = _single_input(last)
    while node is not None and _is_passthrough(module, node):
        node = _single_input(node)
    if node is None or not _is_global_average(module, node):
        return [], None
    source = _single_input(node)
    if source is None or source not in names:
        return [], None
    return [names[source]], str(last.target)


def _traced(module: nn.Module, known: set[str]) -> tuple[fx.Graph, dict[fx.Node, str]]:
    """The eval-mode graph with each node's qualified name, traced as ``graph`` traces it."""
    from timm.layers import _fx as timm_fx
    from torchvision.models.feature_extraction import NodePathTracer, _set_default_tracer_kwargs

    # the same tracer settings as timm's get_graph_node_names, so node names agree with graph.py
    timm_kwargs = {
        "leaf_modules": list(timm_fx._leaf_modules),
        "autowrap_functions": list(timm_fx._autowrap_functions),
    }
    tracer = NodePathTracer(**_set_default_tracer_kwargs(timm_kwargs))
    was_training = module.training
    try:
        with TRACE_LOCK:
            graph = tracer.trace(module.eval())
    finally:
        module.train(was_training)
    names: dict[fx.Node, str] = dict(tracer.node_to_qualname)
    return graph, {n: q for n, q in names.items() if q in known}


def _submodule(module: nn.Module, node: fx.Node) -> nn.Module | None:
    if node.op != "call_module" or not isinstance(node.target, str):
        return None
    return module.get_submodule(node.target)


def _single_input(node: fx.Node) -> fx.Node | None:
    inputs = [a for a in node.args if isinstance(a, fx.Node)]
    return inputs[0] if len(inputs) == 1 else None


def _is_passthrough(module: nn.Module, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(_submodule(module, node), _PASSTHROUGH_MODULES)
    if node.op == "call_function":
        return node.target in _PASSTHROUGH_CALLS
    if node.op == "call_method":
        return node.target in _PASSTHROUGH_METHODS
    return False


def _is_global_average(module: nn.Module, node: fx.Node) -> bool:
    if node.op == "call_module":
        sub = _submodule(module, node)
        return isinstance(sub, nn.AdaptiveAvgPool2d) and sub.output_size in (1, (1, 1))
    if node.op == "call_function" and node.target is F.adaptive_avg_pool2d:
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        return size in (1, (1, 1))
    if node.op in ("call_method", "call_function") and node.target in ("mean", torch.mean):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        return isinstance(dims, tuple | list) and sorted(int(d) % 4 for d in dims) == [2, 3]
    return False
