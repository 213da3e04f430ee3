"""Files the store writes whole: a temp file renamed into place, and the sweep of temp files
that a crash or a full disk left behind."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

__all__ = ["TEMP_MAX_AGE_S", "atomic_write", "remove_leftover_temp_files"]

_TEMP_PREFIX = ".tmp-"
TEMP_MAX_AGE_S = 600.0
"""Younger temp (or unindexed) files may belong to another process writing right now."""


def atomic_write(path: Path, write: Callable[[BinaryIO], object], suffix: str = "") -> None:
    """Write ``path`` so that readers see the whole file or none: ``write(handle)`` fills a
    temp file beside it (named with ``suffix``), which is synced and renamed onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX, suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_leftover_temp_files(directory: Path, *, recursive: bool = False) -> None:
    """Delete the temp files of :func:`atomic_write` in ``directory`` (and below when
    ``recursive``) older than :data:`TEMP_MAX_AGE_S`."""
    cutoff = time.time() - TEMP_MAX_AGE_S
    found = directory.rglob if recursive else directory.glob
    for leftover in found(f"{_TEMP_PREFIX}*"):
        with suppress(OSError):  # gone already, or not ours to delete
            if leftover.is_file() and leftover.stat().st_mtime < cutoff:
                leftover.unlink()
