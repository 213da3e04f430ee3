"""Heat-map methods on one layer's feature map: channel reductions and the CAM family.

Every method turns one image's feature map ``A`` (``C×h×w``, at the layer's own resolution)
into a raw ``h×w`` map; :mod:`app.engine.heatmaps` brings it to the image grid. Methods
register by name in :data:`METHODS` through :func:`register_method`, which refuses duplicate
names, so tests parametrize over the registry.

Definitions (``S`` the target logit, ``G = ∂S/∂A``, sums over ``c`` are over channels and
over ``ij`` over the ``h×w`` positions):

* ``mean``, ``l2``, ``max``, ``channel``: reductions over channels, no gradients.
* ``cam`` (Zhou et al. 2016): ``Σ_c W[target, c] A_c`` where ``W`` is the one ``Linear`` that
  follows global average pooling of this layer. No ReLU: the map keeps its sign, and
  ``mean_ij(cam) + b[target]`` equals the target logit. Only valid on that one layer.
* ``gradcam`` (Selvaraju et al. 2017): ``ReLU(Σ_c mean_ij(G_c) A_c)``. On a GAP+Linear head
  it equals ``ReLU(cam) / (h·w)``.
* ``gradcampp`` (Chattopadhay et al. 2018), the closed form with exponentiated scores as
  pytorch-grad-cam writes it: ``α = G² / (2G² + Σ_ij A · G³)`` (0 where ``G = 0``),
  ``w_c = Σ_ij α_c ReLU(G_c)``, map ``ReLU(Σ_c w_c A_c)``. The paper's ``exp(S)`` factor
  on ``∂Y/∂A`` is left out: it scales the whole map by one positive number.
* ``layercam`` (Jiang et al. 2021): ``ReLU(Σ_c ReLU(G_c) ⊙ A_c)``.
* ``scorecam`` (Wang et al. 2020, as the authors' code does it): each channel, upsampled to
  the input and min–max scaled to ``[0, 1]``, masks the input; its weight is the target's
  softmax probability on the masked input; map ``ReLU(Σ_c w_c A_c)``. Constant channels get
  no weight. Only the ``max_channels`` channels with the highest mean activation are used
  (default 64: one forward per channel, batched by ``batch_size``).
"""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import fx, nn

from app.engine.graph import TRACE_LOCK, Extractor, check_layers, extractor, node_names
from app.engine.registry import Registry

__all__ = [
    "METHODS",
    "CamOptions",
    "HeatMethod",
    "LayerRun",
    "Reduction",
    "cam_layers",
    "cam_map",
    "list_methods",
    "reduce_channels",
    "register_method",
]

Reduction = Literal["mean", "l2", "max", "channel"]

METHODS: Registry[type[HeatMethod]] = Registry("heat-map method")

_M = TypeVar("_M", bound="type[HeatMethod]")

# cam_map changes module-wide state (modes, flags) for the length of a call; two concurrent
# calls on one model could otherwise restore each other's temporary state.
_STATE_LOCK = threading.RLock()


