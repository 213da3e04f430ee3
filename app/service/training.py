"""Training jobs: fine-tune a model on the stored boxes, save it, and say what moved.

A request is checked and split before it is queued (a bad one is a 4xx, not a failed
job): the boxes are split **by image** into a training and a held-out part (never one image
in both), the training part is fed to :func:`app.engine.training.train` as jittered crops,
the result is saved as ``<name>.safetensors`` + ``<name>.json`` in the models folder (so it
is listed and usable like any other model), and the separation of the held-out boxes is
measured per layer under the base model and the trained one by
:func:`app.service.moved.moved` (and, for ``mmd``, the MMD between the two domains).

While a job runs its loss curve is kept in memory (:func:`live_curve`); once done it is in
the job's result and in the sidecar.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.boxes import Box
from app.config import Settings
from app.engine.layers import check_layer, list_layers
from app.engine.models import BUILTIN_MODELS, LoadedModel, get_model, imagenet_classes
from app.engine.preprocess import InputMode
from app.engine.training import (
    CropSample,
    TrainConfig,
    TrainSettings,
    TrainStep,
    cut_context,
    default_after,
    save_trained,
    train,
    trainable_nodes,
    valid_model_name,
)
from app.errors import Conflict, FeatureGapError, InvalidInput, NotFound
from app.jobs import FINISHED_STATES, Cancelled, JobRunner, Progress
from app.lru import LRU
from app.service.features import check_limits
from app.service.heatmaps import ENGINE_LOCK
from app.service.moved import default_layers, moved
from app.store import BoxRecord, Store

__all__ = [
    "TrainingPlan",
    "TrainingRequest",
    "live_curve",
    "plan_training",
    "run_training",
    "split_by_image",
    "start_training",
]

_LIVE: LRU[str, list[dict[str, Any]]] = LRU(64)
_RESERVED: dict[str, list[str]] = {}  # names of queued or running trainings → [job id]
_RESERVED_LOCK = threading.Lock()


def _release(name: str, slot: list[str]) -> None:
    with _RESERVED_LOCK:
        if _RESERVED.get(name) is slot:
            del _RESERVED[name]


@dataclass(frozen=True)
class TrainingRequest(TrainSettings):
    """A fine-tuning request (the training settings are
    :class:`app.engine.training.TrainSettings`'s, passed on as they are).

    ``labels`` / ``box_ids`` choose the boxes (default: all); ``holdout`` is the share of
    images kept out of training, or ``holdout_image_ids`` names them; ``eval_layers`` are
    the layers compared before/after (default: the end of each stage, ``after`` and
    ``layer``).
    """

    model: str | None = None
    layer: str | None = None
    after: str | None = None
    labels: list[str] | None = None
    box_ids: list[int] | None = None
    domains: list[str] | None = None
    holdout: float = 0.25
    holdout_image_ids: list[int] | None = None
    name: str | None = None
    eval_layers: list[str] | None = None
    mode: InputMode = "resize"


@dataclass(frozen=True)
class TrainingPlan:
    """A checked request: the base model, the name to save under, the split, the config."""

    request: TrainingRequest
    base: LoadedModel
    name: str
    config: TrainConfig
    trained: list[str]
    train_boxes: list[BoxRecord]
    held_out: list[BoxRecord]
    eval_layers: list[str]
    warnings: list[str] = field(default_factory=list)


def split_by_image(
    boxes: Sequence[BoxRecord],
    holdout: float,
    seed: int,
    holdout_image_ids: Sequence[int] | None = None,
) -> tuple[list[BoxRecord], list[BoxRecord]]:
    """Training and held-out boxes, split by image: no image has boxes in both.

    Without ``holdout_image_ids``, about ``holdout`` of the images (at least one when
    ``holdout > 0``) are held out, chosen by ``seed``, first one image of each label that
    has boxes in two or more images (so the held-out part covers the labels it can); an
    image whose hold-out would leave one of its labels without a training image stays in
    training (so fewer may be held out).

    Raises:
        InvalidInput: ``holdout`` out of ``[0, 1)``, or held-out ids that hold no box.
    """
    if not 0 <= holdout < 1:
        raise InvalidInput(f"holdout must be in [0, 1), got {holdout}")
    images = sorted({b.image_id for b in boxes})
    if holdout_image_ids is not None:
        held = set(holdout_image_ids)
        unknown = sorted(held - set(images))
        if unknown:
            raise InvalidInput(
                f"holdout_image_ids {unknown[:10]} hold none of the chosen boxes; use ids of "
                "images whose boxes take part (GET /api/images)"
            )
    else:
        order = images[:]
        random.Random(seed).shuffle(order)
        target = math.ceil(holdout * len(images)) if holdout > 0 else 0
        held = set()
        by_label: dict[str, list[int]] = {}
        for image in order:
            for label in sorted({b.label for b in boxes if b.image_id == image}):
                by_label.setdefault(label, []).append(image)
        for label in sorted(by_label):
            if len(held) >= target:
                break
            if len(by_label[label]) >= 2 and not held & set(by_label[label]):
                held.add(by_label[label][0])
        labels_of = {i: {b.label for b in boxes if b.image_id == i} for i in order}
        for image in order:
            if len(held) >= target:
                break
            # never hold out a label's last training image
            if image not in held and all(
                any(j not in held and j != image for j in by_label[label])
                for label in labels_of[image]
            ):
                held.add(image)
    return [b for b in boxes if b.image_id not in held], [b for b in boxes if b.image_id in held]


def _choose_boxes(store: Store, request: TrainingRequest) -> list[BoxRecord]:
    if request.box_ids is not None and request.labels is not None:
        raise InvalidInput("give box_ids or labels, not both")
    if request.box_ids is not None:
        return store.boxes(ids=request.box_ids)
    if request.labels is not None:
        return store.boxes(labels=request.labels)
    if request.objective == "mmd" and request.domains:
        return store.boxes(labels=request.domains)
    return store.boxes()


def _name_free(settings: Settings, name: str) -> None:
    valid_model_name(name)
    folder = settings.models_dir
    if (
        name in BUILTIN_MODELS
        or (folder / f"{name}.json").exists()
        or (folder / f"{name}.safetensors").exists()
    ):
        raise Conflict(f"a model named {name!r} already exists; choose another name")


def plan_training(store: Store, settings: Settings, request: TrainingRequest) -> TrainingPlan:
    """Check a request and split its boxes, before anything is queued.

    Raises:
        NotFound: unknown model, layer or box. InvalidInput: bad settings, a split that
        leaves training without two labels (or a domain), too few boxes.
        Conflict: the name is taken. LimitExceeded: past a settings limit.
    """
    try:
        base = get_model(request.model or settings.default_model, settings.models_dir)
    except KeyError as exc:
        raise NotFound(str(exc.args[0])) from exc
    maps = [x for x in list_layers(base) if x.height * x.width > 1] or list_layers(base)
    layer = request.layer or maps[-1].name  # the last feature map with a spatial extent
    try:
        check_layer(base, layer)
        after = request.after if request.after is not None else default_after(base, layer)
        trained = trainable_nodes(base.module, layer, after)
    except KeyError as exc:
        raise NotFound(str(exc.args[0])) from exc
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    domains = tuple(request.domains) if request.domains is not None else None
    if domains is not None and len(domains) != 2:
        raise InvalidInput(f"domains needs exactly two labels, got {len(domains)}")
    config = TrainConfig(
        **{f.name: getattr(request, f.name) for f in fields(TrainSettings)},
        layer=layer,
        after=after,
        domains=(domains[0], domains[1]) if domains is not None else None,
    )
    try:
        config.check()
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    boxes = _choose_boxes(store, request)
    if domains is not None:
        boxes = [b for b in boxes if b.label in domains]
    check_limits(settings, samples=len(boxes))
    train_boxes, held_out = split_by_image(
        boxes, request.holdout, request.seed, request.holdout_image_ids
    )
    train_labels = {b.label for b in train_boxes}
    if domains is not None:
        missing = [d for d in domains if d not in train_labels]
        if missing:
            raise InvalidInput(
                f"the training split has no boxes of the domain(s) {missing}; draw boxes "
                "with these labels, or hold out fewer images"
            )
    elif len(train_labels) < 2 or len(train_boxes) < 3:
        raise InvalidInput(
            f"the training split holds {len(train_boxes)} box(es) of {len(train_labels)} "
            f"label(s); {request.objective} needs two labels and at least 3 boxes: add "
            "images or hold out fewer"
        )
    warnings = []
    for label in sorted({b.label for b in boxes}):
        if not any(b.label == label for b in held_out) and held_out:
            warnings.append(
                f"label {label!r} has no held-out box (all its boxes are in training images)"
            )
    if not held_out:
        warnings.append("nothing is held out: the before/after comparison is skipped")
    eval_layers = request.eval_layers or default_layers(base, after, layer)
    check_limits(settings, layers=len(eval_layers))
    for name in eval_layers:
        try:
            check_layer(base, name)
        except KeyError as exc:
            raise NotFound(str(exc.args[0])) from exc
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    name = request.name or f"{base.spec.name}-{request.objective}-{stamp}"
    try:
        _name_free(settings, name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    return TrainingPlan(
        request, base, name, config, trained, train_boxes, held_out, eval_layers, warnings
    )


def _samples(store: Store, boxes: Sequence[BoxRecord], jitter: float) -> list[CropSample]:
    """Each box with the surroundings its crops can reach, one image decoded at a time."""
    images = store.get_images({b.image_id for b in boxes})
    by_image: dict[int, list[BoxRecord]] = {}
    for box in boxes:
        by_image.setdefault(box.image_id, []).append(box)
    cut: dict[int, CropSample] = {}
    for image_id, members in by_image.items():
        pixels = store.load_decoded(images[image_id]).array()
        for b in members:
            cut[b.id] = cut_context(pixels, Box(b.x, b.y, b.w, b.h), b.label, jitter)
    return [cut[b.id] for b in boxes]


def _groups(plan: TrainingPlan, boxes: Sequence[BoxRecord]) -> dict[str, list[BoxRecord]]:
    wanted = plan.config.domains or tuple(sorted({b.label for b in boxes}))
    groups = {label: [b for b in boxes if b.label == label] for label in wanted}
    return {k: v for k, v in groups.items() if v}


def _point(step: TrainStep) -> dict[str, Any]:
    return {
        "step": step.step,
        "epoch": step.epoch,
        "loss": step.loss,
        "objective": step.objective,
        "cross_entropy": step.cross_entropy,
    }


def _sidecar(plan: TrainingPlan) -> dict[str, Any]:
    spec = plan.base.spec
    classes: str | list[str] = (
        "imagenet" if spec.class_names == imagenet_classes() else list(spec.class_names)
    )
    return {
        "architecture": spec.architecture,
        "source": spec.source,
        "input_size": spec.input_size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "class_names": classes,
        "description": (
            f"{spec.name} fine-tuned with {plan.config.objective} at {plan.config.layer} "
            f"(seed {plan.config.seed})"
        ),
    }


def run_training(
    store: Store,
    settings: Settings,
    plan: TrainingPlan,
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
    curve: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train, save, and compare the held-out separation before and after.

    Args:
        store: the store of images and boxes.
        settings: the settings (``models_dir`` receives the model).
        plan: from :func:`plan_training`.
        progress: fraction and message (training takes the first 80 %).
        cancelled: polled before every step and between the evaluations.
        curve: a list that receives each step's point as it happens (the live curve).

    Returns:
        JSON-safe: ``model`` (the new name), ``base``, ``layer``, ``after``, ``trained``,
        ``parameters``, ``curve``, ``split``, ``held_out`` (per layer before/after ratio and
        silhouette, ``mmd`` for domain alignment), ``seconds``, ``device``, ``warnings``.

    Raises:
        InterruptedError: cancelled. ValueError: what training raises (a collapse).
    """
    samples = _samples(store, plan.train_boxes, plan.config.jitter)
    points = curve if curve is not None else []

    def on_step(step: TrainStep) -> None:
        points.append(_point(step))
        if progress is not None:
            progress(
                0.8 * step.step / step.steps,
                f"epoch {step.epoch}, step {step.step}/{step.steps}, loss {step.loss:.4g}",
            )

    result = train(
        plan.base, samples, plan.config, on_step=on_step, cancelled=cancelled, copy_lock=ENGINE_LOCK
    )
    config = plan.config
    training: dict[str, Any] = {
        "base": plan.base.spec.name,
        "base_weights": plan.base.weights_sha256,
        "layer": config.layer,
        "after": config.after,
        "trained": result.trained,
        "parameters": result.parameters,
        "loss": {
            "objective": config.objective,
            "domains": list(config.domains) if config.domains else None,
            "loss_weight": config.loss_weight,
            "cross_entropy": config.cross_entropy,
            "head": config.uses_head,
            "margin": config.margin,
        },
        "settings": {
            k: v
            for k, v in asdict(config).items()
            if k in ("epochs", "lr", "batch_size", "crop_size", "jitter", "seed", "head_dim")
        },
        "data": {
            "train_boxes": [b.id for b in plan.train_boxes],
            "held_out_boxes": [b.id for b in plan.held_out],
            "train_images": sorted({b.image_id for b in plan.train_boxes}),
            "held_out_images": sorted({b.image_id for b in plan.held_out}),
            "labels": sorted({b.label for b in plan.train_boxes}),
        },
        "seed": config.seed,
        "device": result.device,
        "seconds": result.seconds,
        "curve": [_point(s) for s in result.curve],
    }
    sidecar = save_trained(
        settings.models_dir, plan.name, result.state_dict, _sidecar(plan) | {"training": training}
    )
    tuned = get_model(plan.name, settings.models_dir)
    held: dict[str, Any] = {}
    warnings = list(plan.warnings)
    groups = _groups(plan, plan.held_out)
    if len(groups) >= 2:
        if progress is not None:
            progress(0.85, "held-out separation before and after")
        try:
            compare = moved(
                store,
                settings,
                plan.base,
                tuned,
                groups,
                plan.eval_layers,
                config.layer,
                "mmd" if config.objective == "mmd" else None,
                plan.request.mode,
                cancelled,
                descriptor="gap",
                options={"kernel": "multi"} if config.objective == "mmd" else None,
            )
        except (ValueError, KeyError, FeatureGapError) as exc:  # the model is saved: say why
            detail = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            warnings.append(f"the held-out comparison failed: {detail}")
        else:
            held = {"layers": compare["layers"]}
            if "mmd" in compare:
                held["mmd"] = compare["mmd"]
    training["held_out"] = held
    _rewrite(sidecar, training)
    return {
        "model": plan.name,
        **{k: v for k, v in training.items() if k != "data"},
        "split": {k: len(v) for k, v in training["data"].items() if k != "labels"},
        "warnings": warnings,
    }


def _rewrite(target: Path, training: dict[str, Any]) -> None:
    """Add the metrics to the sidecar (weights unchanged, so the model is the same)."""
    body = json.loads(target.read_text())
    body["training"] = training
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(body, indent=2))
    os.replace(tmp, target)


