"""Boxes in and out in the formats people already have: COCO JSON, Pascal VOC XML, YOLO txt.

Conventions (boxes that stick out of the image are clipped to it, as everywhere):
- COCO ``bbox`` is ``[x, y, w, h]`` in pixels, the same as FeatureGap's boxes. Images are
  matched by ``file_name`` (its last path part) to stored images' upload names;
  ``categories`` give the labels.
- Pascal VOC uses 1-based inclusive pixel indices (the VOC devkit's convention):
  ``x = xmin − 1, w = xmax − xmin + 1``; export rounds to whole pixels.
- YOLO lines are ``class cx cy w h`` normalised by the image size; class names come from the
  ``classes`` field (one per line or comma-separated, index 0 first). Export uses the
  ``classes`` query (comma-separated) or, without it, every box label sorted by name
  (``GET /api/labels`` order).
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections import defaultdict
from typing import Annotated, Any

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from fastapi.responses import JSONResponse

from app.api.deps import ImageDep, JobsDep, PoolDep, SettingsDep, StoreDep
from app.api.images import read_limited
from app.api.schemas import ImportResult, JobAccepted
from app.jobs import JobCancelled, Progress
from app.store import ImageRecord, Store

__all__ = ["router", "import_coco", "export_coco", "parse_voc", "export_voc", "parse_yolo",
           "export_yolo"]

router = APIRouter(prefix="/api", tags=["formats"])

_Box = tuple[float, float, float, float, str]


# -- COCO ----------------------------------------------------------------------------------

def _coco_parts(document: Any) -> tuple[list[Any], list[Any], dict[Any, str]]:
    if not isinstance(document, dict):
        raise ValueError("a COCO file is a JSON object with 'images', 'annotations' and "
                         "'categories' lists")
    parts = {}
    for key in ("images", "annotations", "categories"):
        value = document.get(key)
        if not isinstance(value, list):
            raise ValueError(f"the COCO file needs a list '{key}'")
        parts[key] = value
    categories: dict[Any, str] = {}
    for category in parts["categories"]:
        if not isinstance(category, dict) or "id" not in category or not isinstance(
                category.get("name"), str):
            raise ValueError("every COCO category needs an 'id' and a string 'name'")
        categories[category["id"]] = category["name"]
    return parts["images"], parts["annotations"], categories


def coco_annotation_count(document: Any) -> int:
    """How many annotations a COCO document has (0 when it has no list)."""
    if isinstance(document, dict) and isinstance(document.get("annotations"), list):
        return len(document["annotations"])
    return 0


def import_coco(store: Store, document: Any, progress: Progress | None = None,
                cancelled: Any = None) -> ImportResult:
    """Add a COCO document's boxes to the stored images with the same file names.

    Each image's boxes are added all or none; an image whose boxes cannot be added is
    skipped with the reason.

    Raises:
        ValueError: the document is not COCO-shaped.
    """
    coco_images, annotations, categories = _coco_parts(document)
    stored = store.images_by_filename()
    skipped: list[str] = []
    targets: dict[Any, ImageRecord] = {}
    for entry in coco_images:
        if not isinstance(entry, dict) or "id" not in entry or not isinstance(
                entry.get("file_name"), str):
            raise ValueError("every COCO image needs an 'id' and a string 'file_name'")
        name = entry["file_name"].replace("\\", "/").rsplit("/", 1)[-1]
        record = stored.get(name)
        if record is None:
            skipped.append(f"image {name!r}: not uploaded (upload it first, same file name)")
            continue
        size = (entry.get("width"), entry.get("height"))
        if None not in size and size != (record.width, record.height):
            skipped.append(f"image {name!r}: COCO says {size[0]}×{size[1]}, the stored image "
                           f"is {record.width}×{record.height} as displayed")
            continue
        targets[entry["id"]] = record
    per_image: dict[int, list[_Box]] = defaultdict(list)
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            raise ValueError(f"COCO annotation {index} is not an object")
        bbox = annotation.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(isinstance(v, int | float) for v in bbox)):
            raise ValueError(f"COCO annotation {index} needs 'bbox': [x, y, w, h] numbers")
        if annotation.get("category_id") not in categories:
            raise ValueError(f"COCO annotation {index} has category_id "
                             f"{annotation.get('category_id')!r}, not in 'categories'")
        record = targets.get(annotation.get("image_id"))
        if record is None:
            continue
        x, y, w, h = (float(v) for v in bbox)
        per_image[record.id].append((x, y, w, h, categories[annotation["category_id"]]))
    added = 0
    for done, (image_id, boxes) in enumerate(per_image.items()):
        if cancelled is not None and cancelled():
            raise JobCancelled()
        try:
            added += len(store.add_boxes(image_id, boxes))
        except ValueError as exc:
            skipped.append(f"image {image_id}: {exc}")
        if progress is not None:
            progress((done + 1) / len(per_image), f"{done + 1}/{len(per_image)} images")
    return ImportResult(boxes_added=added, images_matched=len(targets), skipped=skipped)


def export_coco(store: Store) -> dict[str, Any]:
    """Every stored image and box as one COCO document (category ids by sorted label)."""
    labels = sorted(store.labels())
    category_ids = {label: i + 1 for i, label in enumerate(labels)}
    images = store.images()
    annotations = [
        {"id": box.id, "image_id": box.image_id, "category_id": category_ids[box.label],
         "bbox": [box.x, box.y, box.w, box.h], "area": box.w * box.h, "iscrowd": 0}
        for box in store.boxes()
    ]
    return {
        "info": {"description": "FeatureGap export"},
        "images": [{"id": i.id, "file_name": i.filename, "width": i.width, "height": i.height}
                   for i in images],
        "annotations": annotations,
        "categories": [{"id": category_ids[label], "name": label, "supercategory": ""}
                       for label in labels],
    }


# -- Pascal VOC ------------------------------------------------------------------------------

def parse_voc(text: bytes, image: ImageRecord) -> list[_Box]:
    """Boxes from a Pascal VOC annotation for ``image``.

    Raises:
        ValueError: not VOC XML, entities or DTDs (refused), or a size that is not the image's.
    """
    try:
        root = SafeET.fromstring(text, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException) as exc:
        raise ValueError(f"not a Pascal VOC XML file ({exc}); DTDs and entities are refused"
                         ) from exc
    if root.tag != "annotation":
        raise ValueError(f"a Pascal VOC file's root element is <annotation>, not <{root.tag}>")
    size = root.find("size")
    if size is not None:
        width, height = _int_of(size, "width"), _int_of(size, "height")
        if (width, height) != (image.width, image.height) and width and height:
            raise ValueError(f"the VOC file is for a {width}×{height} image; image {image.id} "
                             f"is {image.width}×{image.height} as displayed")
    boxes: list[_Box] = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bndbox = obj.find("bndbox")
        if not name or bndbox is None:
            raise ValueError("every VOC <object> needs a <name> and a <bndbox>")
        xmin, ymin = _float_of(bndbox, "xmin"), _float_of(bndbox, "ymin")
        xmax, ymax = _float_of(bndbox, "xmax"), _float_of(bndbox, "ymax")
        boxes.append((xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1, name))
    return boxes


def _float_of(element: ET.Element, tag: str) -> float:
    text = element.findtext(tag)
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"VOC <{tag}> must be a number, got {text!r}")
    return value


def _int_of(element: ET.Element, tag: str) -> int:
    return int(round(_float_of(element, tag)))


def export_voc(store: Store, image: ImageRecord) -> str:
    """The image's boxes as a Pascal VOC annotation (1-based inclusive pixel indices)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = image.filename
    size = ET.SubElement(root, "size")
    for tag, value in (("width", image.width), ("height", image.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for box in store.boxes(image_id=image.id):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = box.label
        ET.SubElement(obj, "difficult").text = "0"
        bndbox = ET.SubElement(obj, "bndbox")
        xmin, ymin = round(box.x) + 1, round(box.y) + 1
        xmax, ymax = round(box.x + box.w), round(box.y + box.h)
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", max(xmax, xmin)),
                           ("ymax", max(ymax, ymin))):
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


# -- YOLO ------------------------------------------------------------------------------------

def _class_list(text: str) -> list[str]:
    separator = "\n" if "\n" in text.strip() else ","
    names = [name.strip() for name in text.split(separator) if name.strip()]
    if not names:
        raise ValueError("give the YOLO class names, one per line or comma-separated, "
                         "index 0 first")
    return names


def parse_yolo(text: str, classes: list[str], image: ImageRecord) -> list[_Box]:
    """Boxes from YOLO lines ``class cx cy w h`` (normalised) for ``image``.

    Raises:
        ValueError: a malformed line or a class index outside ``classes``.
    """
    boxes: list[_Box] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            index = int(fields[0])
            cx, cy, w, h = (float(v) for v in fields[1:5])
            if len(fields) != 5:
                raise ValueError
        except ValueError:
            raise ValueError(f"YOLO line {number} is {line!r}; write 'class cx cy w h' with "
                             "an integer class and four numbers in 0..1") from None
        if not 0 <= index < len(classes):
            raise ValueError(f"YOLO line {number} has class {index}, but only "
                             f"{len(classes)} class names were given ({classes})")
        x, y = (cx - w / 2) * image.width, (cy - h / 2) * image.height
        boxes.append((x, y, w * image.width, h * image.height, classes[index]))
    return boxes


def export_yolo(store: Store, image: ImageRecord, classes: list[str]) -> str:
    """The image's boxes as YOLO lines, class indices into ``classes``.

    Raises:
        ValueError: a box label is not in ``classes``.
    """
    index = {name: i for i, name in enumerate(classes)}
    lines = []
    for box in store.boxes(image_id=image.id):
        if box.label not in index:
            raise ValueError(f"box {box.id} has label {box.label!r}, not in the classes "
                             f"{classes}; add it to 'classes'")
        cx = (box.x + box.w / 2) / image.width
        cy = (box.y + box.h / 2) / image.height
        lines.append(f"{index[box.label]} {cx:.8f} {cy:.8f} {box.w / image.width:.8f} "
                     f"{box.h / image.height:.8f}")
    return "".join(line + "\n" for line in lines)


# -- routes ----------------------------------------------------------------------------------

@router.post("/import/coco", response_model=ImportResult,
             responses={202: {"model": JobAccepted, "description": "a large import runs as "
                              "a job: poll GET /api/jobs/{job_id}"}})
async def post_coco(store: StoreDep, settings: SettingsDep, jobs: JobsDep, pool: PoolDep,
                    file: Annotated[UploadFile, File(description="a COCO JSON file")]
                    ) -> ImportResult | JSONResponse:
    """Add a COCO file's boxes to the stored images with the same file names."""
    return await pool.run(lambda _cancelled: _coco(store, settings, jobs, file))


def _coco(store: StoreDep, settings: SettingsDep, jobs: JobsDep, file: UploadFile
          ) -> ImportResult | JSONResponse:
    raw = read_limited(file, settings.max_upload_bytes)
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"the COCO file is not JSON ({exc})") from exc
    _coco_parts(document)  # refuse a malformed document now, not inside a job
    if coco_annotation_count(document) > settings.import_job_threshold:
        job_id = jobs.submit("import_coco", lambda progress, cancelled: import_coco(
            store, document, progress, cancelled).model_dump())
        return JSONResponse(status_code=status.HTTP_202_ACCEPTED,
                            content=JobAccepted(job_id=job_id).model_dump())
    return import_coco(store, document)


