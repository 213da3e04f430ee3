"""Fine-tuning on box crops with metric-learning or MMD losses ("in-training" analysis).

The loss acts on one layer's features, global-average pooled over a crop of each box
(optionally through a projection head). The trained part of the network is the run of
graph nodes strictly after ``after`` up to and including ``layer``; by default ``after`` is
the last node before ``layer``'s stage (its last node at another resolution), so the blocks
that compute ``layer`` at its resolution train and everything below stays frozen. BatchNorm
keeps its running statistics (the whole network stays in eval mode: small batches of crops
would otherwise shift them even with a zero loss); its affine weights train.

Objectives: ``triplet`` / ``npair`` / ``contrastive`` on the box labels, or ``mmd`` (DAN's
MK-MMD) between two groups of boxes (two labels, "domains"), each optionally plus
cross-entropy of a linear classifier on the pooled features (trained alongside, not saved).

Crops are the box widened or narrowed by up to ``±jitter`` per side and shifted by up to
``±jitter`` of its size (inside the image), flipped left-right half the time, and resized
to ``crop_size``. Everything random comes from one generator seeded by ``seed``, so a run
is reproducible on one machine: same seed, same weights.

The network is copied: the model passed in is never changed.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from app.boxes import Box
from app.engine.graph import TRACE_LOCK, node_names
from app.engine.layers import check_layer, list_layers
from app.engine.losses import METRIC_LOSSES, MKMMDLoss, get_metric_loss
from app.engine.models import LoadedModel

__all__ = [
    "OBJECTIVES",
    "CropSample",
    "TrainConfig",
    "TrainResult",
    "TrainSettings",
    "TrainStep",
    "cut_context",
    "default_after",
    "save_trained",
    "trainable_nodes",
    "train",
    "valid_model_name",
]

Objective = Literal["triplet", "npair", "contrastive", "mmd"]
OBJECTIVES: tuple[str, ...] = (*METRIC_LOSSES, "mmd")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


@dataclass(frozen=True)
class CropSample:
    """One box to train on: its image (``H×W×3`` uint8), its box and its label."""

    image: np.ndarray
    box: Box
    label: str


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """How to train: the settings a training request passes on to :class:`TrainConfig`.

    Attributes:
        objective: ``triplet``, ``npair``, ``contrastive`` (labels) or ``mmd`` (domains).
        loss_weight: weight of the objective (0 trains on cross-entropy alone, or not at all).
        cross_entropy: weight of a linear classifier's cross-entropy on the labels.
        head: put a projection head (Linear–ReLU–Linear) between the pooled features and the
            loss; ``None``: yes for the metric losses, no for ``mmd`` (a head could align
            its own output while the layer stays where it was).
        head_dim: the projection's output size.
        epochs: passes over the training boxes.
        lr: Adam's learning rate.
        batch_size: crops per step.
        crop_size: side of the square crops (``0``: the model's input size).
        jitter: largest relative change of a box's sides and position in augmentation.
        seed: seeds every random choice.
        margin: the triplet margin.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    """

    objective: Objective = "triplet"
    loss_weight: float = 1.0
    cross_entropy: float = 0.0
    head: bool | None = None
    head_dim: int = 128
    epochs: int = 3
    lr: float = 1e-4
    batch_size: int = 32
    crop_size: int = 0
    jitter: float = 0.15
    seed: int = 0
    margin: float = 0.2
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class TrainConfig(TrainSettings):
    """What to train (and how: the keyword-only :class:`TrainSettings`).

    Attributes:
        layer: the graph node whose pooled output the loss acts on.
        after: train the nodes after this one up to ``layer``; ``None``: see
            :func:`default_after`.
        domains: the two labels aligned by ``mmd``.
    """

    layer: str
    after: str | None = None
    domains: tuple[str, str] | None = None

    def check(self) -> None:
        """Raise a ``ValueError`` naming the first setting out of range."""
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"unknown objective {self.objective!r}; use one of {', '.join(OBJECTIVES)}"
            )
        if self.objective == "mmd" and (self.domains is None or len(set(self.domains)) != 2):
            raise ValueError("objective 'mmd' needs two different labels as domains")
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be positive, got {self.lr}"),
            (self.batch_size >= 2, f"batch_size must be at least 2, got {self.batch_size}"),
            (self.crop_size == 0 or self.crop_size >= 32, "crop_size must be 0 or ≥ 32"),
            (0 <= self.jitter < 1, f"jitter must be in [0, 1), got {self.jitter}"),
            (self.loss_weight >= 0, "loss_weight must be 0 or more"),
            (self.cross_entropy >= 0, "cross_entropy must be 0 or more"),
            (self.head_dim >= 1, "head_dim must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def uses_head(self) -> bool:
        """Whether a projection head sits before the loss."""
        return self.objective != "mmd" if self.head is None else self.head


@dataclass(frozen=True)
class TrainStep:
    """One optimiser step: its number (from 1), epoch (from 1) and losses."""

    step: int
    steps: int
    epoch: int
    loss: float
    objective: float
    cross_entropy: float


@dataclass
class TrainResult:
    """A finished run: the whole network's new weights and what was trained."""

    state_dict: dict[str, Tensor]
    trained: list[str]
    parameters: int
    curve: list[TrainStep] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"


def cut_context(image: np.ndarray, box: Box, label: str, jitter: float) -> CropSample:
    """The box with the margin its jittered crops can reach (``1.5·jitter`` of its size,
    rounded up), as a small sample: training on it gives the same crops as on the whole
    image, and holds only the boxes' surroundings in memory.

    Raises:
        ValueError: ``jitter`` out of ``[0, 1)``.
    """
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    height, width = image.shape[:2]
    mx, my = 1.5 * jitter * box.w + 2, 1.5 * jitter * box.h + 2
    x0, y0 = max(0, math.floor(box.x - mx)), max(0, math.floor(box.y - my))
    x1 = min(width, math.ceil(box.x + box.w + mx))
    y1 = min(height, math.ceil(box.y + box.h + my))
    patch = np.ascontiguousarray(image[y0:y1, x0:x1])
    return CropSample(patch, Box(box.x - x0, box.y - y0, box.w, box.h), label)


def default_after(model: LoadedModel, layer: str) -> str | None:
    """The last feature-map node before ``layer``'s stage (another spatial size than
    ``layer``'s at the model's input size); ``None`` when the whole way there is one stage.

    Raises:
        KeyError: ``layer`` is not a feature-map layer of the model.
    """
    info = check_layer(model, layer)
    layers = list_layers(model)
    index = [x.name for x in layers].index(layer)
    for before in reversed(layers[:index]):
        if (before.height, before.width) != (info.height, info.width):
            return before.name
    return None


def trainable_nodes(model: nn.Module, layer: str, after: str | None) -> list[str]:
    """The graph nodes strictly after ``after`` up to ``layer`` that are modules with
    parameters (their parameters are what trains).

    Raises:
        KeyError: an unknown node (the message lists valid ones).
        ValueError: ``after`` does not come before ``layer``, or nothing between has
            parameters.
    """
    names = node_names(model)
    for node in (layer, after):
        if node is not None and node not in names:
            shown = ", ".join(names[:12])
            raise KeyError(f"unknown layer {node!r}; use one of {shown}, … ({len(names)})")
    end = names.index(layer)
    start = -1 if after is None else names.index(after)
    if start >= end:
        raise ValueError(f"'after' ({after!r}) must come before the layer {layer!r}")
    modules = dict(model.named_modules())
    chosen = [
        n
        for n in names[start + 1 : end + 1]
        if n in modules and any(True for _ in modules[n].parameters())
    ]
    if not chosen:
        raise ValueError(
            f"no module with parameters between {after!r} and {layer!r}; choose an earlier "
            "'after' or a later layer"
        )
    return chosen


def valid_model_name(name: str) -> str:
    """``name`` when it can name a saved model (letters, digits, ``_.-``, ≤ 80).

    Raises:
        ValueError: anything else.
    """
    if not _NAME.match(name):
        raise ValueError(
            f"model name {name!r} must start with a letter or digit and hold only letters, "
            "digits, '_', '.' and '-' (at most 80)"
        )
    return name


def _device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, and no CUDA device is present")
        return torch.device("cuda")
    return torch.device("cpu")


def _crop(image: Tensor, box: Box, size: int, jitter: float, generator: torch.Generator) -> Tensor:
    """A jittered, maybe flipped crop of ``box`` from a ``3×H×W`` uint8 image, as floats
    ``3×size×size`` in 0–255."""
    _, height, width = image.shape
    u = torch.rand(5, generator=generator, dtype=torch.float64).tolist()
    w = box.w * (1 + jitter * (2 * u[0] - 1))
    h = box.h * (1 + jitter * (2 * u[1] - 1))
    cx = box.x + box.w / 2 + jitter * box.w * (2 * u[2] - 1)
    cy = box.y + box.h / 2 + jitter * box.h * (2 * u[3] - 1)
    x0 = int(round(min(max(cx - w / 2, 0.0), width - 1.0)))
    y0 = int(round(min(max(cy - h / 2, 0.0), height - 1.0)))
    x1 = max(x0 + 1, int(round(min(cx + w / 2, float(width)))))
    y1 = max(y0 + 1, int(round(min(cy + h / 2, float(height)))))
    patch = image[:, y0:y1, x0:x1].unsqueeze(0).float()
    out = F.interpolate(
        patch, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )[0]
    return out.flip(-1) if u[4] < 0.5 else out


def _batches(
    labels: Sequence[int],
    config: TrainConfig,
    domains: tuple[int, int] | None,
    generator: torch.Generator,
) -> list[list[int]]:
    """One epoch's batches of sample indices (``mmd``: half from each domain)."""
    n = len(labels)
    if domains is None:
        order = torch.randperm(n, generator=generator).tolist()
        return [order[i : i + config.batch_size] for i in range(0, n, config.batch_size)]
    half = max(1, config.batch_size // 2)
    sides = [
        [i for i in torch.randperm(n, generator=generator).tolist() if labels[i] == d]
        for d in domains
    ]
    steps = math.ceil(max(len(s) for s in sides) / half)
    out = []
    for step in range(steps):
        batch = []
        for side in sides:  # the smaller domain wraps round
            batch += [side[(step * half + k) % len(side)] for k in range(min(half, len(side)))]
        out.append(batch)
    return out


def _loss_options(config: TrainConfig) -> dict[str, Any]:
    return {"margin": config.margin} if config.objective == "triplet" else {}


class _Head(nn.Module):
    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, dim))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


