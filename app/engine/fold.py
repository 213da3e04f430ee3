"""Batch norms folded into the convolutions that feed them, for passes that do not train.

In eval mode a batch norm is an affine map per channel, ``γ(x − μ)/√(σ² + ε) + β``; after
a convolution it folds into the convolution's weight and bias, and the pass skips one read
and one write of every activation (TorchScript's ``freeze``, ONNX Runtime and OpenVINO do
the same). EfficientNet-Lite0, 2 cores: a forward of batch 16 at 224² 1.16–1.52× faster
across runs (``bench_extraction`` prints it), a Grad-CAM's forward and backward 1.1× one
bare unfolded forward (``bench_heatmaps``); maps and logits as close to a float64 pass as
the unfolded model's (float32 rounding of the folded weights; ``tests/engine/test_fold.py``).

Only a traced extractor's own copy of the graph changes: the folded convolutions are new
modules (their parameters frozen) put in the extractor's containers; the model keeps its
modules, so training and hooks on the model see it as it is (a hook meant for a folded
pass goes on the trace's module: :meth:`app.engine.graph.Extractor.module`). A pair is
folded only when the convolution's sole user is the norm, so a returned convolution keeps
its own output. Folded weights follow the model's: each pass first compares the source
tensors' identities and in-place versions (dictionary reads, no ``nn.Module`` lookups).
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from timm.layers.conv2d_same import Conv2dSame
from timm.layers.norm_act import BatchNormAct2d
from torch import fx, nn
from torch.fx import GraphModule

__all__ = ["Folding", "foldable_pairs"]

# Classes whose forward is exactly (padding then) conv2d with self.weight and self.bias, and
# norms whose forward is batch_norm then (for timm's) self.drop, self.act. Subclasses may
# do more (weight standardisation, frozen statistics…), so classes are matched exactly.
_CONVS: tuple[type[nn.Module], ...] = (nn.Conv2d, Conv2dSame)
_NORMS: tuple[type[nn.Module], ...] = (nn.BatchNorm2d, BatchNormAct2d)

Pair = tuple[str, str]  # (convolution, norm) module names


def foldable_pairs(graph_module: GraphModule) -> list[Pair]:
    """``(conv, norm)`` module calls of the graph where the norm (eval mode, with running
    statistics) takes only the convolution's output and is its only user."""
    modules = dict(graph_module.named_modules())
    pairs = []
    for node in graph_module.graph.nodes:
        norm = modules.get(node.target) if node.op == "call_module" else None
        if type(norm) not in _NORMS or len(node.args) != 1 or node.kwargs:
            continue
        assert isinstance(norm, nn.BatchNorm2d)
        if norm.training or norm.running_mean is None or norm.running_var is None:
            continue
        source = node.args[0]
        if not isinstance(source, fx.Node) or source.op != "call_module":
            continue
        if type(modules.get(source.target)) in _CONVS and len(source.users) == 1:
            pairs.append((str(source.target), str(node.target)))
    return pairs


def _sources(conv: nn.Module, norm: nn.Module) -> tuple[torch.Tensor | None, ...]:
    """The tensors a folded pair is made of, read from the modules' own tables (a check
    runs before every pass: ``module.weight`` goes through ``nn.Module.__getattr__``)."""
    conv_params, norm_params, norm_buffers = conv._parameters, norm._parameters, norm._buffers
    return (
        conv_params.get("weight"),
        conv_params.get("bias"),
        norm_params.get("weight"),
        norm_params.get("bias"),
        norm_buffers.get("running_mean"),
        norm_buffers.get("running_var"),
    )


def _stamp(sources: tuple[torch.Tensor | None, ...], eps: float) -> tuple[object, ...]:
    """Which tensors, at which in-place version (bumped by ``copy_``, optimiser steps,
    ``load_state_dict``), and ε. Ids stay unique while the tensors are held."""
    return (eps, *(None if t is None else (id(t), t._version) for t in sources))


def _folded(conv: nn.Module, norm: nn.Module) -> tuple[nn.Module, nn.Module]:
    """A new convolution with the norm folded in (computed in float64), and what is left
    of the norm: its dropout and activation for timm's ``BatchNormAct2d``, else nothing."""
    assert isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
    assert norm.running_mean is not None and norm.running_var is not None
    out = copy.deepcopy(conv)
    with torch.no_grad():
        mean, var = norm.running_mean.double(), norm.running_var.double()
        gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(mean)
        beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(mean)
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
        scale = gamma / torch.sqrt(var + norm.eps)
        weight = conv.weight.double() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
        dtype = conv.weight.dtype
        out.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
        out.bias = nn.Parameter((beta + (bias - mean) * scale).to(dtype), requires_grad=False)
    rest: nn.Module = nn.Identity()
    if isinstance(norm, BatchNormAct2d):
        rest = nn.Sequential(norm.drop, norm.act)
    return out, rest


@dataclass(frozen=True)
class _Made:
    stamp: tuple[object, ...]
    sources: tuple[torch.Tensor | None, ...]  # held: the stamp's ids stay theirs
    conv: nn.Module
    rest: nn.Module


@dataclass(frozen=True)
class _Slot:
    """A foldable pair as one trace sees it: the model's modules, the trace's containers."""

    pair: Pair
    conv: nn.Module
    norm: nn.Module
    places: tuple[tuple[nn.Module, str], tuple[nn.Module, str]]  # (container, name) each


class Folding:
    """The folded modules of one model, shared by its extractors, remade when the model's
    weights change.

    Args:
        model: the model (held weakly; its modules are read, never changed).
    """

    def __init__(self, model: nn.Module) -> None:
        self._model = weakref.ref(model)
        self._lock = threading.Lock()
        self._made: dict[Pair, _Made] = {}

    def _module(self) -> nn.Module:
        model = self._model()
        if model is None:  # only reachable through an extractor kept past its model
            raise RuntimeError("the folded model no longer exists")
        return model

    def _current(self, slot: _Slot) -> _Made:
        assert isinstance(slot.norm, nn.BatchNorm2d)
        stamp = _stamp(_sources(slot.conv, slot.norm), slot.norm.eps)
        made = self._made.get(slot.pair)
        if made is not None and made.stamp == stamp:
            return made
        with self._lock:
            made = self._made.get(slot.pair)
            if made is None or made.stamp != stamp:
                sources = _sources(slot.conv, slot.norm)
                made = _Made(
                    _stamp(sources, slot.norm.eps), sources, *_folded(slot.conv, slot.norm)
                )
                self._made[slot.pair] = made
            return made

    def install(self, graph_module: GraphModule) -> Callable[[], None]:
        """Put folded modules in ``graph_module`` (a trace of the model) in place of each
        foldable pair; return the check that brings them up to date before a pass
        (a few µs a pair when nothing changed)."""
        model = self._module()
        slots = []
        for pair in foldable_pairs(graph_module):
            places = []
            for name in pair:
                parent, _, leaf = name.rpartition(".")
                container = graph_module.get_submodule(parent)
                places.append((container, leaf))
                if container is model.get_submodule(parent):
                    break  # the model's own container: replacing there would change the model
            else:
                conv, norm = (model.get_submodule(name) for name in pair)
                slots.append(_Slot(pair, conv, norm, (places[0], places[1])))

        def refresh() -> None:
            for slot in slots:
                made = self._current(slot)
                for (container, leaf), module in zip(
                    slot.places, (made.conv, made.rest), strict=True
                ):
                    if container._modules.get(leaf) is not module:
                        setattr(container, leaf, module)

        refresh()
        return refresh
