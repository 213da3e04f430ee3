"""Counting Score-CAM's masked forward passes (test helper)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from app.engine.graph import traced


@contextmanager
def masked_passes(net: nn.Module) -> Iterator[list[int]]:
    """Batch sizes of the passes through ``net``'s folded logits extractor, which only the
    masked inputs take (the first pass runs the layer's own extractor)."""
    graph = traced(net)
    module = graph.extractor((graph.output,), folded=True).graph_module
    sizes: list[int] = []
    handle = module.register_forward_pre_hook(lambda _m, args: sizes.append(int(args[0].shape[0])))
    try:
        yield sizes
    finally:
        handle.remove()