@dataclass
class _Learner:
    """What an optimiser step needs: the layer's extractor (``body``), the projection head
    and the classifier (where the config has them), the objective and the optimiser."""

    body: nn.Module
    head: nn.Module | None
    classifier: nn.Module | None
    objective: nn.Module
    optimiser: torch.optim.Optimizer
    config: TrainConfig
    domains: tuple[int, int] | None

    def step(self, crops: Tensor, target: Tensor, number: int) -> tuple[float, float, float]:
        """One optimiser step on a batch of crops; ``(loss, objective, cross-entropy)``.

        Raises:
            ValueError: the features collapsed to one point (MK-MMD), or the loss is not
                finite; both name the step ``number`` and the learning rate to lower.
        """
        config = self.config
        with TRACE_LOCK.shared():  # module calls never overlap another thread's trace
            pooled = self.body(crops)["features"].mean(dim=(2, 3))
            embedded = self.head(pooled) if self.head is not None else pooled
            if self.domains is not None:
                first = target == self.domains[0]
                try:
                    main = self.objective(embedded[first], embedded[~first])
                except ValueError as exc:  # MK-MMD's bandwidth is 0: every feature is one point
                    raise ValueError(
                        f"step {number}: the features at {config.layer!r} collapsed to one "
                        f"point ({exc}); lower lr (now {config.lr}) or train fewer blocks"
                    ) from exc
            else:
                main = self.objective(embedded, target)
            ce = (
                F.cross_entropy(self.classifier(pooled), target)
                if self.classifier is not None
                else torch.zeros((), device=crops.device)
            )
            loss = config.loss_weight * main + config.cross_entropy * ce
            if not torch.isfinite(loss.detach()):
                raise ValueError(
                    f"step {number}: the loss is {float(loss.detach())}; lower lr (now {config.lr})"
                )
            self.optimiser.zero_grad(set_to_none=True)
            if loss.requires_grad:
                loss.backward()
                self.optimiser.step()
        return float(loss.detach()), float(main.detach()), float(ce.detach())