def start_training(
    store: Store, settings: Settings, jobs: JobRunner, request: TrainingRequest
) -> tuple[str, TrainingPlan]:
    """Check the request and queue it as a ``training`` job.

    Returns:
        The job's id and the plan (the name, the split).

    Raises:
        What :func:`plan_training` raises; PoolBusy: the pool is full.
    """
    plan = plan_training(store, settings, request)
    slot = [""]  # the job's id once queued
    with _RESERVED_LOCK:  # two queued jobs may not both take a name that is still free
        holder = _RESERVED.get(plan.name)
        # a job cancelled while queued never runs and never frees its name: its state tells
        if holder is not None and (
            not holder[0] or jobs.get(holder[0]).state not in FINISHED_STATES
        ):
            raise Conflict(f"a training that saves {plan.name!r} is already queued or running")
        _RESERVED[plan.name] = slot
    points: list[dict[str, Any]] = []

    def work(progress: Progress, cancelled: Cancelled) -> dict[str, Any]:
        try:
            return run_training(store, settings, plan, progress, cancelled, points)
        finally:
            _release(plan.name, slot)

    try:
        job_id = jobs.submit("training", work)
    except BaseException:
        _release(plan.name, slot)
        raise
    slot[0] = job_id
    _LIVE.put(job_id, points)
    return job_id, plan


def live_curve(job_id: str) -> list[dict[str, Any]] | None:
    """The loss curve so far of a training job of this process (``None``: not known)."""
    found = _LIVE.get(job_id)
    return None if found is None else list(found)
