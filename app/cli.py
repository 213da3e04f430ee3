"""The ``featuregap`` command line: models, layers, heat maps, dataset import, extraction.

Batched extraction (``extract``) writes box descriptors into the store's feature store.
Torch is imported only by the commands that run a model: ``models``, ``layers`` and
``--help`` answer from :mod:`app.catalog`'s on-disk cache once it is warm.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

__all__ = ["COMMANDS", "Command", "catalog_value", "command", "main", "parse_box"]

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


def _mode_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mode",
        choices=["resize", "native"],
        default="resize",
        help="resize: the image to the model's input size (default); native: keep its "
        "aspect ratio, longest side up to FEATUREGAP_NATIVE_MAX_SIDE (finer maps)",
    )


_DESCRIPTORS = {
    "gap": "the layer's channels averaged over the box (one vector per box)",
    "grid": "the box resampled to an s×s grid and flattened (keeps the layout)",
    "pixels": "the s×s grid's vectors as a set of samples (for MMD, Grassmann)",
}


def _descriptor_arg(parser: argparse.ArgumentParser, kinds: Sequence[str]) -> None:
    parser.add_argument(
        "--descriptor",
        choices=list(kinds),
        default="gap",
        help="; ".join(f"{k}: {_DESCRIPTORS[k]}" for k in kinds) + " (default gap)",
    )


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


def _catalog(key: str, compute: Callable[[], Any]) -> Any:
    """``compute()``, cached on disk by :func:`app.catalog.cached`."""
    from app.catalog import cached
    from app.config import get_settings

    settings = get_settings()
    return cached(settings.data_dir, settings.models_dir, key, compute)


def _model_rows() -> list[dict[str, Any]]:
    from app.config import get_settings
    from app.engine.models import list_models

    return [
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


def _method_rows() -> list[dict[str, Any]]:
    from app.engine.cams import METHODS

    return [{"name": name, "needs_target": cls.needs_target} for name, cls in METHODS.items()]


def _measure_rows() -> list[dict[str, Any]]:
    from app.engine.measures import list_measures

    return [
        {"name": m["name"], "higher_is_better": m["higher_is_better"], "needs": m["needs"]}
        for m in list_measures()
    ]


def _layer_rows(model: str) -> list[dict[str, Any]]:
    from app.engine.layers import list_layers

    return [vars(info) for info in list_layers(_get_model(model))]


def catalog_value(key: str) -> Any:
    """What the command line lists under ``key``, computed live (imports torch).

    Args:
        key: ``"models"``, ``"methods"``, ``"measures"`` or ``"layers:<model>"``.

    Raises:
        KeyError: an unknown key, or (``layers:``) an unknown model.
    """
    if key.startswith("layers:"):
        return _layer_rows(key.removeprefix("layers:"))
    rows = {"models": _model_rows, "methods": _method_rows, "measures": _measure_rows}
    if key not in rows:
        raise KeyError(f"no catalog entry {key!r}; use models, methods, measures or layers:<model>")
    return rows[key]()


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


def _answer(as_json: bool, value: object, text: Callable[[], Iterable[str]]) -> int:
    """Print a command's result, as JSON (``--json``) or as the lines ``text()`` makes of
    it for a person; the command's exit status (0)."""
    if as_json:
        _print_json(value)
    else:
        for line in text():
            print(line)
    return 0


def _names(text: str | None) -> list[str] | None:
    """A comma-separated option as a list of its non-empty names (``None`` stays ``None``)."""
    if text is None:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


def _store_settings(data_dir: str | None, models_dir: str | None = None) -> Any:
    """The settings, with ``--data-dir`` / ``--models-dir`` (when given) as
    ``FEATUREGAP_DATA_DIR`` / ``FEATUREGAP_MODELS_DIR``."""
    import os

    from app.config import get_settings

    for flag, env in ((data_dir, "DATA_DIR"), (models_dir, "MODELS_DIR")):
        if flag:
            os.environ[f"FEATUREGAP_{env}"] = str(flag)
            get_settings.cache_clear()
    return get_settings()


@contextmanager
def _fraction_bar(desc: str, enabled: bool = True) -> Iterator[Callable[[float, str], None]]:
    """A percent bar on stderr, fed ``(fraction done, message)`` as the services report."""
    with tqdm(total=100, desc=desc, unit="%", file=sys.stderr, disable=not enabled) as bar:

        def advance(fraction: float, message: str) -> None:
            bar.set_postfix_str(message, refresh=False)
            bar.update(round(fraction * 100) - bar.n)

        yield advance


