"""Graph nodes of a model (torch.fx), and extractors that return several nodes in one pass.

timm's wrappers around torchvision's ``feature_extraction`` are used for every model: they
know timm's untraceable leaf modules (``Conv2dSame``…) and behave exactly like torchvision's
on torchvision models.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from timm.models._features_fx import create_feature_extractor, get_graph_node_names
from torch import nn
from torch.fx import GraphModule

__all__ = [
    "TRACE_LOCK", "Extractor", "node_names", "output_node", "extractor", "check_layers",
    "forward_nodes",
]


class _TraceLock:
    """Tracing is exclusive; forward passes are shared.

    While torch.fx traces, it patches ``nn.Module.__call__`` and module-level functions for
    the whole process: a forward pass or another trace running meanwhile in another thread
    goes through those patches and fails ("module is not installed as a submodule").
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._tracing = False
        self._tracer: int | None = None

    def __enter__(self) -> None:  # exclusive, re-entrant for the tracing thread
        with self._cond:
            me = threading.get_ident()
            if self._tracer == me:
                raise RuntimeError("nested trace")
            self._cond.wait_for(lambda: not self._tracing and self._running == 0)
            self._tracing, self._tracer = True, me

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._tracing, self._tracer = False, None
            self._cond.notify_all()

    @contextmanager
    def forward(self) -> Iterator[None]:
        """Hold while running a model's forward pass (shared with other forward passes)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._tracing)
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()


TRACE_LOCK = _TraceLock()


class Extractor:
    """Returns ``{node: output}``; its forward passes never overlap a trace.

    A plain callable, not an ``nn.Module``: the lock must be taken before
    ``nn.Module.__call__``, which is what a trace patches.
    """

    def __init__(self, graph_module: GraphModule) -> None:
        self.graph_module = graph_module.eval()

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with TRACE_LOCK.forward():
            out: dict[str, torch.Tensor] = self.graph_module(x)
        return out


def node_names(model: nn.Module) -> list[str]:
    """The graph node names of ``model`` in eval mode, in execution order."""
    with TRACE_LOCK:
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


def extractor(model: nn.Module, nodes: Sequence[str]) -> Extractor:
    """A module whose forward returns ``{node: output}`` for each requested node.

    Raises:
        KeyError: a node is not in the model's graph (the message lists valid ones).
    """
    check_layers(model, nodes)
    unique = list(dict.fromkeys(nodes))
    with TRACE_LOCK:
        module: GraphModule = create_feature_extractor(model, return_nodes={n: n for n in unique})
    _without_inplace(module)
    return Extractor(module)


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
    return extractor(model, nodes)(x)
