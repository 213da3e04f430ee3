"""The results cache: answers keyed by their inputs and by the code that computed them.

Every cached answer's key holds the :func:`results_version`, a hash of the source of the
``app`` package. Any change to a measure, a descriptor, a test between groups, a heat map or
a figure is a change to that source, so a store written by older code never serves its
numbers to newer code: nobody has to remember to bump a number. Rows of other versions are
dropped when the service starts (:func:`drop_stale_results`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from app.store import Store

__all__ = ["cached", "drop_stale_results", "result_key", "results_version", "source_hash"]

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def source_hash(root: Path) -> str:
    """SHA-256 over every ``*.py`` file below ``root`` (relative path and bytes, sorted)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


@lru_cache(maxsize=1)
def results_version() -> str:
    """The version of this code's results: the first 16 hex digits of its source hash."""
    return source_hash(_PACKAGE_ROOT)[:16]


def result_key(kind: str, payload: Any) -> str:
    """``kind:version:sha256`` of the payload's canonical JSON."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return f"{kind}:{results_version()}:{hashlib.sha256(text.encode()).hexdigest()}"


def cached(
    store: Store,
    kind: str,
    payload: Any,
    compute: Callable[[], dict[str, Any]],
    image_id: int | None = None,
    *,
    keep: bool = True,
) -> dict[str, Any]:
    """The stored answer for ``payload`` under this code's version, or ``compute()``'s, stored.

    Args:
        store: where answers are kept.
        kind: what the answer is (``"distances"``, ``"heatmap"``, …), part of the key.
        payload: JSON-serialisable inputs that fully determine the answer.
        compute: makes the answer (JSON-safe) when none is stored.
        image_id: the image the answer belongs to, so deleting it drops the answer.
        keep: store a computed answer; ``False`` for one that is cheaper to compute again
            than to store (it is still served when an earlier call stored it).
    """
    key = result_key(kind, payload)
    found = store.get_result(key)
    if found is not None:
        result: dict[str, Any] = found
        return result
    result = compute()
    if keep:
        store.put_result(key, kind, result, image_id=image_id)
    return result


def drop_stale_results(store: Store) -> int:
    """Delete cached answers computed by other code versions; returns how many went."""
    return store.drop_results_not_matching(f"%:{results_version()}:%")
