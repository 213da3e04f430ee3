"""The pipeline every heat-map method shares: one forward pass, then the method's map.

:func:`cam_map` checks the request, puts the model in a temporary state (:func:`frozen_model`),
runs one forward pass that gives the layer's output (and the logits and gradients when the
method needs them) as a :class:`LayerRun`, and hands it to the method's
:meth:`HeatMethod.compute`, which returns the raw ``h×w`` map. Methods register by name in
:data:`METHODS` with ``@METHODS.register(name)``, which refuses duplicate names, so tests
parametrize over the registry. One file per family sits beside this one.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from app.engine.graph import Extractor, TracedModel, traced
from app.engine.measures.base import parse_options
from app.engine.registry import Registry

__all__ = [
    "METHODS",
    "CamOptions",
    "Cancelled",
    "HeatMethod",
    "LayerRun",
    "MethodOptions",
    "Progress",
    "cam_map",
    "check_target",
    "frozen_model",
    "list_methods",
    "method_options",
    "weighted",
]

METHODS: Registry[type[HeatMethod]] = Registry("heat-map method")

Cancelled = Callable[[], bool]
"""Asked between units of long work; ``True`` stops it with ``InterruptedError``."""

Progress = Callable[[float, str], None]
"""Told ``(fraction of the call done, 0..1, what runs now)`` at each step of a call."""

# cam_map changes module-wide state (modes, flags) for the length of a call; two concurrent
# calls on one model could otherwise restore each other's temporary state.
STATE_LOCK = threading.RLock()


def list_methods() -> list[str]:
    """The registered method names, reductions first, in registration order."""
    return list(METHODS)


class MethodOptions(BaseModel):
    """The options a heat-map method declares (types, bounds, defaults); unknown keys are
    refused. A method without options keeps this empty model."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def method_options(method: str, options: Mapping[str, Any]) -> MethodOptions:
    """Validate ``options`` against the method's declared :attr:`HeatMethod.Options`.

    Raises:
        KeyError: an unknown method (the message lists the known ones).
        ValueError: unknown options or values out of bounds (the message lists the known
            options with their types, bounds and defaults).
    """
    kind = METHODS.lookup(method)
    return parse_options(f"heat-map method {method!r}", kind.Options, options)


