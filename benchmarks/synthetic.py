"""A synthetic detection dataset whose answers are known: photos pasted onto textures.

Crops of scikit-image's photos (astronaut, cat, coffee, rocket, horse, motorcycle) are
pasted at random places and scales onto random crops of its textures (brick, grass,
gravel), and the boxes are written as COCO JSON, Pascal VOC XML and YOLO txt. The domain
switch renders the same kind of scenes in colour or greyscale-and-blurred, so "how far
apart are the two domains at layer L" has a known, non-zero answer, and "are classes
separated" a known yes. Everything is seeded: the same call writes the same bytes.

``from benchmarks.synthetic import make_dataset`` (tests and benchmarks use it)::

    dataset = make_dataset(tmp_path / "ds", images=20, boxes_per_image=5, seed=1)
    dataset.coco        # annotations.json, file names relative to dataset.images_dir
    dataset.voc_dir     # Annotations/*.xml + JPEGImages/
    dataset.yolo_dir    # images/ + labels/ + classes.txt
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageFilter

from app.formats.coco import CocoImage, write_coco
from app.formats.records import LabeledBox
from app.formats.voc import write_voc
from app.formats.yolo import write_yolo

__all__ = [
    "CLASSES",
    "TEXTURES",
    "Domain",
    "SyntheticDataset",
    "coco_annotations",
    "make_dataset",
    "main",
]

CLASSES = ("astronaut", "cat", "coffee", "rocket", "horse", "motorcycle")
"""The object classes, in YOLO index order."""

TEXTURES = ("brick", "grass", "gravel")
"""The background textures."""

Domain = Literal["colour", "grey"]

_SOURCE_SIDE = 160  # photos are shrunk once to this longest side; pasted objects are smaller
_MIN_SIDE, _MAX_SIDE = 24, 120  # the pasted object's longest side, in pixels
_FIRST_ANNOTATION_ID, _ID_STEP = 1000, 3  # ids unlike the store's, so a round trip shows them


@dataclass(frozen=True)
class SyntheticDataset:
    """Where a generated dataset lies, and what it holds (the ground truth).

    Attributes:
        root: the folder everything was written to.
        images_dir: the images (JPEG); COCO ``file_name`` is relative to it.
        coco: the COCO JSON file (``None`` when COCO was not asked for).
        voc_dir: ``Annotations/`` + ``JPEGImages/`` (hard links to the images), or None.
        yolo_dir: ``images/`` + ``labels/`` + ``classes.txt``, or None.
        classes_file: ``classes.txt`` of the YOLO layout, or None.
        file_names: the images' file names, in COCO id order (ids 1, 2, …).
        boxes: ``(annotation id, file name, box)`` in COCO order; boxes are whole pixels.
        domain: ``"colour"`` or ``"grey"``.
    """

    root: Path
    images_dir: Path
    coco: Path | None
    voc_dir: Path | None
    yolo_dir: Path | None
    classes_file: Path | None
    file_names: list[str]
    boxes: list[tuple[int, str, LabeledBox]]
    domain: Domain


@lru_cache(maxsize=1)
def _sources() -> dict[str, Image.Image]:
    """Each class's photo as an RGB image, shrunk once to :data:`_SOURCE_SIDE`."""
    from skimage import data

    horse = np.asarray(data.horse())  # True is the background
    photos = {
        "astronaut": np.asarray(data.astronaut())[20:340, 120:400],
        "cat": np.asarray(data.chelsea())[20:300, 60:360],
        "coffee": np.asarray(data.coffee())[20:360, 60:460],
        "rocket": np.asarray(data.rocket())[20:420, 220:420],
        "horse": np.where(horse[..., None], [235, 225, 200], [110, 60, 20]).astype(np.uint8),
        "motorcycle": np.asarray(data.stereo_motorcycle()[0])[60:460, 60:700],
    }
    out = {}
    for name in CLASSES:
        image = Image.fromarray(np.ascontiguousarray(photos[name][..., :3]))
        image.thumbnail((_SOURCE_SIDE, _SOURCE_SIDE), Image.Resampling.LANCZOS)
        out[name] = image.convert("RGB")
    return out


@lru_cache(maxsize=1)
def _textures() -> list[np.ndarray]:
    from skimage import data

    return [np.asarray(getattr(data, name)()) for name in TEXTURES]


def _scene(
    rng: np.random.Generator, size: tuple[int, int], count: int, domain: Domain
) -> tuple[Image.Image, list[LabeledBox]]:
    width, height = size
    texture = _textures()[int(rng.integers(len(TEXTURES)))]
    top = int(rng.integers(texture.shape[0] - height + 1)) if texture.shape[0] > height else 0
    left = int(rng.integers(texture.shape[1] - width + 1)) if texture.shape[1] > width else 0
    background = Image.fromarray(texture[top : top + height, left : left + width]).convert("RGB")
    canvas = background.resize(size) if background.size != size else background
    boxes = []
    for _ in range(count):
        label = CLASSES[int(rng.integers(len(CLASSES)))]
        source = _sources()[label]
        side = int(rng.integers(_MIN_SIDE, min(_MAX_SIDE, width, height) + 1))
        scale = side / max(source.size)
        w = max(8, round(source.width * scale))
        h = max(8, round(source.height * scale))
        x = int(rng.integers(0, width - w + 1))
        y = int(rng.integers(0, height - h + 1))
        canvas.paste(source.resize((w, h), Image.Resampling.BILINEAR), (x, y))
        boxes.append(LabeledBox(float(x), float(y), float(w), float(h), label))
    if domain == "grey":
        canvas = canvas.convert("L").filter(ImageFilter.GaussianBlur(1.5)).convert("RGB")
    return canvas, boxes


