"""Measures between descriptors, sets of vectors and groups.

Every measure is a registered :class:`Measure` (one small module each) with its direction,
the descriptor it consumes, whether it compares group means or whole sets, and its options
schema; ``get_measure(name, **options)`` configures one, and the functions below are
one-line shortcuts that run them on tensors whose rows are samples. A new measure is one
file here with a ``@register`` class: every module of this package is imported, which
registers it (a shortcut below is optional).
"""

from app.engine.measures.base import MEASURES, Measure, get_measure, list_measures
from app.engine.measures.cosine import cosine
from app.engine.measures.euclidean import euclidean
from app.engine.measures.grassmann import grassmann
from app.engine.measures.mahalanobis import mahalanobis
from app.engine.measures.mmd import mmd
from app.engine.measures.mutual_information import mutual_information
from app.engine.measures.seed_mmd import seed_mmd
from app.engine.measures.std_euclidean import std_euclidean
from app.engine.registry import import_family

__all__ = [
    "MEASURES",
    "Measure",
    "cosine",
    "euclidean",
    "get_measure",
    "grassmann",
    "list_measures",
    "mahalanobis",
    "mmd",
    "mutual_information",
    "seed_mmd",
    "std_euclidean",
]

import_family(__name__, __path__)
