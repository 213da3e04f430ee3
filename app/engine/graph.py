"""Graph nodes of a model (torch.fx), and extractors that return several nodes in one pass.

timm's wrappers around torchvision's ``feature_extraction`` are used for every model: they
know timm's untraceable leaf modules (``Conv2dSame``…) and behave exactly like torchvision's
on torchvision models.

Tracing costs several forward passes' time, so what is traced is kept once per model object
(:func:`traced`, weakly: it goes with the model): its node names, its extractors (the last
:data:`MAX_EXTRACTORS` node sets) and facts derived from the graph (the CAM head). A model's
graph is taken to be fixed once it is loaded; its weights may change.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar, cast

import torch
from timm.models._features_fx import create_feature_extractor, get_graph_node_names
from torch import nn
from torch.fx import GraphModule

from app.engine.fold import Folding
from app.lru import LRU

__all__ = [
    "MAX_EXTRACTORS",
    "TRACE_LOCK",
    "Extractor",
    "TracedModel",
    "check_layers",
    "extractor",
    "forward_nodes",
    "node_names",
    "output_node",
    "traced",
]

MAX_EXTRACTORS = 32
"""Extractors kept per model (one per distinct set of returned nodes)."""

T = TypeVar("T")


class _TraceLock:
    """Tracing is exclusive; every other use of a model is shared.

    While torch.fx traces, it patches ``nn.Module.__call__`` and ``nn.Module.__getattr__``
    (and module-level functions) for the whole process. Meanwhile, in any other thread, a
    call of any module goes into the trace (it fails, "module is not installed as a
    submodule", or adds nodes to the graph being traced), and reading a parameter of the
    traced model by attribute (``conv.weight``) gives a ``Proxy`` instead of the tensor.
    So every module call and every attribute read of a model's parameters holds
    :meth:`shared`; a trace waits until none is held and holds the lock alone. A waiting
    trace goes first: new shared uses wait behind it (a thread already holding one goes
    on), so back-to-back extraction batches cannot keep a heat map's trace waiting. A
    thread that holds one side and asks for the other gets a ``RuntimeError`` (waiting
    would never end).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: dict[int, int] = {}  # thread id → how many shared holds
        self._tracer: int | None = None
        self._waiting = 0  # traces waiting for the shared holds to end

    def __enter__(self) -> None:  # exclusive
        me = threading.get_ident()
        with self._cond:
            if self._tracer == me:
                raise RuntimeError("a trace inside a trace")
            if me in self._held:
                raise RuntimeError("a trace inside a shared use of a model (a forward pass)")
            self._waiting += 1
            try:
                self._cond.wait_for(lambda: self._tracer is None and not self._held)
            finally:
                self._waiting -= 1
            self._tracer = me

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._tracer = None
            self._cond.notify_all()

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold while calling a module or reading a model's parameters (re-entrant, shared
        with other threads' uses; waits while a trace runs)."""
        me = threading.get_ident()
        with self._cond:
            if self._tracer == me:
                raise RuntimeError("a use of a model inside a trace")
            if me not in self._held:
                self._cond.wait_for(lambda: self._tracer is None and not self._waiting)
            self._held[me] = self._held.get(me, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                left = self._held.pop(me) - 1
                if left:
                    self._held[me] = left
                self._cond.notify_all()


TRACE_LOCK = _TraceLock()


class Extractor:
    """Returns ``{node: output}``; its forward passes never overlap a trace.

    A plain callable, not an ``nn.Module``: the lock must be taken before
    ``nn.Module.__call__``, which is what a trace patches.

    Args:
        graph_module: the traced feature extractor.
        activations: its submodules with an ``inplace`` flag; the flag is switched off
            before every pass, since the submodules are shared with the model and whoever
            else uses the model may have switched it back on.
        before: called before every pass (brings folded batch norms up to date).
    """

    def __init__(
        self,
        graph_module: GraphModule,
        activations: Sequence[nn.Module] = (),
        before: Callable[[], None] | None = None,
    ) -> None:
        self.graph_module = graph_module.eval()
        self._activations = list(activations)
        self._before = before

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for sub in self._activations:
            vars(sub)["inplace"] = False  # nn.Module keeps the flag as a plain attribute
        with TRACE_LOCK.shared():
            if self._before is not None:
                self._before()
            out: dict[str, torch.Tensor] = self.graph_module(x)
        return out

    def module(self, name: str) -> nn.Module:
        """The submodule ``name`` as this extractor's passes call it (a folded trace's own
        module where a batch norm was folded): the one to hook."""
        with TRACE_LOCK.shared():
            if self._before is not None:
                self._before()
            return self.graph_module.get_submodule(name)


class TracedModel:
    """What is traced once per model: node names, extractors and derived facts.

    Get one with :func:`traced`; it holds the model only weakly.
    """

    def __init__(self, module: nn.Module) -> None:
        self._module = weakref.ref(module)
        with TRACE_LOCK:
            _, eval_nodes = get_graph_node_names(module)
        self.names: list[str] = list(eval_nodes)
        """The graph node names in eval mode, in execution order."""
        self._known = set(self.names)
        self._extractors: LRU[tuple[bool, tuple[str, ...]], Extractor] = LRU(MAX_EXTRACTORS)
        self._folding = Folding(module)
        self._facts: dict[str, object] = {}
        self._lock = threading.RLock()  # re-entrant: a fact may need an extractor

    @property
    def output(self) -> str:
        """The node that produces the model's output (the logits)."""
        return self.names[-1]

    def check(self, layers: Sequence[str]) -> None:
        """Raise a ``KeyError`` naming valid layers when any of ``layers`` is not a node."""
        unknown = [layer for layer in layers if layer not in self._known]
        if unknown:
            names = self.names
            shown = ", ".join(names[:12]) + (
                f", … ({len(names)} in all)" if len(names) > 12 else ""
            )
            raise KeyError(f"unknown layer {unknown[0]!r}; use one of {shown}")

    def extractor(self, nodes: Sequence[str], *, folded: bool = False) -> Extractor:
        """The extractor returning ``nodes`` in graph order (traced on first use, then kept).

        ``folded``: batch norms folded into the convolutions before them
        (:mod:`app.engine.fold`), for passes that do not train (maps, logits, gradients
        with respect to inputs or activations); the model's own modules (and hooks on
        them) are then not all called: hook :meth:`Extractor.module` instead.

        Raises:
            KeyError: a node is not in the graph (the message lists valid ones).
        """
        self.check(nodes)
        wanted = set(nodes)  # one extractor per set, returning the nodes in graph order
        key = tuple(n for n in self.names if n in wanted)
        with self._lock:  # one trace per node set, also when two threads ask at once
            found = self._extractors.get((folded, key))
            if found is None:
                found = _trace_extractor(self._model(), key, self._folding if folded else None)
                self._extractors.put((folded, key), found)
            return found

    def run(self, x: torch.Tensor, nodes: Sequence[str]) -> dict[str, torch.Tensor]:
        """Run the model on ``x`` once and return the outputs of ``nodes``."""
        return self.extractor(nodes)(x)

    def remember(self, fact: str, make: Callable[[], T]) -> T:
        """A fact about the graph, computed by ``make`` on first use and then kept."""
        with self._lock:
            if fact not in self._facts:
                self._facts[fact] = make()
            return cast(T, self._facts[fact])

    def _model(self) -> nn.Module:
        module = self._module()
        if module is None:  # only reachable through a TracedModel kept past its model
            raise RuntimeError("the traced model no longer exists")
        return module


_TRACED: weakref.WeakKeyDictionary[nn.Module, TracedModel] = weakref.WeakKeyDictionary()
_TRACED_LOCK = threading.Lock()


def traced(model: nn.Module) -> TracedModel:
    """The model's :class:`TracedModel`, traced on first use (thread-safe)."""
    with _TRACED_LOCK:
        found = _TRACED.get(model)
        if found is None:
            found = _TRACED[model] = TracedModel(model)
        return found


def node_names(model: nn.Module) -> list[str]:
    """The graph node names of ``model`` in eval mode, in execution order."""
    return list(traced(model).names)


def output_node(model: nn.Module) -> str:
    """The name of the node that produces the model's output (the logits)."""
    return traced(model).output


def check_layers(model: nn.Module, layers: Sequence[str]) -> None:
    """Raise a ``KeyError`` naming valid layers when any of ``layers`` is not a graph node."""
    traced(model).check(layers)


def extractor(model: nn.Module, nodes: Sequence[str]) -> Extractor:
    """A callable returning ``{node: output}`` for each requested node (kept per model).

    Raises:
        KeyError: a node is not in the model's graph (the message lists valid ones).
    """
    return traced(model).extractor(nodes)


def _trace_extractor(
    model: nn.Module, nodes: tuple[str, ...], folding: Folding | None
) -> Extractor:
    with TRACE_LOCK:
        module: GraphModule = create_feature_extractor(model, return_nodes={n: n for n in nodes})
    with TRACE_LOCK.shared():  # folding reads the model's parameters
        before = folding.install(module) if folding is not None else None
    return Extractor(module, _without_inplace(module), before)


def _without_inplace(module: GraphModule) -> list[nn.Module]:
    """Turn in-place operations into out-of-place ones.

    When several nodes are returned from one pass, an in-place op (``ReLU(inplace=True)``,
    ``x.relu_()``) after a returned node would overwrite that node's output before the caller
    sees it (torchvision's ResNet: ``layer1.0.add`` loses its negatives). Submodules are shared
    with the model, which may switch a flag back on, so :class:`Extractor` switches the
    returned ones off again before every pass; out-of-place ops cost memory only.

    Returns:
        The submodules that carry an ``inplace`` flag (see :class:`Extractor`).
    """
    flagged = [sub for sub in module.modules() if isinstance(vars(sub).get("inplace"), bool)]
    for sub in flagged:
        vars(sub)["inplace"] = False
    for node in module.graph.nodes:
        if node.kwargs.get("inplace") is True:
            node.kwargs = {**node.kwargs, "inplace": False}
        if (
            node.op == "call_method"
            and isinstance(node.target, str)
            and node.target.endswith("_")
            and not node.target.startswith("_")
        ):
            node.target = node.target[:-1]
    module.recompile()
    return flagged


def forward_nodes(
    model: nn.Module, x: torch.Tensor, nodes: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``x`` once and return the outputs of ``nodes``."""
    return extractor(model, nodes)(x)
