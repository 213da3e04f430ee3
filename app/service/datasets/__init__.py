"""Whole datasets from disk into the store: COCO, Pascal VOC and YOLO folders.

One image at a time is read, hashed and stored (the same bytes are stored once, whatever
their names), its annotations checked one by one against the image as displayed, and the
boxes written in transactions of about :data:`app.service.imports.BATCH_BOXES` boxes.
Nothing holds more than one image's bytes. Because :meth:`Store.import_boxes` adds only
what is missing, running an import again adds nothing; a cancel or a crash loses at most
the batch in flight and a rerun finishes the job. Every annotation that is not imported
is reported with its reason.

File paths from annotation files (COCO ``file_name``, VOC ``<filename>``) are resolved
inside the dataset's folder only: a path or symlink that leads out of it is skipped with
its reason, so an annotation file cannot read the rest of the disk.
"""

from app.service.datasets.base import (
    IMAGE_SUFFIXES,
    Advance,
    DatasetFormat,
    DatasetSummary,
    Skipped,
)
from app.service.datasets.coco import import_coco_dataset
from app.service.datasets.voc import import_voc_dataset
from app.service.datasets.yolo import import_yolo_dataset, read_classes

__all__ = [
    "DatasetFormat",
    "DatasetSummary",
    "Skipped",
    "Advance",
    "IMAGE_SUFFIXES",
    "import_coco_dataset",
    "import_voc_dataset",
    "import_yolo_dataset",
    "read_classes",
]
