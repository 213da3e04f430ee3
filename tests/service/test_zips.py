"""The zip guard below the API: a header that lies about a member's size is caught while
unpacking, small well-compressed files pass, and layouts are found."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from app.config import Settings
from app.errors import InvalidInput, LimitExceeded
from app.service.zips import check_zip, extract_zip, find_layout


def _write(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_a_member_larger_than_its_header_says_is_cut_off(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.zip", {"a/labels.json": b"[" + b"1," * 5000 + b"1]"})
    members = check_zip(path, Settings(data_dir=tmp_path / "data"))
    members[0].file_size = 100  # what a forged central directory would declare
    with pytest.raises((LimitExceeded, InvalidInput)):
        extract_zip(path, members, tmp_path / "out")
    written = tmp_path / "out" / "a" / "labels.json"
    assert not written.exists() or written.stat().st_size <= 100


def test_small_files_compress_as_well_as_they_like_and_unpack_whole(tmp_path: Path) -> None:
    text = b'{"images": [], "annotations": [], "categories": []}' + b" " * 900_000
    path = _write(tmp_path / "a.zip", {"ds/coco.json": text, "ds/images/": b""})
    settings = Settings(data_dir=tmp_path / "data", max_zip_ratio=2)
    members = check_zip(path, settings)
    assert members[0].file_size / members[0].compress_size > 100  # under the 1 MiB floor
    extract_zip(path, members, tmp_path / "out")
    assert (tmp_path / "out" / "ds" / "coco.json").read_bytes() == text
    layout = find_layout(tmp_path / "out", "coco")
    assert (layout.annotations, layout.images_dir) == (
        (tmp_path / "out" / "ds" / "coco.json").resolve(),
        tmp_path / "out",
    )
    with pytest.raises(InvalidInput, match="no file '../a.zip'"):
        find_layout(tmp_path / "out", "coco", "../a.zip")
    with pytest.raises(InvalidInput, match="one classes.txt"):
        find_layout(tmp_path / "out", "yolo")