def _link(source: Path, target: Path) -> None:
    """A hard link where the file system allows one (no second copy of the bytes)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def make_dataset(
    root: str | Path,
    images: int = 20,
    boxes_per_image: int = 5,
    *,
    seed: int = 0,
    domain: Domain = "colour",
    size: tuple[int, int] = (320, 240),
    formats: Sequence[str] = ("coco", "voc", "yolo"),
    prefix: str | None = None,
) -> SyntheticDataset:
    """Write a seeded synthetic dataset: JPEG images and their boxes in COCO, VOC and YOLO.

    Args:
        root: the folder to write into (created; files of the same names are replaced).
        images: how many images.
        boxes_per_image: objects pasted into each image (they may overlap).
        seed: the random seed; the same arguments write the same bytes.
        domain: ``"colour"``, or ``"grey"`` (greyscale and Gaussian-blurred, radius 1.5).
        size: ``(width, height)`` of every image.
        formats: which of ``"coco"``, ``"voc"``, ``"yolo"`` to write.
        prefix: file-name prefix (default: the domain and seed), so two domains or seeds
            written into one store do not share names.

    Returns:
        Where everything was written and the ground-truth boxes.

    Raises:
        ValueError: an unknown domain or format, or sizes that leave no room for objects.
    """
    if domain not in ("colour", "grey"):
        raise ValueError(f"unknown domain {domain!r}; use 'colour' or 'grey'")
    unknown = set(formats) - {"coco", "voc", "yolo"}
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; use coco, voc and/or yolo")
    if images < 0 or boxes_per_image < 0 or min(size) < _MIN_SIDE:
        raise ValueError(
            f"need images >= 0, boxes_per_image >= 0 and both sides of size "
            f">= {_MIN_SIDE}, got {images}, {boxes_per_image}, {size}"
        )
    root = Path(root)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    prefix = f"{domain}-{seed}-" if prefix is None else prefix
    rng = np.random.default_rng(seed)
    file_names: list[str] = []
    boxes: list[tuple[int, str, LabeledBox]] = []
    per_image: list[list[LabeledBox]] = []
    for index in range(images):
        picture, scene_boxes = _scene(rng, size, boxes_per_image, domain)
        name = f"{prefix}{index:05d}.jpg"
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=90)
        (images_dir / name).write_bytes(buffer.getvalue())
        file_names.append(name)
        per_image.append(scene_boxes)
        for box in scene_boxes:
            boxes.append((_FIRST_ANNOTATION_ID + _ID_STEP * len(boxes), name, box))
    width, height = size
    coco = voc_dir = yolo_dir = classes_file = None
    if "coco" in formats:
        ids = {name: i + 1 for i, name in enumerate(file_names)}
        document = write_coco(
            [CocoImage(ids[n], n, width, height) for n in file_names],
            [(box_id, ids[name], box) for box_id, name, box in boxes],
        )
        coco = root / "annotations.json"
        coco.write_text(json.dumps(document))
    if "voc" in formats:
        voc_dir = root / "voc"
        (voc_dir / "Annotations").mkdir(parents=True, exist_ok=True)
        (voc_dir / "JPEGImages").mkdir(exist_ok=True)
        for name, scene_boxes in zip(file_names, per_image, strict=True):
            target = voc_dir / "JPEGImages" / name
            target.unlink(missing_ok=True)
            _link(images_dir / name, target)
            (voc_dir / "Annotations" / f"{Path(name).stem}.xml").write_text(
                write_voc(name, width, height, scene_boxes), encoding="utf-8"
            )
    if "yolo" in formats:
        yolo_dir = root / "yolo"
        (yolo_dir / "images").mkdir(parents=True, exist_ok=True)
        (yolo_dir / "labels").mkdir(exist_ok=True)
        classes_file = yolo_dir / "classes.txt"
        classes_file.write_text("".join(f"{name}\n" for name in CLASSES))
        for name, scene_boxes in zip(file_names, per_image, strict=True):
            target = yolo_dir / "images" / name
            target.unlink(missing_ok=True)
            _link(images_dir / name, target)
            lines = write_yolo(width, height, list(enumerate(scene_boxes)), CLASSES)
            (yolo_dir / "labels" / f"{Path(name).stem}.txt").write_text(lines)
    return SyntheticDataset(
        root, images_dir, coco, voc_dir, yolo_dir, classes_file, file_names, boxes, domain
    )


def coco_annotations(document: dict[str, Any]) -> set[tuple[Any, ...]]:
    """``(annotation id, file name, category name, x, y, w, h)`` of every annotation of a COCO
    document: what an import followed by an export must give back."""
    names = {image["id"]: image["file_name"] for image in document["images"]}
    labels = {category["id"]: category["name"] for category in document["categories"]}
    return {
        (a["id"], names[a["image_id"]], labels[a["category_id"]], *map(float, a["bbox"]))
        for a in document["annotations"]
    }


def main() -> None:
    """``python -m benchmarks.synthetic OUT [images] [boxes_per_image] [grey]``."""
    import sys

    args = sys.argv[1:]
    if not args:
        raise SystemExit("usage: python -m benchmarks.synthetic OUT [images] [boxes] [grey]")
    dataset = make_dataset(
        args[0],
        int(args[1]) if len(args) > 1 else 20,
        int(args[2]) if len(args) > 2 else 5,
        domain="grey" if "grey" in args[3:] else "colour",
    )
    print(f"{len(dataset.file_names)} images, {len(dataset.boxes)} boxes in {dataset.root}")


if __name__ == "__main__":
    main()