def register_method(name: str) -> Callable[[_M], _M]:
    """Class decorator adding a :class:`HeatMethod` to :data:`METHODS` under ``name``.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def add(cls: _M) -> _M:
        METHODS.add(name, cls)  # refuses a duplicate before touching the class
        cls.name = name
        return cls

    return add


def list_methods() -> list[str]:
    """The registered method names, reductions first, in registration order."""
    return list(METHODS)


@dataclass(frozen=True)
class CamOptions:
    """Options some methods read.

    Attributes:
        channel: the channel the ``channel`` reduction shows.
        max_channels: Score-CAM uses this many channels, those of highest mean activation.
        batch_size: Score-CAM forwards this many masked inputs at a time.
    """

    channel: int | None = None
    max_channels: int = 64
    batch_size: int = 32


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
    """One heat-map method: :meth:`compute` turns a :class:`LayerRun` into an ``h×w`` map."""

    name: ClassVar[str]
    needs_target: ClassVar[bool] = True
    needs_gradients: ClassVar[bool] = False

    def __init__(self, options: CamOptions) -> None:
        self.options = options

    @abstractmethod
    def compute(self, run: LayerRun) -> torch.Tensor:
        """The raw ``h×w`` map (sign and scale as the method defines them)."""


def reduce_channels(
    fmap: torch.Tensor, how: Reduction, channel: int | None = None
) -> torch.Tensor:
    """Reduce a ``C×h×w`` feature map over its channels to ``h×w``.

    Args:
        fmap: the feature map, ``C×h×w``.
        how: ``mean``, ``l2`` (Euclidean norm of each position's C-vector), ``max`` or
            ``channel`` (one channel as it is).
        channel: the channel for ``how="channel"``.

    Returns:
        The ``h×w`` map, same dtype as ``fmap``.

    Raises:
        ValueError: ``fmap`` is not 3-D, ``how`` is unknown, or ``channel`` is missing or
            out of range.
    """
    if fmap.ndim != 3:
        raise ValueError(f"expected a C×h×w feature map, got shape {tuple(fmap.shape)}")
    if how == "mean":
        return fmap.mean(dim=0)
    if how == "l2":
        norm: torch.Tensor = torch.linalg.vector_norm(fmap, dim=0)
        return norm
    if how == "max":
        return fmap.amax(dim=0)
    if how == "channel":
        count = fmap.shape[0]
        if channel is None or not 0 <= channel < count:
            raise ValueError(
                f"method 'channel' needs channel between 0 and {count - 1}; got {channel}"
            )
        return fmap[channel]
    raise ValueError(f"unknown reduction {how!r}; use mean, l2, max or channel")


def cam_map(
    module: nn.Module,
    x: torch.Tensor,
    layer: str,
    method: str,
    target: int | None = None,
    *,
    options: CamOptions | None = None,
) -> tuple[torch.Tensor, int | None]:
    """Compute one heat-map method on one layer for one input.

    The layer's output and the logits come from one forward pass; gradients are taken with
    ``torch.autograd.grad`` with respect to the layer's output only. For the length of the
    call the model is put in eval mode, its parameters stop requiring gradients and its
    in-place activations run out of place (so the layer's returned output is the value it
    had, not one a later in-place op overwrote); all of it is restored afterwards, also when
    the call raises.

    Args:
        module: the model; its output must be ``1×K`` logits.
        x: the preprocessed input, ``1×3×H×W``.
        layer: a graph node whose output is a 4-D feature map.
        method: a name in :data:`METHODS`.
        target: the class to explain (CAM family); ``None`` takes the top prediction.
            Ignored by the channel reductions.
        options: options for ``channel`` and ``scorecam``.

    Returns:
        ``(map, target)``: the raw ``h×w`` map at the layer's resolution, detached, and the
        class explained (``None`` for channel reductions).

    Raises:
        KeyError: unknown method, or unknown layer (the message lists valid ones).
        ValueError: ``x`` is not ``1×3×H×W``, the layer's output is not 4-D, the target is
            out of range, or the method does not apply to this layer (``cam``).
    """
    METHODS.lookup(method)
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"expected one image as a 1×3×H×W input, got shape {tuple(x.shape)}")
    impl = METHODS[method](options or CamOptions())
    # tracing flips train/eval on the whole model; inside the context every submodule's own
    # mode is restored afterwards, mixed modes included
    with _STATE_LOCK, frozen_model(module):
        if layer not in _graph(module).names:
            check_layers(module, [layer])  # raises the KeyError that lists valid layers
        run = _forward(module, x, layer, impl, target)
        result = impl.compute(run)
    if result.shape != run.activations.shape[1:]:
        raise RuntimeError(f"method {method!r} returned {tuple(result.shape)}; this is a bug")
    return result.detach(), run.target


@contextmanager
def frozen_model(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, frozen parameters and out-of-place activations, restored on exit."""
    modes = [(m, m.training) for m in module.modules()]
    flags = [(p, p.requires_grad) for p in module.parameters()]
    # activations keep ``inplace`` as a plain attribute (nn.ReLU, timm's layers)
    inplace = [(m, v) for m in module.modules() if isinstance(v := vars(m).get("inplace"), bool)]
    try:
        module.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        for m, _ in inplace:
            vars(m)["inplace"] = False
        yield module
    finally:
        for m, was_training in modes:
            m.training = was_training
        for p, needed in flags:
            p.requires_grad_(needed)
        for m, value in inplace:
            vars(m)["inplace"] = value


def _forward(
    module: nn.Module, x: torch.Tensor, layer: str, impl: HeatMethod, target: int | None
) -> LayerRun:
    """One forward pass giving the layer's output (and logits, gradients when needed)."""
    if not impl.needs_target:
        with torch.inference_mode():
            fmap = _graph(module).run(x, (layer,))[layer]
        return LayerRun(module, x, layer, _one_map(fmap, layer))
    out = _graph(module).names[-1]
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        nodes = _graph(module).run(xg, (layer, out))
        fmap, logits = nodes[layer], nodes[out]
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
    return LayerRun(
        module, x, layer, activations.detach(), logits[0].detach(), chosen, gradients
    )


class _Graph:
    """A model's traced graph: node names, extractors and CAM layers, traced once per model.

    Tracing costs several forward passes' time, so it is kept per module object (weakly: it
    goes with the model). A model's graph is taken to be fixed once it is loaded.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = weakref.ref(module)
        self.names = node_names(module)
        self.extractors: dict[tuple[str, ...], Extractor] = {}
        self.cam: tuple[list[str], str | None] | None = None

    def run(self, x: torch.Tensor, nodes: tuple[str, ...]) -> dict[str, torch.Tensor]:
        if nodes not in self.extractors:
            module = self.module()
            assert module is not None
            self.extractors[nodes] = extractor(module, list(nodes))
        out: dict[str, torch.Tensor] = self.extractors[nodes](x)
        return out


_GRAPHS: weakref.WeakKeyDictionary[nn.Module, _Graph] = weakref.WeakKeyDictionary()


def _graph(module: nn.Module) -> _Graph:
    if module not in _GRAPHS:
        _GRAPHS[module] = _Graph(module)
    return _GRAPHS[module]


def _one_map(fmap: torch.Tensor, layer: str) -> torch.Tensor:
    if fmap.ndim != 4:
        raise ValueError(
            f"layer {layer!r} outputs shape {tuple(fmap.shape)}, not a 1×C×h×w feature map; "
            "pick a convolutional layer"
        )
    return fmap[0]


def _resolve_target(logits: torch.Tensor, target: int | None) -> int:
    classes = logits.shape[0]
    if target is None:
        return int(logits.argmax())
    if not 0 <= target < classes:
        raise ValueError(f"target {target} is out of range; the model has {classes} classes "
                         f"(0 to {classes - 1})")
    return int(target)


def _weighted(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """``Σ_c weights_c · activations_c`` for ``C`` weights and a ``C×h×w`` map."""
    return torch.einsum("c,chw->hw", weights, activations)


class _ReductionMethod(HeatMethod):
    needs_target = False
    how: ClassVar[Reduction]

    def compute(self, run: LayerRun) -> torch.Tensor:
        return reduce_channels(run.activations, self.how, self.options.channel)


@register_method("mean")
class _Mean(_ReductionMethod):
    how = "mean"


@register_method("l2")
class _L2(_ReductionMethod):
    how = "l2"


@register_method("max")
class _Max(_ReductionMethod):
    how = "max"


@register_method("channel")
class _Channel(_ReductionMethod):
    how = "channel"


@register_method("cam")
class _Cam(HeatMethod):
    def compute(self, run: LayerRun) -> torch.Tensor:
        linear = _cam_linear(run.module, run.layer)
        assert run.logits is not None and run.target is not None
        weight = linear.weight.to(run.activations.dtype)
        pooled = run.activations.mean(dim=(1, 2))
        expected = weight @ pooled
        if linear.bias is not None:
            expected = expected + linear.bias.to(expected.dtype)
        scale = float(run.logits.abs().max()) + 1.0
        if not torch.allclose(expected, run.logits, atol=1e-4 * scale, rtol=1e-4):
            raise ValueError(
                f"CAM needs the logits to be a Linear of the average of {run.layer!r}, and "
                "they are not on this model; use gradcam"
            )
        return _weighted(weight[run.target], run.activations)


@register_method("gradcam")
class _GradCam(HeatMethod):
    needs_gradients = True

    def compute(self, run: LayerRun) -> torch.Tensor:
        assert run.gradients is not None
        return F.relu(_weighted(run.gradients.mean(dim=(1, 2)), run.activations))


@register_method("gradcampp")
class _GradCamPlusPlus(HeatMethod):
    needs_gradients = True

    def compute(self, run: LayerRun) -> torch.Tensor:
        g, a = run.gradients, run.activations
        assert g is not None
        g2 = g.pow(2)
        denominator = 2 * g2 + a.sum(dim=(1, 2))[:, None, None] * g.pow(3)
        # where G = 0 the numerator is 0 too; 0/0 is defined as 0 there, as in the paper
        alpha = torch.where(g != 0, g2 / torch.where(denominator != 0, denominator, 1.0), 0.0)
        weights = (alpha * F.relu(g)).sum(dim=(1, 2))
        return F.relu(_weighted(weights, a))


@register_method("layercam")
class _LayerCam(HeatMethod):
    needs_gradients = True

    def compute(self, run: LayerRun) -> torch.Tensor:
        assert run.gradients is not None
        return F.relu((F.relu(run.gradients) * run.activations).sum(dim=0))


@register_method("scorecam")
class _ScoreCam(HeatMethod):
    def compute(self, run: LayerRun) -> torch.Tensor:
        a = run.activations
        assert run.target is not None
        keep = min(self.options.max_channels, a.shape[0])
        if keep < 1:
            raise ValueError("scorecam needs max_channels of at least 1")
        chosen = torch.topk(a.mean(dim=(1, 2)), keep).indices
        scores = torch.zeros(keep, dtype=a.dtype, device=a.device)
        step = max(1, self.options.batch_size)
        with torch.inference_mode():
            for start in range(0, keep, step):
                # masks one batch at a time: at native input sizes all of them would not fit
                masks = F.interpolate(a[chosen[start : start + step]][:, None],
                                      size=run.x.shape[-2:], mode="bilinear",
                                      align_corners=False)
                low = masks.amin(dim=(1, 2, 3), keepdim=True)
                high = masks.amax(dim=(1, 2, 3), keepdim=True)
                masks = (masks - low) / torch.where(high > low, high - low, 1.0)
                with TRACE_LOCK.forward():
                    logits = run.module(run.x * masks.to(run.x.dtype))
                probs = torch.softmax(logits, dim=1)
                # a constant channel masks nothing out: the paper gives it no weight
                weight = torch.where((high > low).flatten(), probs[:, run.target].to(a.dtype), 0)
                scores[start : start + step] = weight
        return F.relu(_weighted(scores, a[chosen]))


_PASSTHROUGH_MODULES = (nn.Flatten, nn.Dropout, nn.Identity)
_PASSTHROUGH_CALLS = {torch.flatten, F.dropout}
_PASSTHROUGH_METHODS = {"flatten", "view", "reshape", "squeeze", "contiguous"}


def cam_layers(module: nn.Module) -> list[str]:
    """The layers where ``cam`` works: outputs that feed global average pooling, then one Linear.

    Found on the traced graph: from the output back through one ``Linear``, then only
    flatten/dropout/identity/reshape steps, to an adaptive average pool to 1×1 (or a mean
    over the two spatial dimensions), whose input is the layer.
    """
    with _STATE_LOCK, frozen_model(module):
        return list(_cam_head(module)[0])


def _cam_head(module: nn.Module) -> tuple[list[str], str | None]:
    """(CAM layers, the head Linear's module name), found once per model."""
    info = _graph(module)
    if info.cam is None:
        info.cam = _find_cam_head(module, info.names)
    return info.cam


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


def _cam_linear(module: nn.Module, layer: str) -> nn.Linear:
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