def _setup_models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


@command("models", "list registered and discovered models", _setup_models)
def _run_models(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = _catalog("models", _model_rows)
    return _answer(
        args.json,
        rows,
        lambda: (
            f"{row['name']:<24} {row['source']}:{row['architecture']:<28} "
            f"{row['input_size']}px {row['classes']} classes  {row['description']}"
            for row in rows
        ),
    )


def _setup_layers(parser: argparse.ArgumentParser) -> None:
    _model_arg(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")


@command("layers", "list a model's feature-map layers with their shapes", _setup_layers)
def _run_layers(args: argparse.Namespace) -> int:
    from app.config import get_settings

    key = f"layers:{args.model or get_settings().default_model}"
    rows: list[dict[str, Any]] = _catalog(key, lambda: catalog_value(key))
    return _answer(
        args.json,
        rows,
        lambda: (f"{r['name']:<40} {r['channels']}×{r['height']}×{r['width']}" for r in rows),
    )


def _setup_predict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    _model_arg(parser)
    parser.add_argument("--top", type=int, default=5, help="how many classes (default 5)")
    _mode_arg(parser)
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

    def text() -> Iterator[str]:
        for result in results:
            yield result["image"]
            for p in result["predictions"]:
                yield f"  {p['probability']:7.2%}  {p['index']:>5}  {p['label']}"

    return _answer(args.json, results, text)


_SCALING = {
    "none": "raw values",
    "minmax": "min-max scaled to [0, 1]",
    "percentile": "/ 99th percentile of |value|, clipped to [-1, 1]",
}


def _setup_heatmap(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE")
    _model_arg(parser)
    parser.add_argument("--layer", required=True, help="feature-map layer (see 'layers')")
    parser.add_argument(
        "--method", default="gradcam", help="heat-map method (default gradcam; listed below)"
    )
    parser.add_argument(
        "--target",
        type=int,
        default=None,
        help="class index to explain (default: the top prediction; class methods only)",
    )
    parser.add_argument(
        "--channel", type=int, default=None, help="the channel to show (method 'channel')"
    )
    _mode_arg(parser)
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.5,
        help="opacity of the heat map over the image, 0..1 (default 0.5)",
    )
    parser.add_argument(
        "--normalise",
        choices=list(_SCALING),
        default="minmax",
        help="display scaling of the map; the scores always use the raw map (default minmax)",
    )
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
    parser.add_argument(
        "-o", "--output", required=True, help="PNG to write: title, overlay and colour bar"
    )
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")


def _explained(heat: Any) -> str:
    """``"target: tabby cat (281)"``, or what a reduction shows instead of a class."""
    if heat.target is None:
        return "no class (a channel reduction)"
    named = f"{heat.target_label} ({heat.target})" if heat.target_label else str(heat.target)
    return f"target: {named}"


@command("heatmap", "write a heat-map overlay with boxes and their scores", _setup_heatmap)
def _run_heatmap(args: argparse.Namespace) -> int:
    from app.boxes import check_box
    from app.config import get_settings
    from app.engine.colorbar import frame_overlay
    from app.engine.heatmaps import compute_heatmap, normalise
    from app.engine.localisation import score_boxes
    from app.engine.overlay import render_overlay
    from app.palette import UNKNOWN, label_colours

    if len(args.label) > len(args.box):
        raise ValueError(f"{len(args.label)} --label for {len(args.box)} --box; give one per box")
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must lie in [0, 1], got {args.alpha}")
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
        args.channel,
        native_max_side=get_settings().native_max_side,
    )
    scores = score_boxes(heat.values, boxes) if boxes else []
    captions = []
    for label, score in zip(labels, scores, strict=True):
        shown = " ".join(
            f"{k}={v:.2f}" for k, v in score.items() if k in ("energy", "pointing_game", "iou")
        )
        captions.append(f"{label} {shown}".strip())
    shown_map = normalise(heat.values, args.normalise)
    # The page's colours: by rank among the labels, here those of the boxes given.
    palette = label_colours(label for label in labels if label)
    colours = [palette.get(label, UNKNOWN) for label in labels]
    overlay = render_overlay(image.pixels, shown_map, boxes, captions, args.alpha, colours)
    what = heat.method + (f" channel {args.channel}" if args.channel is not None else "")
    framed = frame_overlay(
        overlay,
        float(shown_map.min()),
        float(shown_map.max()),
        f"{model.spec.name} · {args.layer} · {what} · {_explained(heat)}",
        f"{what} ({_SCALING[args.normalise]})",
    )
    framed.image.save(args.output, format="PNG")
    report = {
        "image": args.image,
        "output": args.output,
        "model": model.spec.name,
        "layer": args.layer,
        "method": heat.method,
        "target": heat.target,
        "target_label": heat.target_label,
        "normalise": args.normalise,
        "overlay_at": {
            "x": framed.left,
            "y": framed.top,
            "w": overlay.width,
            "h": overlay.height,
        },
        "boxes": [
            {"x": b.x, "y": b.y, "w": b.w, "h": b.h, "label": lab, "scores": s}
            for b, lab, s in zip(boxes, labels, scores, strict=True)
        ],
    }

    def text() -> Iterator[str]:
        yield f"{args.output}: {heat.method} on {args.layer}, {_explained(heat)}"
        for entry in report["boxes"]:
            assert isinstance(entry, dict)
            values = ", ".join(f"{k}={v:.3f}" for k, v in entry["scores"].items())
            yield (
                f"  box {entry['x']:g},{entry['y']:g},{entry['w']:g},{entry['h']:g} "
                f"{entry['label']}: {values}"
            )

    return _answer(args.json, report, text)


def _ray_arg(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--ray [ADDRESS]``: no ADDRESS means ``local`` (RAY_ADDRESS or a local Ray)."""
    parser.add_argument(
        "--ray", nargs="?", const="local", default=None, metavar="ADDRESS", help=help_text
    )


def _setup_extract(parser: argparse.ArgumentParser) -> None:
    _model_arg(parser)
    parser.add_argument(
        "--layers", required=True, help="comma-separated feature-map layers (see 'layers')"
    )
    _descriptor_arg(parser, ["gap", "grid", "pixels"])
    parser.add_argument(
        "--grid-size", type=int, default=4, help="s of the s×s grid for grid and pixels (default 4)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="images per forward pass (default 16)"
    )
    _mode_arg(parser)
    parser.add_argument(
        "--labels", default=None, help="comma-separated box labels (default: every box)"
    )
    parser.add_argument("--data-dir", default=None, help="store location (FEATUREGAP_DATA_DIR)")
    _ray_arg(
        parser,
        "run on a Ray cluster ('auto', 'ray://head:10001'; no ADDRESS: RAY_ADDRESS or a "
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
    from dataclasses import asdict

    from app.service.backends import backend
    from app.store import Store

    layers = _names(args.layers)
    if not layers:
        raise ValueError("--layers names no layer; give e.g. --layers blocks.5.0.conv_pw,conv_head")
    settings = _store_settings(args.data_dir)
    overrides = {"ray_actors": args.ray_actors, "ray_gpus_per_actor": args.ray_gpus}
    settings = settings.model_copy(
        update={key: value for key, value in overrides.items() if value is not None}
    )
    run = backend(settings, args.ray)
    model = _get_model(args.model)
    store = Store(settings)
    try:
        boxes = store.boxes(labels=_names(args.labels))
        with _fraction_bar("extract", enabled=bool(boxes)) as advance:
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
    return _answer(
        args.json,
        asdict(report),
        lambda: [
            f"{report.boxes} boxes × {report.layers} layers: {report.extracted} extracted "
            f"from {report.images} images, {report.present} already stored "
            f"({report.seconds:.1f}s)"
        ],
    )


def _setup_stats(parser: argparse.ArgumentParser) -> None:
    _model_arg(parser)
    parser.add_argument("--layer", required=True, help="one feature-map layer (see 'layers')")
    _descriptor_arg(parser, ["gap", "pixels"])
    parser.add_argument("--grid-size", type=int, default=4, help="s of the s×s grid for pixels")
    _mode_arg(parser)
    parser.add_argument(
        "--measures",
        default="euclidean,std_euclidean,mahalanobis",
        help="comma-separated: euclidean, std_euclidean, mahalanobis (default: all three; "
        "distances between label means: higher = farther apart)",
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
    parser.add_argument(
        "--mmd-estimator",
        choices=["biased", "unbiased"],
        default="biased",
        help="biased: V-statistic, never negative (default); unbiased: U-statistic, may be "
        "negative when the labels do not differ",
    )
    _ray_arg(
        parser, "reduce the shards as Ray tasks (the feature folder must be on shared storage)"
    )
    parser.add_argument("--data-dir", default=None, help="store location (FEATUREGAP_DATA_DIR)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


@command(
    "stats",
    "per-label means/covariances of stored descriptors, reduced per shard, and the distances",
    _setup_stats,
)
def _run_stats(args: argparse.Namespace) -> int:
    from app.engine.moments import MEASURES, distance_matrix
    from app.service.extraction import feature_sets
    from app.service.statistics import label_mmd, label_statistics
    from app.store import Store

    measures = _names(args.measures) or []
    unknown = sorted(set(measures) - set(MEASURES))
    if unknown or not measures:
        raise ValueError(f"--measures: unknown {unknown}; use some of {sorted(MEASURES)}")
    settings = _store_settings(args.data_dir)
    model = _get_model(args.model)
    store = Store(settings)
    try:
        boxes = store.boxes(labels=_names(args.labels))
        chosen = feature_sets(
            store, model, [args.layer], args.descriptor, args.grid_size, args.mode
        )[args.layer]
        with _fraction_bar("stats", enabled=bool(boxes)) as advance:
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
            with _fraction_bar("mmd") as advance_mmd:
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

    def text() -> Iterator[str]:
        yield f"{stats.boxes} boxes, {stats.rows} rows in {stats.shards} shards at {args.layer}"
        for measure in measures:
            yield f"{measure}:"
            yield "  " + "\t".join(["", *names])
            for name, row in zip(names, result["distances"][measure], strict=True):
                yield "  " + "\t".join([name, *(f"{v:.4g}" for v in row)])

    return _answer(args.json, result, text)


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
    import threading
    import time

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
    server = uvicorn.Server(
        uvicorn.Config("app.main:create_app", factory=True, host=args.host, port=args.port)
    )
    shown = "localhost" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{args.port}/"

    def announce() -> None:
        """One line once the app answers (the model and demo load first): where to go."""
        while not server.started and not server.should_exit:
            time.sleep(0.1)
        if server.started:
            print(f"FeatureGap is ready: open {url} (Ctrl+C stops it)", flush=True)

    threading.Thread(target=announce, name="featuregap-ready", daemon=True).start()
    try:
        server.run()
    except KeyboardInterrupt:  # as uvicorn.run does: Ctrl+C is the way to stop
        pass
    return 0


def _catalog_epilog() -> str:
    """The heat-map methods and measures, for ``--help`` (cached: no torch when warm)."""
    methods: list[dict[str, Any]] = _catalog("methods", _method_rows)
    measures: list[dict[str, Any]] = _catalog("measures", _measure_rows)
    explain = [m["name"] for m in methods if m["needs_target"]]
    reduce = [m["name"] for m in methods if not m["needs_target"]]
    lines = [
        "heat-map methods (--method):",
        f"  explain a class (--target): {', '.join(explain)}",
        f"  reduce the layer's channels: {', '.join(reduce)} ('channel' needs --channel)",
        "measures (dashboard and API; direction, descriptor consumed):",
    ]
    for m in measures:
        direction = "higher = more alike" if m["higher_is_better"] else "higher = farther apart"
        lines.append(f"  {m['name']:<20} {direction}, on {m['needs']}")
    lines.append("descriptors (what a measure consumes from a box; --descriptor):")
    lines += [f"  {name:<8} {text}" for name, text in _DESCRIPTORS.items()]
    return "\n".join(lines)


def build_parser(epilog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand.

    Args:
        epilog: text under the top-level and ``heatmap`` help (the methods and measures).
    """
    from app.cli_train import TRAIN  # in its own file (training's CLI)

    COMMANDS.setdefault("train", TRAIN)

    parser = argparse.ArgumentParser(
        prog="featuregap",
        description=__doc__.splitlines()[0].replace("``", ""),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, entry in COMMANDS.items():
        child = sub.add_parser(
            name,
            help=entry.help,
            description=entry.help,
            epilog=epilog if name == "heatmap" else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        entry.setup(child)
        child.set_defaults(_run=entry.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input)."""
    from app.errors import FeatureGapError

    words = list(sys.argv[1:] if argv is None else argv)
    # Only help lists the methods and measures: the registries are not read otherwise.
    wants_help = not words or any(w in ("-h", "--help") for w in words)
    args = build_parser(_catalog_epilog() if wants_help else None).parse_args(words)
    try:
        status: int = args._run(args)
    except (ValueError, KeyError, FeatureGapError) as exc:  # a budget or limit: said, not raised
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"featuregap {args.command}: error: {message}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
