"""Codecs of the annotation formats people already have: COCO JSON, Pascal VOC, YOLO txt.

Pure functions over plain records (:class:`LabeledBox`, :class:`CocoDocument`): no store,
no FastAPI. The routes (``app.api.formats``) and the importer (``app.service.imports``)
join them to the store. Every label that enters through them passes
:func:`clean_label`.
"""

from app.formats.labels import MAX_LABEL_LENGTH, clean_label, normalize_label
from app.formats.records import LabeledBox

__all__ = ["LabeledBox", "MAX_LABEL_LENGTH", "clean_label", "normalize_label"]