def train(
    model: LoadedModel,
    samples: Sequence[CropSample],
    config: TrainConfig,
    on_step: Callable[[TrainStep], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    copy_lock: AbstractContextManager[object] | None = None,
) -> TrainResult:
    """Fine-tune a copy of ``model`` on crops of ``samples``.

    Args:
        model: the base model (not changed).
        samples: the training boxes with their images and labels.
        config: what to train and how.
        on_step: called after every optimiser step.
        cancelled: polled before every step.
        copy_lock: held while the model is copied (the caller's lock around forward
            passes, so no other thread's hooks are on the module while it is copied).

    Returns:
        The copy's whole state dict (on the CPU) and the run's record.

    Raises:
        KeyError: an unknown layer. ValueError: bad settings, too few boxes or labels
            for the objective. InterruptedError: ``cancelled()`` turned true.
    """
    from timm.models._features_fx import create_feature_extractor

    started = time.perf_counter()
    config.check()
    info = check_layer(model, config.layer)
    after = config.after if config.after is not None else default_after(model, config.layer)
    trained = trainable_nodes(model.module, config.layer, after)
    names = sorted({s.label for s in samples})
    index = {name: i for i, name in enumerate(names)}
    labels = [index[s.label] for s in samples]
    domains: tuple[int, int] | None = None
    if config.objective == "mmd":
        assert config.domains is not None
        missing = [d for d in config.domains if d not in index]
        if missing:
            raise ValueError(f"no training boxes with the domain label(s) {missing}")
        domains = (index[config.domains[0]], index[config.domains[1]])
    elif len(names) < 2 or max(np.bincount(labels)) < 2:
        raise ValueError(
            f"objective {config.objective!r} needs two labels and two boxes of one label in "
            f"the training split, got {len(names)} label(s) over {len(samples)} box(es)"
        )
    device = _device(config.device)
    size = config.crop_size or model.spec.input_size
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        with copy_lock or nullcontext(), TRACE_LOCK.shared():
            net = copy.deepcopy(model.module).eval()
        head = _Head(info.channels, config.head_dim) if config.uses_head else None
        classifier = nn.Linear(info.channels, len(names)) if config.cross_entropy > 0 else None
    for p in net.parameters():
        p.requires_grad_(False)
    modules = dict(net.named_modules())
    params = [p for n in trained for p in modules[n].parameters()]
    for p in params:
        p.requires_grad_(True)
    extra = [m for m in (head, classifier) if m is not None]
    with TRACE_LOCK:
        body = create_feature_extractor(net, return_nodes={config.layer: "features"}).eval()
    for m in (net, body, *extra):
        m.to(device)
    learner = _Learner(
        body=body,
        head=head,
        classifier=classifier,
        objective=(
            MKMMDLoss()
            if config.objective == "mmd"
            else get_metric_loss(config.objective, **_loss_options(config))
        ),
        optimiser=torch.optim.Adam(
            [*params, *(p for m in extra for p in m.parameters())], lr=config.lr
        ),
        config=config,
        domains=domains,
    )
    mean = torch.tensor(model.spec.mean).view(3, 1, 1)
    std = torch.tensor(model.spec.std).view(3, 1, 1)
    images: dict[int, Tensor] = {}
    for s in samples:  # one uint8 copy per distinct image
        key = id(s.image)
        if key not in images:
            images[key] = torch.from_numpy(np.array(s.image, dtype=np.uint8)).permute(2, 0, 1)

    def crop(sample: CropSample) -> Tensor:
        cut = _crop(images[id(sample.image)], sample.box, size, config.jitter, generator)
        return (cut / 255.0 - mean) / std

    epochs = [_batches(labels, config, domains, generator) for _ in range(config.epochs)]
    steps = sum(len(e) for e in epochs)
    curve: list[TrainStep] = []
    step = 0
    for epoch, batches in enumerate(epochs, start=1):
        for batch in batches:
            if cancelled is not None and cancelled():
                raise InterruptedError("training cancelled")
            crops = torch.stack([crop(samples[i]) for i in batch]).to(device)
            target = torch.tensor([labels[i] for i in batch], device=device)
            loss, main, ce = learner.step(crops, target, step + 1)
            step += 1
            record = TrainStep(step, steps, epoch, loss, main, ce)
            curve.append(record)
            if on_step is not None:
                on_step(record)
    net.to("cpu")
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    return TrainResult(
        state_dict=state,
        trained=trained,
        parameters=sum(p.numel() for p in params),
        curve=curve,
        seconds=time.perf_counter() - started,
        device=str(device),
    )


def save_trained(
    folder: Path, name: str, state: dict[str, Tensor], sidecar: dict[str, Any]
) -> Path:
    """Write ``<name>.safetensors`` and the sidecar ``<name>.json`` into ``folder``.

    The weights are written first and each file lands by an atomic rename, so a sidecar is
    never seen without its weights. ``sidecar`` gets ``weights`` and ``name`` set.

    Returns:
        The sidecar's path.

    Raises:
        ValueError: a bad name, or a model of that name is already in the folder.
    """
    from safetensors.torch import save_file

    valid_model_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.safetensors"
    meta = folder / f"{name}.json"
    if weights.exists() or meta.exists():
        raise ValueError(f"a model named {name!r} already exists in {folder}; choose another name")
    tmp = folder / f".{name}.safetensors.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, weights)
    body = {**sidecar, "name": name, "weights": weights.name}
    tmp_meta = folder / f".{name}.json.tmp"
    tmp_meta.write_text(json.dumps(body, indent=2))
    os.replace(tmp_meta, meta)
    return meta
