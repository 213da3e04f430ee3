"""Write ``app/catalog_seed.json``: what the command line lists on a fresh install.

Run ``python -m app.catalog_seed`` after a change that changes a list (a built-in model, the
default model's layers, a heat-map method or measure) or after upgrading torch, torchvision,
timm or the embedded weights package; ``tests/test_catalog.py`` fails until it is run. The
file lets a first ``featuregap models``, ``layers`` or ``--help`` answer without importing
torch (see :func:`app.catalog.seeded`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.catalog import SEED, versions

__all__ = ["build_seed", "torchvision_weight_files", "write_seed"]


def torchvision_weight_files() -> list[str]:
    """The file names of torchvision's official weights: one in the torch hub cache adds a
    model to ``featuregap models`` (``app.engine.models``' discovery)."""
    import torchvision
    from torchvision.models import get_model_weights
    from torchvision.models import list_models as tv_models

    return sorted(
        {
            weights.url.rsplit("/", 1)[-1]
            for architecture in tv_models(module=torchvision.models)
            for weights in get_model_weights(architecture)
        }
    )


def build_seed() -> dict[str, Any]:
    """The seed's content, computed live from the installed code and packages."""
    from app.cli import catalog_value
    from app.engine.models import BUILTIN_MODELS

    # Built-ins only: sidecars and hub weights depend on the machine, so the seed is not
    # served for ``models`` where there are any.
    models = [row for row in catalog_value("models") if row["name"] in BUILTIN_MODELS]
    entries: dict[str, Any] = {"models": models}
    for name in BUILTIN_MODELS:
        entries[f"layers:{name}"] = catalog_value(f"layers:{name}")
    entries["methods"] = catalog_value("methods")
    entries["measures"] = catalog_value("measures")
    seed = {"versions": versions(), "hub_files": torchvision_weight_files(), "entries": entries}
    loaded: dict[str, Any] = json.loads(json.dumps(seed))  # JSON's types, as read back
    return loaded


def _dumps(value: Any, indent: str = "") -> str:
    """JSON with one line per list item (a row, a file name), so a change diffs as lines;
    keys keep the order the live answer gives them (``--json`` prints them so)."""
    inner = indent + " "
    if isinstance(value, dict) and value and isinstance(next(iter(value.values())), dict | list):
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and value:
        items = [inner + json.dumps(v, ensure_ascii=False) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    return json.dumps(value, ensure_ascii=False)


def write_seed(path: Path = SEED) -> None:
    """Write :func:`build_seed` to ``path``."""
    path.write_text(_dumps(build_seed()) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_seed()
