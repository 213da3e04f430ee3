"""Graph nodes of a model (torch.fx), and extractors that return several nodes in one pass.

timm's wrappers around torchvision's ``feature_extraction`` are used for every model: they
know timm's untraceable leaf modules (``Conv2dSame``…) and behave exactly like torchvision's
on torchvision models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.models._features_fx import create_feature_extractor, get_graph_node_names
from torch import nn
from torch.fx import GraphModule

__all__ = ["node_names", "output_node", "extractor", "check_layers", "forward_nodes"]


def node_names(model: nn.Module) -> list[str]:
    """The graph node names of ``model`` in eval mode, in execution order."""
    _, eval_nodes = get_graph_node_names(model)
    return list(eval_nodes)


def output_node(model: nn.Module) -> str:
    """The name of the node that produces the model's output (the logits)."""
    return node_names(model)[-1]


def check_layers(model: nn.Module, layers: Sequence[str]) -> None:
    """Raise a ``KeyError`` naming valid layers when any of ``layers`` is not a graph node."""
    names = node_names(model)
    known = set(names)
    unknown = [layer for layer in layers if layer not in known]
    if unknown:
        shown = ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "")
        raise KeyError(f"unknown layer {unknown[0]!r}; use one of {shown}")


def extractor(model: nn.Module, nodes: Sequence[str]) -> nn.Module:
    """A module whose forward returns ``{node: output}`` for each requested node.

    Raises:
        KeyError: a node is not in the model's graph (the message lists valid ones).
    """
    check_layers(model, nodes)
    unique = list(dict.fromkeys(nodes))
    module: GraphModule = create_feature_extractor(model, return_nodes={n: n for n in unique})
    _without_inplace(module)
    return module


def _without_inplace(module: GraphModule) -> None:
    """Turn in-place operations into out-of-place ones.

    When several nodes are returned from one pass, an in-place op (``ReLU(inplace=True)``,
    ``x.relu_()``) after a returned node would overwrite that node's output before the caller
    sees it (torchvision's ResNet: ``layer1.0.add`` loses its negatives). Submodules are shared
    with the model, so their ``inplace`` flags are switched off for good: it costs memory only.
    """
    for sub in module.modules():
        if getattr(sub, "inplace", False) is True:
            setattr(sub, "inplace", False)  # noqa: B010  (nn.Module's typed __setattr__)
    for node in module.graph.nodes:
        if node.kwargs.get("inplace") is True:
            node.kwargs = {**node.kwargs, "inplace": False}
        if node.op == "call_method" and isinstance(node.target, str) \
                and node.target.endswith("_") and not node.target.startswith("_"):
            node.target = node.target[:-1]
    module.recompile()


def forward_nodes(
    model: nn.Module, x: torch.Tensor, nodes: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``x`` once and return the outputs of ``nodes``."""
    out: dict[str, torch.Tensor] = extractor(model, nodes)(x)
    return out
