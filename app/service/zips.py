"""A dataset uploaded as a ``.zip``: checked before anything is unpacked, then unpacked safely.

:func:`check_zip` reads only the central directory and refuses, before a byte is written:
more members than ``FEATUREGAP_MAX_ZIP_MEMBERS``; a total uncompressed size over
``FEATUREGAP_MAX_ZIP_BYTES``; a member over 1 MiB that unpacks more than
``FEATUREGAP_MAX_ZIP_RATIO`` times its compressed size (a zip bomb); names that are
absolute, hold ``..``, a drive or a backslash; encrypted members and symlinks.
:func:`extract_zip` then counts the bytes it actually writes, so a member whose header
lies about its size is cut off too, and writes every file under the target folder only.
:func:`find_layout` says where in the unpacked tree the annotations and images are.
"""

from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from app.config import Settings
from app.errors import InvalidInput, LimitExceeded
from app.service.datasets import DatasetFormat

__all__ = ["Layout", "check_zip", "extract_zip", "find_layout"]

_RATIO_FLOOR_BYTES = 1024 * 1024  # small members cannot hurt, whatever their ratio
_CHUNK = 1024 * 1024


def _bad_name(name: str) -> str | None:
    """Why a member name is refused, or None when it is a plain relative path."""
    if "\x00" in name or "\\" in name:
        return "holds a backslash or NUL"
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        return "is an absolute path"
    if any(part == ".." for part in path.parts):
        return "climbs out with '..'"
    if path.parts and ":" in path.parts[0]:
        return "names a drive"
    return None


def check_zip(path: Path, settings: Settings) -> list[zipfile.ZipInfo]:
    """The members of a dataset zip, once it passed every check of the module doc.

    Raises:
        InvalidInput: not a zip file, or a member that is encrypted, a symlink or has a
            name that leads outside the folder it is unpacked into (422).
        LimitExceeded: too many members, too large unpacked, or a member that unpacks
            suspiciously well (413); the message names the setting.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InvalidInput(f"the upload is not a readable .zip file ({exc})") from None
    if len(members) > settings.max_zip_members:
        raise LimitExceeded(
            f"the zip holds {len(members)} members, more than {settings.max_zip_members} "
            "(setting FEATUREGAP_MAX_ZIP_MEMBERS); split the dataset"
        )
    total = sum(info.file_size for info in members)
    if total > settings.max_zip_bytes:
        raise LimitExceeded(
            f"the zip unpacks to {total} bytes, more than {settings.max_zip_bytes} (setting "
            "FEATUREGAP_MAX_ZIP_BYTES); split the dataset"
        )
    for info in members:
        reason = _bad_name(info.filename)
        if reason is not None:
            raise InvalidInput(
                f"the zip member {info.filename[:200]!r} {reason}; a dataset "
                "zip holds relative paths inside one folder only"
            )
        if info.flag_bits & 0x1:
            raise InvalidInput(
                f"the zip member {info.filename[:200]!r} is encrypted; upload an unencrypted zip"
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InvalidInput(
                f"the zip member {info.filename[:200]!r} is a symlink; "
                "a dataset zip holds plain files only"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_FLOOR_BYTES and ratio > settings.max_zip_ratio:
            raise LimitExceeded(
                f"the zip member {info.filename[:200]!r} unpacks {ratio:.0f} times its "
                f"compressed size, more than {settings.max_zip_ratio:g} (setting "
                "FEATUREGAP_MAX_ZIP_RATIO): refused as a zip bomb"
            )
    return members


def extract_zip(path: Path, members: list[zipfile.ZipInfo], target: Path) -> None:
    """Unpack checked ``members`` under ``target``, counting what each member really holds.

    Raises:
        LimitExceeded: a member unpacks to more bytes than its header declared.
        InvalidInput: the archive is corrupt (a bad CRC, a truncated member).
    """
    root = target.resolve()
    with zipfile.ZipFile(path) as archive:
        for info in members:
            destination = (root / info.filename).resolve()
            if not destination.is_relative_to(root):  # check_zip refused such names already
                raise InvalidInput(f"the zip member {info.filename!r} leads outside the folder")
            if info.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with archive.open(info) as source, destination.open("wb") as sink:
                    while chunk := source.read(_CHUNK):
                        written += len(chunk)
                        if written > info.file_size:
                            raise LimitExceeded(
                                f"the zip member {info.filename!r} unpacks to more than the "
                                f"{info.file_size} bytes its header declares: refused"
                            )
                        sink.write(chunk)
            except (zipfile.BadZipFile, EOFError, ValueError) as exc:
                raise InvalidInput(f"the zip member {info.filename!r} is corrupt ({exc})") from None


@dataclass(frozen=True)
class Layout:
    """Where an unpacked dataset's parts are: for COCO the JSON file and the folder its
    images are found under; for VOC and YOLO the dataset folder (and YOLO's class file)."""

    format: DatasetFormat
    annotations: Path
    images_dir: Path | None
    classes: Path | None = None


def _files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in suffixes
        and not p.name.startswith("._")
        and "__MACOSX" not in p.parts
    )


def _folder_named(root: Path, name: str) -> Path | None:
    found = sorted((p for p in root.rglob(name) if p.is_dir()), key=lambda p: len(p.parts))
    return found[0] if found else None


def find_layout(root: Path, format: DatasetFormat, annotations: str | None = None) -> Layout:
    """Find the dataset in an unpacked zip.

    COCO: the ``.json`` file (``annotations`` names it when the zip holds several); its
    images are looked up under the whole unpacked tree. VOC: the folder that holds
    ``Annotations/`` (or the whole tree). YOLO: the folder that holds ``images/`` (or the
    whole tree) and ``classes.txt`` / ``*.names`` anywhere in the zip.

    Raises:
        InvalidInput: the part the format needs is missing or ambiguous (says which).
    """
    if format == "coco":
        if annotations is not None:
            chosen = (root / annotations).resolve()
            if not chosen.is_relative_to(root.resolve()) or not chosen.is_file():
                raise InvalidInput(f"the zip holds no file {annotations!r}")
            return Layout(format, chosen, root)
        found = _files(root, (".json",))
        if len(found) != 1:
            names = [str(p.relative_to(root)) for p in found[:20]]
            raise InvalidInput(
                f"a COCO zip holds one .json file, this one {len(found)} {names}; name it "
                "in the 'annotations' field"
            )
        return Layout(format, found[0], root)
    if format == "voc":
        folder = _folder_named(root, "Annotations")
        base = folder.parent if folder is not None else root
        return Layout(format, base, None)
    folder = _folder_named(root, "images")
    base = folder.parent if folder is not None else root
    if annotations is not None:
        classes = (root / annotations).resolve()
        if not classes.is_relative_to(root.resolve()) or not classes.is_file():
            raise InvalidInput(f"the zip holds no file {annotations!r}")
    else:
        found = [
            p
            for p in _files(root, (".txt", ".names"))
            if p.name == "classes.txt" or p.suffix == ".names"
        ]
        if len(found) != 1:
            raise InvalidInput(
                f"a YOLO zip holds one classes.txt (or .names) file, this one {len(found)}; "
                "name it in the 'annotations' field"
            )
        classes = found[0]
    return Layout(format, base, base, classes)
