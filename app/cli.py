"""The ``featuregap`` command line: models, layers, heat maps, dataset import, extraction.

Batched extraction (``extract``) writes box descriptors into the store's feature store.

Each subcommand is an entry in :data:`COMMANDS` (help text, argument setup, runner), so
another part of the product adds one (``serve``) with a single :func:`command` decorator.
Errors in the input (a bad file, unknown model or layer, a bad box) print one line to
stderr and exit with status 2; nothing prints a traceback for a user mistake.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

__all__ = ["COMMANDS", "Command", "command", "main", "parse_box"]

Runner = Callable[[argparse.Namespace], int]
Setup = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, how it adds its arguments, and what it runs."""

    help: str
    setup: Setup
    run: Runner


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, setup: Setup) -> Callable[[Runner], Runner]:
    """Register a subcommand; duplicate names are refused.

    Raises:
        ValueError: ``name`` is taken.
    """

    def wrap(run: Runner) -> Runner:
        if name in COMMANDS:
            raise ValueError(f"a command named {name!r} already exists")
        COMMANDS[name] = Command(help, setup, run)
        return run

    return wrap


def parse_box(text: str) -> Any:
    """``"x,y,w,h"`` in image pixels → a :class:`~app.boxes.Box`."""
    from app.boxes import Box

    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"box {text!r} must be x,y,w,h (four numbers)")
    return Box(*values)


def _model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model name (default: the setting)")


def _load_image(path: str) -> Any:
    from app.config import get_settings
    from app.images import decode_image

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        settings = get_settings()
        return decode_image(
            data, max_pixels=settings.max_image_pixels, max_bytes=settings.max_decoded_bytes
        )
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _get_model(name: str | None) -> Any:
    from app.config import get_settings
    from app.engine.models import get_model
    from app.service.runtime import apply_torch_threads

    settings = get_settings()
    apply_torch_threads(settings)
    return get_model(name or settings.default_model, settings.models_dir)