@router.get("/export/coco", response_model=dict[str, Any])
def get_coco(store: StoreDep) -> dict[str, Any]:
    """Every image and box as one COCO document."""
    return export_coco(store)


@router.post("/images/{image_id}/import/voc", response_model=ImportResult)
def post_voc(image: ImageDep, store: StoreDep, settings: SettingsDep,
             file: Annotated[UploadFile, File(description="a Pascal VOC XML file")]
             ) -> ImportResult:
    """Add a Pascal VOC file's boxes to this image (all or none)."""
    boxes = parse_voc(read_limited(file, settings.max_upload_bytes), image)
    return ImportResult(boxes_added=len(store.add_boxes(image.id, boxes)), images_matched=1,
                        skipped=[])


@router.get("/images/{image_id}/export/voc", response_class=Response,
            responses={200: {"content": {"application/xml": {}}}})
def get_voc(image: ImageDep, store: StoreDep) -> Response:
    """This image's boxes as Pascal VOC XML."""
    return Response(export_voc(store, image), media_type="application/xml")


@router.post("/images/{image_id}/import/yolo", response_model=ImportResult)
def post_yolo(image: ImageDep, store: StoreDep, settings: SettingsDep,
              file: Annotated[UploadFile, File(description="YOLO txt: class cx cy w h")],
              classes: Annotated[str, Form(description="class names, one per line or "
                                           "comma-separated, index 0 first",
                                           examples=["cat,dog"])],
              ) -> ImportResult:
    """Add a YOLO txt file's boxes to this image (all or none)."""
    raw = read_limited(file, settings.max_upload_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("the YOLO file must be UTF-8 text") from exc
    boxes = parse_yolo(text, _class_list(classes), image)
    return ImportResult(boxes_added=len(store.add_boxes(image.id, boxes)), images_matched=1,
                        skipped=[])


@router.get("/images/{image_id}/export/yolo", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
def get_yolo(image: ImageDep, store: StoreDep,
             classes: Annotated[str | None, Query(max_length=10_000)] = None) -> Response:
    """This image's boxes as YOLO txt; the class order is in the X-Yolo-Classes header."""
    names = _class_list(classes) if classes else sorted(store.labels())
    return Response(export_yolo(store, image, names), media_type="text/plain",
                    headers={"X-Yolo-Classes": json.dumps(names)})
