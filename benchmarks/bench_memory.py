"""Worst-case memory of each analysis endpoint at the default limits, per request.

Each request runs in a fresh process (``benchmarks._rss``): peak RSS growth during the
request, beside the budget's estimate (``app.service.budgets``). The heavy cases are the
largest each endpoint accepts at the default settings within a few seconds (bins at their
cap, thousands of dimensions, native-size inputs with gradients, 12-megapixel photos);
the last ones are past ``FEATUREGAP_MAX_REQUEST_BYTES`` and must be refused before any work
(growth near zero). Every accepted request must stay under 2 GiB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

_LIMIT = 2 * 2**30
_THREE = [[640, 480], [800, 600], [500, 400]]


def _distances(
    boxes: list[int], measure: str, descriptor: str, grid_size: int, **extra: Any
) -> dict[str, Any]:
    """A ``POST /api/distances`` case at ``conv_head``: one photo of ``_THREE`` per label.

    Args:
        boxes: Boxes per label (one label, and one photo, per entry).
        measure: The distance measure.
        descriptor: The box descriptor.
        grid_size: The descriptor's grid size.
        **extra: Further body fields (``options``, ``permutations``).

    Returns:
        The case spec for ``run_case``.
    """
    return {
        "images": _THREE[: len(boxes)],
        "boxes": boxes,
        "endpoint": "/api/distances",
        "body": {
            "labels": "{labels}",
            "layer": "conv_head",
            "measure": measure,
            "descriptor": descriptor,
            "grid_size": grid_size,
            **extra,
        },
    }


CASES: list[tuple[str, dict[str, Any]]] = [
    (
        "distances mutual_information bins=256 grid 16×16 (327,680 dims)",
        _distances([20, 20], "mutual_information", "grid", 16, options={"bins": 256}),
    ),
    (
        "distances mahalanobis grid 2×2 (5,120 dims)",
        _distances([10, 10], "mahalanobis", "grid", 2),
    ),
    (
        "distances mmd pixels 8×8, 100 permutations",
        _distances([40, 40], "mmd", "pixels", 8, permutations=100),
    ),
    (
        "separation grid 8×8 at 3 layers, 150 boxes",
        {
            "images": _THREE,
            "boxes": [50, 50, 50],
            "endpoint": "/api/separation",
            "body": {
                "labels": "{labels}",
                "layers": ["blocks.2.0.bn2", "blocks.5.1.add", "conv_head"],
                "measure": "euclidean",
                "descriptor": "grid",
                "grid_size": 8,
            },
        },
    ),
    (
        "embeddings t-SNE of 600 boxes",
        {
            "images": _THREE,
            "boxes": [300, 300],
            "endpoint": "/api/embeddings",
            "body": {"labels": "{labels}", "layer": "conv_head", "method": "tsne"},
        },
    ),
    (
        "heatmaps gradcam native 2400×1800 at conv_head",
        {
            "images": [[2400, 1800]],
            "endpoint": "/api/heatmaps",
            "body": {
                "image_id": "{image_id}",
                "layer": "conv_head",
                "method": "gradcam",
                "mode": "native",
            },
        },
    ),
    (
        "heatmaps scorecam on a 4000×3000 photo",
        {
            "images": [[4000, 3000]],
            "endpoint": "/api/heatmaps",
            "body": {"image_id": "{image_id}", "layer": "bn2", "method": "scorecam"},
        },
    ),
    (
        "predictions native on a 4000×3000 photo",
        {
            "images": [[4000, 3000]],
            "endpoint": "/api/predictions",
            "body": {"image_id": "{image_id}", "mode": "native"},
        },
    ),
    (
        "refused: distances mmd pixels 16×16 over 3 × 400 boxes",
        _distances([400, 400, 400], "mmd", "pixels", 16),
    ),
]


def run_case(spec: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """One case in a fresh process (``benchmarks._rss``); its JSON answer."""
    env = {
        **os.environ,
        "FEATUREGAP_TORCH_THREADS": os.environ.get("FEATUREGAP_TORCH_THREADS", "2"),
        # the heat maps' work is measured in the request, not handed to a job (202)
        "FEATUREGAP_HEATMAP_JOB_THRESHOLD": str(10**12),
    }
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks._rss", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=True,
    )
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def main() -> None:
    worst = 0
    for name, spec in CASES:
        out = run_case(spec)
        growth, estimate = out["growth"], out["estimate"]
        worst = max(worst, growth if out["status"] == 200 else 0)
        print(
            f"{name}: HTTP {out['status']}, peak RSS +{growth / 2**20:.0f} MiB, estimate "
            f"{estimate / 2**20:.0f} MiB (measured/estimate {growth / estimate:.2f}), "
            f"{out['seconds']:.1f} s",
            flush=True,
        )
    verdict = "under" if worst < _LIMIT else "OVER"
    print(f"worst accepted request: +{worst / 2**20:.0f} MiB, {verdict} 2 GiB")


if __name__ == "__main__":
    main()