def _print_json(value: object) -> None:
    def clean(item: object) -> object:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {k: clean(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [clean(v) for v in item]
        return item

    print(json.dumps(clean(value), indent=2, allow_nan=False))


def _setup_models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


@command("models", "list registered and discovered models", _setup_models)
def _run_models(args: argparse.Namespace) -> int:
    from app.config import get_settings
    from app.engine.models import list_models

    rows = [
        {
            "name": s.name,
            "architecture": s.architecture,
            "source": s.source,
            "input_size": s.input_size,
            "classes": len(s.class_names),
            "description": s.description,
        }
        for s in list_models(get_settings().models_dir)
    ]
    if args.json:
        _print_json(rows)
    else:
        for row in rows:
            print(
                f"{row['name']:<24} {row['source']}:{row['architecture']:<28} "
                f"{row['input_size']}px {row['classes']} classes  {row['description']}"
            )
    return 0


def _setup_layers(parser: argparse.ArgumentParser) -> None:
    _model_arg(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")


@command("layers", "list a model's feature-map layers with their shapes", _setup_layers)
def _run_layers(args: argparse.Namespace) -> int:
    from app.engine.layers import list_layers

    layers = list_layers(_get_model(args.model))
    if args.json:
        _print_json([vars(info) for info in layers])
    else:
        for info in layers:
            print(f"{info.name:<40} {info.channels}×{info.height}×{info.width}")
    return 0


def _setup_predict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    _model_arg(parser)
    parser.add_argument("--top", type=int, default=5, help="how many classes (default 5)")
    parser.add_argument("--mode", choices=["resize", "native"], default="resize")
    parser.add_argument("--json", action="store_true", help="print JSON")


@command("predict", "top-k classes for one or more images", _setup_predict)
def _run_predict(args: argparse.Namespace) -> int:
    from app.config import get_settings
    from app.engine.features import LOGITS, extract
    from app.engine.predictions import predict_from_logits

    if args.top < 1:
        raise ValueError(f"--top must be at least 1, got {args.top}")
    model = _get_model(args.model)
    quiet = len(args.images) < 2
    images = [
        _load_image(p) for p in tqdm(args.images, desc="decode", disable=quiet, file=sys.stderr)
    ]
    with tqdm(total=len(images), desc="predict", disable=quiet, file=sys.stderr) as bar:

        def advance(done: int, total: int) -> None:
            bar.update(done - bar.n)

        outputs = extract(
            model,
            images,
            [],
            mode=args.mode,
            with_logits=True,
            progress=advance,
            native_max_side=get_settings().native_max_side,
        )
    results = [
        {
            "image": path,
            "predictions": [vars(p) for p in predict_from_logits(model, out[LOGITS], args.top)],
        }
        for path, out in zip(args.images, outputs, strict=True)
    ]
    if args.json:
        _print_json(results)
    else:
        for result in results:
            print(result["image"])
            for p in result["predictions"]:
                print(f"  {p['probability']:7.2%}  {p['index']:>5}  {p['label']}")
    return 0


def _setup_heatmap(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE")
    _model_arg(parser)
    parser.add_argument("--layer", required=True, help="feature-map layer (see 'layers')")
    parser.add_argument("--method", default="gradcam", help="heat-map method (default gradcam)")
    parser.add_argument(
        "--target",
        type=int,
        default=None,
        help="class index to explain (default: the top prediction)",
    )
    parser.add_argument("--mode", choices=["resize", "native"], default="resize")
    parser.add_argument(
        "--box",
        type=parse_box,
        action="append",
        default=[],
        help="x,y,w,h in image pixels (repeatable)",
    )
    parser.add_argument(
        "--label", action="append", default=[], help="a label per --box, in order (repeatable)"
    )
    parser.add_argument("-o", "--output", required=True, help="overlay PNG to write")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")


@command("heatmap", "write a heat-map overlay with boxes and their scores", _setup_heatmap)
def _run_heatmap(args: argparse.Namespace) -> int:
    from app.boxes import check_box
    from app.config import get_settings
    from app.engine.heatmaps import compute_heatmap
    from app.engine.localisation import score_boxes
    from app.engine.overlay import render_overlay

    if len(args.label) > len(args.box):
        raise ValueError(f"{len(args.label)} --label for {len(args.box)} --box; give one per box")
    model = _get_model(args.model)
    image = _load_image(args.image)
    boxes = [check_box(box, image.width, image.height) for box in args.box]
    labels = list(args.label) + [""] * (len(boxes) - len(args.label))
    heat = compute_heatmap(
        model,
        image,
        args.layer,
        args.method,
        args.target,
        args.mode,
        native_max_side=get_settings().native_max_side,
    )
    scores = score_boxes(heat.values, boxes) if boxes else []
    captions = []
    for label, score in zip(labels, scores, strict=True):
        shown = " ".join(
            f"{k}={v:.2f}" for k, v in score.items() if k in ("energy", "pointing_game", "iou")
        )
        captions.append(f"{label} {shown}".strip())
    render_overlay(image.pixels, heat.values, boxes, captions).save(args.output, format="PNG")
    report = {
        "image": args.image,
        "output": args.output,
        "model": model.spec.name,
        "layer": args.layer,
        "method": heat.method,
        "target": heat.target,
        "target_label": heat.target_label,
        "boxes": [
            {"x": b.x, "y": b.y, "w": b.w, "h": b.h, "label": lab, "scores": s}
            for b, lab, s in zip(boxes, labels, scores, strict=True)
        ],
    }
    if args.json:
        _print_json(report)
    else:
        print(
            f"{args.output}: {heat.method} on {args.layer}, target {heat.target} "
            f"({heat.target_label})"
        )
        for entry in report["boxes"]:
            assert isinstance(entry, dict)
            values = ", ".join(f"{k}={v:.3f}" for k, v in entry["scores"].items())
            print(
                f"  box {entry['x']:g},{entry['y']:g},{entry['w']:g},{entry['h']:g} "
                f"{entry['label']}: {values}"
            )
    return 0


def _setup_extract(parser: argparse.ArgumentParser) -> None:
    _model_arg(parser)
    parser.add_argument(
        "--layers", required=True, help="comma-separated feature-map layers (see 'layers')"
    )
    parser.add_argument("--descriptor", choices=["gap", "grid", "pixels"], default="gap")
    parser.add_argument(
        "--grid-size", type=int, default=4, help="s of the s×s grid for grid and pixels (default 4)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="images per forward pass (default 16)"
    )
    parser.add_argument("--mode", choices=["resize", "native"], default="resize")
    parser.add_argument(
        "--labels", default=None, help="comma-separated box labels (default: every box)"
    )
    parser.add_argument("--data-dir", default=None, help="store location (FEATUREGAP_DATA_DIR)")
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run on a Ray cluster ('auto', 'ray://head:10001'; no ADDRESS: RAY_ADDRESS or a "
        "local Ray; default FEATUREGAP_RAY_ADDRESS); needs pip install -e '.[ray]'",
    )
    parser.add_argument(
        "--ray-actors", type=int, default=None, help="Ray actors, one model each (default 2)"
    )
    parser.add_argument(
        "--ray-gpus", type=float, default=None, help="GPUs per Ray actor (default 0)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


@command("extract", "extract box descriptors in batches into the feature store", _setup_extract)
def _run_extract(args: argparse.Namespace) -> int:
    import os
    from dataclasses import asdict

    from app.config import get_settings
    from app.service.backends import backend
    from app.store import Store

    layers = [layer.strip() for layer in args.layers.split(",") if layer.strip()]
    if not layers:
        raise ValueError("--layers names no layer; give e.g. --layers blocks.5.0.conv_pw,conv_head")
    if args.data_dir:
        os.environ["FEATUREGAP_DATA_DIR"] = str(args.data_dir)
        get_settings.cache_clear()
    settings = get_settings()
    overrides = {"ray_actors": args.ray_actors, "ray_gpus_per_actor": args.ray_gpus}
    settings = settings.model_copy(
        update={key: value for key, value in overrides.items() if value is not None}
    )
    run = backend(settings, args.ray)
    model = _get_model(args.model)
    store = Store(settings)
    try:
        labels = (
            None
            if args.labels is None
            else [label.strip() for label in args.labels.split(",") if label.strip()]
        )
        boxes = store.boxes(labels=labels)
        with tqdm(total=100, desc="extract", unit="%", file=sys.stderr, disable=not boxes) as bar:

            def advance(fraction: float, message: str) -> None:
                bar.set_postfix_str(message, refresh=False)
                bar.update(round(fraction * 100) - bar.n)

            report = run(
                store,
                model,
                boxes,
                layers,
                args.descriptor,
                args.grid_size,
                args.mode,
                args.batch_size,
                progress=advance,
            )
        store.features.compact()
    finally:
        store.close()
    if args.json:
        _print_json(asdict(report))
    else:
        print(
            f"{report.boxes} boxes × {report.layers} layers: {report.extracted} extracted "
            f"from {report.images} images, {report.present} already stored "
            f"({report.seconds:.1f}s)"
        )
    return 0


def _setup_stats(parser: argparse.ArgumentParser) -> None:
    _model_arg(parser)
    parser.add_argument("--layer", required=True, help="one feature-map layer (see 'layers')")
    parser.add_argument("--descriptor", choices=["gap", "pixels"], default="gap")
    parser.add_argument("--grid-size", type=int, default=4, help="s of the s×s grid for pixels")
    parser.add_argument("--mode", choices=["resize", "native"], default="resize")
    parser.add_argument(
        "--measures",
        default="euclidean,std_euclidean,mahalanobis",
        help="comma-separated: euclidean, std_euclidean, mahalanobis (default: all three)",
    )
    parser.add_argument(
        "--labels", default=None, help="comma-separated box labels (default: every box)"
    )
    parser.add_argument("--shard-boxes", type=int, default=4096, help="boxes per shard")
    parser.add_argument(
        "--mmd",
        type=int,
        default=0,
        metavar="FEATURES",
        help="also MMD² (seed/DAN multi-kernel) from per-shard sums of FEATURES random "
        "Fourier features per bandwidth (an estimate; e.g. 4096)",
    )
    parser.add_argument("--mmd-estimator", choices=["biased", "unbiased"], default="biased")
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="reduce the shards as Ray tasks (the feature folder must be on shared storage)",
    )
    parser.add_argument("--data-dir", default=None, help="store location (FEATUREGAP_DATA_DIR)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


@command(
    "stats",
    "per-label means/covariances of stored descriptors, reduced per shard, and the distances",
    _setup_stats,
)
def _run_stats(args: argparse.Namespace) -> int:
    import os

    from app.config import get_settings
    from app.engine.moments import MEASURES, distance_matrix
    from app.service.extraction import feature_sets
    from app.service.statistics import label_mmd, label_statistics
    from app.store import Store

    measures = [m.strip() for m in args.measures.split(",") if m.strip()]
    unknown = sorted(set(measures) - set(MEASURES))
    if unknown or not measures:
        raise ValueError(f"--measures: unknown {unknown}; use some of {sorted(MEASURES)}")
    if args.data_dir:
        os.environ["FEATUREGAP_DATA_DIR"] = str(args.data_dir)
        get_settings.cache_clear()
    model = _get_model(args.model)
    store = Store(get_settings())
    try:
        labels = (
            None
            if args.labels is None
            else [label.strip() for label in args.labels.split(",") if label.strip()]
        )
        boxes = store.boxes(labels=labels)
        chosen = feature_sets(
            store, model, [args.layer], args.descriptor, args.grid_size, args.mode
        )[args.layer]
        with tqdm(total=100, desc="stats", unit="%", file=sys.stderr, disable=not boxes) as bar:

            def advance(fraction: float, message: str) -> None:
                bar.set_postfix_str(message, refresh=False)
                bar.update(round(fraction * 100) - bar.n)

            stats = label_statistics(
                store,
                chosen,
                boxes,
                shard_boxes=args.shard_boxes,
                ray_address=args.ray,
                progress=advance,
            )
        mmd = None
        if args.mmd:
            with tqdm(total=100, desc="mmd", unit="%", file=sys.stderr) as bar:

                def advance_mmd(fraction: float, message: str) -> None:
                    bar.set_postfix_str(message, refresh=False)
                    bar.update(round(fraction * 100) - bar.n)

                mmd = label_mmd(
                    store,
                    chosen,
                    boxes,
                    features=args.mmd,
                    estimator=args.mmd_estimator,
                    shard_boxes=args.shard_boxes,
                    ray_address=args.ray,
                    progress=advance_mmd,
                )
    finally:
        store.close()
    names = list(stats.moments)
    result = {
        "layer": args.layer,
        "descriptor": args.descriptor,
        "boxes": stats.boxes,
        "rows": stats.rows,
        "shards": stats.shards,
        "labels": [{"label": n, "rows": stats.moments[n].count} for n in names],
        "distances": {m: distance_matrix(stats.moments, m).tolist() for m in measures},
    }
    if mmd is not None:
        measures = [*measures, "mmd"]
        result["distances"]["mmd"] = mmd[1].tolist()
        result["mmd"] = {"features": args.mmd, "estimator": args.mmd_estimator}
        result["mmd"]["kernel_scales"] = list(mmd[2])
    if args.json:
        _print_json(result)
    else:
        print(f"{stats.boxes} boxes, {stats.rows} rows in {stats.shards} shards at {args.layer}")
        for measure in measures:
            print(f"{measure}:")
            print("  " + "\t".join(["", *names]))
            for name, row in zip(names, result["distances"][measure], strict=True):
                print("  " + "\t".join([name, *(f"{v:.4g}" for v in row)]))
    return 0


def _setup_import(parser: argparse.ArgumentParser) -> None:
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    coco = formats.add_parser("coco", help="a COCO JSON file and its images folder")
    coco.add_argument("annotations", metavar="ANNOTATIONS.json")
    coco.add_argument(
        "--images",
        required=True,
        metavar="DIR",
        help="the images folder (file_name is relative to it)",
    )
    voc = formats.add_parser(
        "voc", help="a Pascal VOC folder (Annotations/ + JPEGImages/, or XML beside the images)"
    )
    voc.add_argument("folder", metavar="DIR")
    voc.add_argument(
        "--images",
        default=None,
        metavar="DIR",
        help="the images folder (default: DIR/JPEGImages or beside the XML)",
    )
    yolo = formats.add_parser("yolo", help="a YOLO folder (images/ + labels/)")
    yolo.add_argument("folder", metavar="DIR")
    yolo.add_argument(
        "--classes", required=True, metavar="FILE", help="class names, one per line (index 0 first)"
    )
    for child in (coco, voc, yolo):
        child.add_argument(
            "--report",
            default=None,
            metavar="FILE",
            help="write the summary with every skipped annotation as JSON",
        )
        child.add_argument(
            "--data-dir", default=None, help="store location (default: FEATUREGAP_DATA_DIR)"
        )
        child.add_argument("--quiet", action="store_true", help="no progress bar")


@command("import", "import a COCO, VOC or YOLO dataset from disk into the store", _setup_import)
def _run_import(args: argparse.Namespace) -> int:
    from app.config import get_settings
    from app.service import datasets
    from app.store import Store

    settings = get_settings()
    if args.data_dir:
        settings = settings.model_copy(update={"data_dir": Path(args.data_dir).expanduser()})
    classes = datasets.read_classes(Path(args.classes)) if args.format == "yolo" else []
    store = Store(settings)
    bars: list[tqdm[Any]] = []  # opened on the first image, so an early error prints no bar

    def advance(done: int, total: int) -> None:
        if not bars:
            bars.append(
                tqdm(
                    total=total,
                    desc=f"import {args.format}",
                    unit="img",
                    disable=args.quiet,
                    file=sys.stderr,
                )
            )
        bars[0].update(done - bars[0].n)

    try:
        if args.format == "coco":
            summary = datasets.import_coco_dataset(
                store, Path(args.annotations), Path(args.images), advance
            )
        elif args.format == "voc":
            summary = datasets.import_voc_dataset(
                store, Path(args.folder), Path(args.images) if args.images else None, advance
            )
        else:
            summary = datasets.import_yolo_dataset(store, Path(args.folder), classes, advance)
    finally:
        for bar in bars:
            bar.close()
        store.close()
    report = summary.as_dict()
    if args.report:
        Path(args.report).write_text(
            json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    print(
        f"images: {summary.images_added} added, {summary.images_present} already stored "
        f"(same bytes); boxes: {summary.boxes_added} added, {summary.boxes_present} already "
        f"there; {summary.annotations_skipped} annotations skipped"
    )
    reasons: Counter[str] = Counter()
    for item in summary.skipped:
        reasons[item.reason] += item.annotations
    for reason, count in reasons.most_common(10):
        print(f"  {count} skipped: {reason}")
    if len(reasons) > 10:
        print(
            f"  … {len(reasons) - 10} more reasons"
            + (f" in {args.report}" if args.report else "; --report FILE lists every one")
        )
    return 0


def _setup_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--demo", action="store_true", help="load the demo photos and boxes into an empty store"
    )
    parser.add_argument("--data-dir", default=None, help="store location (FEATUREGAP_DATA_DIR)")


@command("serve", "run the web dashboard and REST API (uvicorn)", _setup_serve)
def _run_serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from app.config import get_settings

    # uvicorn builds the app through the factory, which reads the settings from the environment.
    if args.data_dir:
        os.environ["FEATUREGAP_DATA_DIR"] = str(args.data_dir)
    if args.demo:
        os.environ["FEATUREGAP_DEMO"] = "1"
    os.environ["FEATUREGAP_SERVE_HOST"] = args.host  # an allowed Host header from now on
    get_settings.cache_clear()
    get_settings()  # bad settings (an empty API token) stop here with their message
    uvicorn.run("app.main:create_app", factory=True, host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="featuregap", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, entry in COMMANDS.items():
        child = sub.add_parser(name, help=entry.help, description=entry.help)
        entry.setup(child)
        child.set_defaults(_run=entry.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input)."""
    from app.errors import FeatureGapError

    args = build_parser().parse_args(argv)
    try:
        status: int = args._run(args)
    except (ValueError, KeyError, FeatureGapError) as exc:  # a budget or limit: said, not raised
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"featuregap {args.command}: error: {message}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
