"""``featuregap train``: fine-tune a model on the stored boxes (the CLI face of
:mod:`app.service.training`); :func:`app.cli.build_parser` adds :data:`TRAIN`."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from app.cli import Command, _answer, _fraction_bar, _names, _store_settings

__all__ = ["TRAIN"]


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# What each --objective does, for --help (the parser is built without importing torch, so
# the names are written here; a test holds them equal to app.engine.training.OBJECTIVES).
_OBJECTIVES = {
    "triplet": "each box's hardest same-label box nearer than its hardest other-label box "
    "by --margin (batch-hard triplet loss; labels)",
    "npair": "each label's pair picks its own positive out of the other labels' "
    "(multi-class N-pair loss, Sohn 2016; labels)",
    "contrastive": "same-label pairs pulled together, other pairs pushed at least 1 apart "
    "(contrastive loss, Hadsell 2006; labels)",
    "mmd": "the two --domains labels' features brought together (DAN's multi-kernel MMD²; "
    "aligns domains, ignores classes)",
}


def _setup_train(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--model", default=None, help="base model (default: the setting)")
    add("--layer", default=None, help="layer the loss acts on (default: the last feature map)")
    add("--after", default=None, help="train the nodes after this one (default: layer's stage)")
    add(
        "--objective",
        choices=list(_OBJECTIVES),
        default="triplet",
        help="; ".join(f"{k}: {v}" for k, v in _OBJECTIVES.items()) + " (default triplet)",
    )
    add("--labels", default=None, help="comma-separated labels of the boxes (default: all)")
    add("--domains", default=None, help="the two labels 'mmd' aligns, comma-separated")
    add("--holdout", type=float, default=0.25, help="share of images held out (default 0.25)")
    add("--holdout-images", default=None, help="comma-separated ids of held-out images")
    add("--name", default=None, help="name of the new model (default: base-objective-time)")
    add("--epochs", type=int, default=3)
    add("--lr", type=float, default=1e-4)
    add("--batch-size", type=int, default=32)
    add("--crop-size", type=int, default=0, help="side of the crops (0: the model's input)")
    add("--seed", type=int, default=0)
    add("--loss-weight", type=float, default=1.0)
    add("--cross-entropy", type=float, default=0.0, help="weight of cross-entropy on labels")
    add("--head", action=argparse.BooleanOptionalAction, default=None, help="projection head")
    add("--margin", type=float, default=0.2, help="triplet margin (default 0.2)")
    add("--eval-layers", default=None, help="comma-separated layers compared before/after")
    add("--data-dir", default=None, help="store location (FEATUREGAP_DATA_DIR)")
    add("--models-dir", default=None, help="where the model is saved (FEATUREGAP_MODELS_DIR)")
    add("--json", action="store_true", help="print the result as JSON")


def _run_train(args: argparse.Namespace) -> int:
    from app.service.runtime import apply_torch_threads
    from app.service.training import TrainingRequest, plan_training, run_training
    from app.store import Store

    settings = _store_settings(args.data_dir, args.models_dir)
    apply_torch_threads(settings)
    held = _names(args.holdout_images)
    try:
        held_ids = None if held is None else [int(i) for i in held]
    except ValueError as exc:
        raise ValueError(
            f"--holdout-images must be image ids, got {args.holdout_images!r}"
        ) from exc
    request = TrainingRequest(
        model=args.model,
        layer=args.layer,
        after=args.after,
        objective=args.objective,
        labels=_names(args.labels),
        domains=_names(args.domains),
        holdout=args.holdout,
        holdout_image_ids=held_ids,
        name=args.name,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        crop_size=args.crop_size,
        seed=args.seed,
        loss_weight=args.loss_weight,
        cross_entropy=args.cross_entropy,
        head=args.head,
        margin=args.margin,
        eval_layers=_names(args.eval_layers),
    )
    store = Store(settings)
    try:
        plan = plan_training(store, settings, request)
        with _fraction_bar("train") as advance:
            result: dict[str, Any] = run_training(store, settings, plan, advance)
    finally:
        store.close()

    def text() -> Iterator[str]:
        curve = result["curve"]
        yield (
            f"saved {result['model']} ({result['parameters']} parameters of "
            f"{len(result['trained'])} modules trained, {len(curve)} steps on "
            f"{result['device']}, {result['seconds']:.1f}s); loss {curve[0]['loss']:.4g} → "
            f"{curve[-1]['loss']:.4g}"
        )
        for row in result["held_out"].get("layers", []):
            yield (
                f"  held-out {row['layer']}: ratio {_num(row['ratio_before'])} → "
                f"{_num(row['ratio_after'])}, silhouette {_num(row['silhouette_before'])} → "
                f"{_num(row['silhouette_after'])}"
            )
        if "mmd" in result["held_out"]:
            mmd = result["held_out"]["mmd"]
            yield f"  held-out MMD between domains: {mmd['before']:.4g} → {mmd['after']:.4g}"
        for warning in result["warnings"]:
            yield f"  warning: {warning}"

    return _answer(args.json, result, text)


TRAIN = Command(
    "fine-tune a model on the boxes (triplet, N-pair, contrastive or MK-MMD)",
    _setup_train,
    _run_train,
)
"""The ``train`` subcommand."""