@dataclass(frozen=True)
class CamOptions:
    """Options some methods read.

    Attributes:
        channel: the channel the ``channel`` reduction shows.
        max_channels: Score-CAM uses this many channels, those of highest mean activation
            (one forward pass each: this bounds its time).
        batch_size: Score-CAM forwards at most this many masked inputs at a time. The
            default, 8, is the fastest on a CPU: larger batches outgrow the caches (at
            224×224 on EfficientNet-Lite0, 32 a batch costs about 1.3× the time of 8).
        max_batch_pixels: and at most this many input pixels per forward pass (batch ×
            height × width; at least one input): this bounds its memory at any input size.
            The default is 32 inputs at 224×224.

    Raises:
        ValueError: a count below 1.
    """

    channel: int | None = None
    max_channels: int = 64
    batch_size: int = 8
    max_batch_pixels: int = 32 * 224 * 224

    def __post_init__(self) -> None:
        for name in ("max_channels", "batch_size", "max_batch_pixels"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")


@dataclass(frozen=True)
class LayerRun:
    """What one forward pass gave a method: the layer's map, and the logits when needed.

    Attributes:
        module: the model (eval mode, frozen parameters for the length of the call).
        x: the input, ``1×3×H×W``.
        layer: the graph node name.
        activations: ``C×h×w``, detached.
        logits: ``K`` logits, detached; ``None`` for methods without a target.
        target: the class explained; ``None`` for methods without a target.
        gradients: ``∂logits[target]/∂activations``, ``C×h×w``; ``None`` unless needed.
    """

    module: nn.Module
    x: torch.Tensor
    layer: str
    activations: torch.Tensor
    logits: torch.Tensor | None = None
    target: int | None = None
    gradients: torch.Tensor | None = None


class HeatMethod(ABC):
    """One heat-map method: :meth:`compute` turns a :class:`LayerRun` into an ``h×w`` map.

    Args:
        options: the options of this call.
        cancelled: methods with long loops (Score-CAM) ask it between units of work.
        progress: methods with long loops tell it each unit of work (:meth:`step`).
    """

    name: ClassVar[str]
    needs_target: ClassVar[bool] = True
    needs_gradients: ClassVar[bool] = False
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    """The options a caller may set (see :func:`method_options`)."""
    forward_share: ClassVar[float] = 0.9
    """The share of a call's time its first forward (and backward) pass takes: what
    progress says once it is done. Score-CAM's own batches take nearly all of its time."""

    def __init__(
        self,
        options: CamOptions,
        cancelled: Cancelled | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.options = options
        self.cancelled = cancelled
        self.progress = progress

    @abstractmethod
    def compute(self, run: LayerRun) -> torch.Tensor:
        """The raw ``h×w`` map (sign and scale as the method defines them)."""

    def stop_if_cancelled(self) -> None:
        """Raise ``InterruptedError("cancelled")`` when the caller has cancelled."""
        if self.cancelled is not None and self.cancelled():
            raise InterruptedError("cancelled")

    def step(self, fraction: float, message: str) -> None:
        """Tell the caller how far the call is (``fraction`` of it, 0..1) and what runs."""
        if self.progress is not None:
            self.progress(fraction, message)


def cam_map(
    module: nn.Module,
    x: torch.Tensor,
    layer: str,
    method: str,
    target: int | None = None,
    *,
    options: CamOptions | None = None,
    cancelled: Cancelled | None = None,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, int | None]:
    """Compute one heat-map method on one layer for one input.

    The layer's output and the logits come from one forward pass; gradients are taken with
    ``torch.autograd.grad`` with respect to the layer's output only. For the length of the
    call the model is put in eval mode and its parameters stop requiring gradients, restored
    afterwards, also when the call raises. Its in-place activations run out of place from the
    first pass on (the layer's returned output is the value it had, not one a later in-place
    op overwrote; :func:`app.engine.graph.extractor`).

    Args:
        module: the model; its output must be ``1×K`` logits.
        x: the preprocessed input, ``1×3×H×W``.
        layer: a graph node whose output is a 4-D feature map.
        method: a name in :data:`METHODS`.
        target: the class to explain (CAM family); ``None`` takes the top prediction.
            Ignored by the channel reductions.
        options: options for ``channel`` and ``scorecam``.
        cancelled: asked between Score-CAM's batches; ``True`` stops the call.
        progress: told ``(fraction, message)`` before the forward pass (0), after it
            (with the backward pass when the method takes gradients), before each of
            Score-CAM's batches (``batch k of K``) and when the map is made (1).

    Returns:
        ``(map, target)``: the raw ``h×w`` map at the layer's resolution, detached, and the
        class explained (``None`` for channel reductions).

    Raises:
        KeyError: unknown method, or unknown layer (the message lists valid ones).
        ValueError: ``x`` is not ``1×3×H×W``, the layer's output is not 4-D, the target is
            out of range, or the method does not apply to this layer (``cam``).
        InterruptedError: ``cancelled`` returned ``True``.
    """
    kind = METHODS.lookup(method)
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"expected one image as a 1×3×H×W input, got shape {tuple(x.shape)}")
    impl = kind(options or CamOptions(), cancelled, progress)
    # tracing flips train/eval on the whole model; inside the context every submodule's own
    # mode is restored afterwards, mixed modes included
    with STATE_LOCK, frozen_model(module):
        traced(module).check([layer])
        impl.step(0.0, "forward and backward pass" if impl.needs_gradients else "forward pass")
        run = _forward(module, x, layer, impl, target)
        impl.step(impl.forward_share, f"{method} map")
        result = impl.compute(run)
        impl.step(1.0, f"{method} map done")
    if result.shape != run.activations.shape[1:]:
        raise RuntimeError(f"method {method!r} returned {tuple(result.shape)}; this is a bug")
    return result.detach(), run.target


@contextmanager
def frozen_model(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters, restored on exit.

    In-place activations are left alone: the extractors run them out of place themselves
    (:func:`app.engine.graph.extractor`), and switching them back on here on exit would
    switch them on under another thread's extraction pass, which then overwrites a returned
    node's output.
    """
    # Only what differs is set and restored: ``nn.Module.__setattr__`` is slow enough that
    # setting all 273 modules' modes twice cost a millisecond a call on EfficientNet-Lite0.
    training = [m for m in module.modules() if m.training]
    needing = [p for p in module.parameters() if p.requires_grad]
    try:
        for m in training:
            m.training = False
        for p in needing:
            p.requires_grad_(False)
        yield module
    finally:
        for m in training:
            m.training = True
        for p in needing:
            p.requires_grad_(True)


def weighted(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """``Σ_c weights_c · activations_c`` for ``C`` weights and a ``C×h×w`` map."""
    return torch.einsum("c,chw->hw", weights, activations)


def _forward(
    module: nn.Module, x: torch.Tensor, layer: str, impl: HeatMethod, target: int | None
) -> LayerRun:
    """One forward pass giving the layer's output (and logits, gradients when needed)."""
    graph = traced(module)
    # Batch norms folded (app.engine.fold): the same maps and gradients to float32 rounding;
    # the layer's hook goes on the trace's own module at the layer.
    if not impl.needs_target:
        with torch.inference_mode():
            fmap = graph.extractor((layer,), folded=True)(x)[layer]
        return LayerRun(module, x, layer, _one_map(fmap, layer))
    run = graph.extractor((layer, graph.output), folded=True)
    # No autograd graph unless gradients are taken: at native sizes it costs gigabytes. And
    # only from the layer on when the layer is a module call (the usual case): ∂S/∂A never
    # needs the graph upstream of A, whose recording was a fifth of a Grad-CAM's forward.
    from_layer = impl.needs_gradients and _is_module_call(graph, run, layer)
    mode: AbstractContextManager[object]
    if from_layer:
        mode = _gradients_from(run.module(layer))
    elif impl.needs_gradients:
        mode = torch.enable_grad()
    else:
        mode = torch.inference_mode()
    with mode:
        xg = x.detach().clone().requires_grad_(impl.needs_gradients and not from_layer)
        nodes = run(xg)
        fmap, logits = nodes[layer], nodes[graph.output]
        activations = _one_map(fmap, layer)
        if logits.ndim != 2 or logits.shape[0] != 1:
            raise ValueError(
                f"the model's output has shape {tuple(logits.shape)}; the CAM family needs "
                "1×K class logits"
            )
        chosen = _resolve_target(logits[0], target)
        gradients = None
        if impl.needs_gradients:
            (grad,) = torch.autograd.grad(logits[0, chosen], fmap)
            gradients = grad[0].detach()
    return LayerRun(module, x, layer, activations.detach(), logits[0].detach(), chosen, gradients)


def _is_module_call(graph: TracedModel, run: Extractor, layer: str) -> bool:
    """Whether graph node ``layer`` of ``run`` (a trace returning it) is a call of the
    submodule of that name: its first one, since a module called again gives nodes
    ``layer_1``…, which are no submodule's name."""

    def called() -> bool:
        nodes = run.graph_module.graph.nodes
        return any(n.op == "call_module" and n.target == layer for n in nodes)

    return graph.remember(f"module call {layer}", called)


@contextmanager
def _gradients_from(layer: nn.Module) -> Iterator[None]:
    """Gradients off until ``layer`` first answers in this thread, then on, its output made
    a fresh leaf (cloned, so that out-of-place ops after it need no special case).

    The model is shared: the hook leaves other threads' passes alone, and the grad mode it
    turns on is this thread's own, restored on exit.
    """
    owner, fired = threading.get_ident(), False

    def hook(_module: nn.Module, _inputs: object, output: object) -> torch.Tensor | None:
        nonlocal fired
        if fired or threading.get_ident() != owner or not isinstance(output, torch.Tensor):
            return None
        fired = True
        torch.set_grad_enabled(True)
        return output.detach().requires_grad_(True).clone()

    was_enabled = torch.is_grad_enabled()
    handle = layer.register_forward_hook(hook)
    torch.set_grad_enabled(False)
    try:
        yield
    finally:
        handle.remove()
        torch.set_grad_enabled(was_enabled)


def _one_map(fmap: torch.Tensor, layer: str) -> torch.Tensor:
    if fmap.ndim != 4:
        raise ValueError(
            f"layer {layer!r} outputs shape {tuple(fmap.shape)}, not a 1×C×h×w feature map; "
            "pick a convolutional layer"
        )
    return fmap[0]


def check_target(target: int, classes: int) -> None:
    """Raise a ``ValueError`` saying the valid range when ``target`` is not a class index."""
    if not 0 <= target < classes:
        raise ValueError(
            f"target {target} is out of range; the model has {classes} classes (0 to {classes - 1})"
        )


def _resolve_target(logits: torch.Tensor, target: int | None) -> int:
    if target is None:
        return int(logits.argmax())
    check_target(target, logits.shape[0])
    return int(target)
