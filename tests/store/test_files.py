"""Whole-file writes: a reader sees the old file or the new one, and temp files get swept."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import BinaryIO

import pytest

from app.store.files import TEMP_MAX_AGE_S, atomic_write, remove_leftover_temp_files


def test_atomic_write_replaces_whole_and_makes_the_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b.bin"
    atomic_write(path, lambda handle: handle.write(b"first"))
    atomic_write(path, lambda handle: handle.write(b"second, longer"))
    assert path.read_bytes() == b"second, longer"
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.bin"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "b.npy"
    path.write_bytes(b"old")

    def half(handle: BinaryIO) -> None:
        handle.write(b"new but")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half, ".npy")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.npy"]


@pytest.mark.parametrize("recursive", [False, True])
def test_only_old_temp_files_go(tmp_path: Path, recursive: bool) -> None:
    deep = tmp_path / "ab"
    deep.mkdir()
    old = time.time() - TEMP_MAX_AGE_S - 5
    names = [tmp_path / ".tmp-old", tmp_path / ".tmp-new", tmp_path / "kept", deep / ".tmp-old"]
    for path in names:
        path.write_bytes(b"x")
    for path in (names[0], names[2], names[3]):
        os.utime(path, (old, old))
    remove_leftover_temp_files(tmp_path, recursive=recursive)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted([".tmp-new", "kept"] + ([] if recursive else ["ab/.tmp-old"]))
