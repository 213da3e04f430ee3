"""Calibration of the unit-level tests with the real embedded model on texture photos.

Descriptors of random boxes are computed once with EfficientNet-Lite0 on scikit-image's
``brick``, ``grass`` and ``gravel`` (as the service forms them: ``resize`` input, boxes of
60–140 px, ``gap`` and ``pixels`` at grid 4); every repetition then only draws boxes,
splits them and permutes. Three scenarios:

* ``null: boxes of one image``: 16 random boxes of ONE texture photo split 8/8 at random.
  The image has boxes in both groups, so its boxes exchange labels among themselves
  (``permutations`` random draws of the C(16, 8) = 12,870 splits).
* ``null: 4 vs 4 images``: 8 random crops of one texture uploaded as 8 images with 4 boxes
  each, 4 images against 4: the image is the unit, and the 70 splits are enumerated.
* ``alternative: brick vs grass``: 4 brick crops against 4 grass crops (4 boxes each).

Under both nulls the rejection rate at ``alpha`` must be near ``alpha`` (for the exact
4-vs-4 test the attainable level is 2/70 = 0.029); under the alternative it is the power.
``python -m benchmarks.calibration [repetitions]`` prints the table (``make bench`` runs it
at 500 repetitions through ``bench_calibration``).
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy.stats import binomtest
from skimage import data as skdata

from app.boxes import Box
from app.engine.features import FeatureCache, extract
from app.engine.inference import Design, permutation_test
from app.engine.measures import cosine, euclidean, grassmann, mahalanobis, mmd
from app.engine.models import LoadedModel, get_model
from app.engine.regions import region_descriptors
from app.images import DecodedImage, decode_image

__all__ = [
    "BENCH_LIMITS",
    "LAYERS",
    "MEASURES",
    "SCENARIOS",
    "Bank",
    "Row",
    "Spec",
    "calibration_rates",
    "precompute",
    "print_table",
]

TEXTURES = ("brick", "grass", "gravel")
LAYERS = ("conv_head", "blocks.4.2.add")
GRID = 4


@dataclass(frozen=True)
class Spec:
    """A statistic as the service would run it: its descriptor and options bound."""

    label: str
    descriptor: str
    fn: Callable[[torch.Tensor, torch.Tensor], float]
    mmd_options: Mapping[str, Any] | None = None


MEASURES: tuple[Spec, ...] = (
    Spec("mmd (pixels)", "pixels", lambda x, y: mmd(x, y), {}),
    Spec("mmd (gap)", "gap", lambda x, y: mmd(x, y), {}),
    Spec("euclidean", "gap", lambda x, y: euclidean(x, y)),
    Spec("cosine", "gap", lambda x, y: cosine(x, y)),
    Spec("mahalanobis", "gap", lambda x, y: mahalanobis(x, y)),
    Spec("grassmann (pixels)", "pixels", lambda x, y: grassmann(x, y)),
    Spec("grassmann (gap)", "gap", lambda x, y: grassmann(x, y)),
)
# Seconds per repetition (three scenarios, 99 draws or 70 exact splits) measured on a
# busy 2-core machine: mahalanobis at conv_head ~20 (a 1280×1280 solve per split),
# grassmann on pixels ~40 at conv_head and ~2 at blocks.4.2.add (two SVDs of 128×C per
# split). The defaults below keep `make bench` in minutes.
BENCH_LIMITS: Mapping[tuple[str, str], int] = {
    ("mahalanobis", "conv_head"): 10,
    ("grassmann (pixels)", "conv_head"): 5,
    ("grassmann (pixels)", "blocks.4.2.add"): 100,
}


@dataclass(frozen=True)
class Row:
    """One rejection rate with its Clopper–Pearson 95% interval."""

    scenario: str
    measure: str
    layer: str
    repetitions: int
    rejections: int
    rate: float
    low: float
    high: float
    exact: bool
    min_p: float
    seconds: float


@dataclass(frozen=True)
class Bank:
    """Precomputed descriptors, per texture and layer.

    ``whole[t][layer][kind]``: boxes on the full photo, ``B×C`` (gap) or ``B×s²×C``
    (pixels). ``crops[t][layer][kind]``: crops as images, ``K×4×C`` or ``K×4×s²×C``.
    """

    whole: dict[str, dict[str, dict[str, torch.Tensor]]]
    crops: dict[str, dict[str, dict[str, torch.Tensor]]]


def _decoded(array: np.ndarray) -> DecodedImage:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return decode_image(buffer.getvalue(), max_pixels=10**8)


def _texture(name: str) -> np.ndarray:
    image = np.asarray(getattr(skdata, name)())
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3].astype(np.uint8)


def _boxes(rng: np.random.Generator, width: int, height: int, count: int) -> list[Box]:
    out = []
    for _ in range(count):
        w, h = rng.integers(60, 141, size=2)
        x, y = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
        out.append(Box(float(x), float(y), float(w), float(h)))
    return out


def _describe(
    model: LoadedModel,
    images: Sequence[DecodedImage],
    boxes: Sequence[Sequence[Box]],
    layers: Sequence[str],
) -> dict[str, dict[str, torch.Tensor]]:
    maps = extract(model, images, layers, mode="resize", cache=FeatureCache(0))
    out: dict[str, dict[str, torch.Tensor]] = {}
    for layer in layers:
        per: dict[str, list[torch.Tensor]] = {"gap": [], "pixels": []}
        for image, fmaps, bs in zip(images, maps, boxes, strict=True):
            size = (image.width, image.height)
            for kind, parts in per.items():
                found = region_descriptors(fmaps[layer], size, bs, kind, GRID)  # type: ignore[arg-type]
                parts.append(torch.stack(found).to(torch.float64))
        out[layer] = {kind: torch.stack(parts) for kind, parts in per.items()}
    return out


def precompute(
    model: LoadedModel | None = None,
    *,
    boxes: int = 64,
    crops: int = 16,
    crop_side: int = 256,
    layers: Sequence[str] = LAYERS,
    seed: int = 0,
) -> Bank:
    """Descriptors of ``boxes`` random boxes on each whole texture photo and of 4 random
    boxes on each of ``crops`` random ``crop_side``-px crops per texture."""
    model = model or get_model("efficientnet_lite0")
    rng = np.random.default_rng(seed)
    whole: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    cropped: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    for name in TEXTURES:
        photo = _texture(name)
        height, width = photo.shape[:2]
        full = _decoded(photo)
        got = _describe(model, [full], [_boxes(rng, width, height, boxes)], layers)
        whole[name] = {layer: {k: v[0] for k, v in d.items()} for layer, d in got.items()}
        images, their_boxes = [], []
        for _ in range(crops):
            x0 = int(rng.integers(0, width - crop_side + 1))
            y0 = int(rng.integers(0, height - crop_side + 1))
            images.append(
                _decoded(np.ascontiguousarray(photo[y0 : y0 + crop_side, x0 : x0 + crop_side]))
            )
            their_boxes.append(_boxes(rng, crop_side, crop_side, 4))
        cropped[name] = _describe(model, images, their_boxes, layers)
    return Bank(whole=whole, crops=cropped)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """Boxes' descriptors as rows: one per box (gap) or ``s²`` per box (pixels), in order."""
    return t.reshape(-1, t.shape[-1])


def _design(xs: Sequence[tuple[int, int]], ys: Sequence[tuple[int, int]], per_box: int) -> Design:
    return Design.from_boxes([(b, i, per_box) for b, i in xs], [(b, i, per_box) for b, i in ys])


def _draw(
    scenario: str, bank: Bank, layer: str, kind: str, rng: np.random.Generator, rep: int
) -> tuple[torch.Tensor, torch.Tensor, Design]:
    per_box = GRID * GRID if kind == "pixels" else 1
    if scenario == "null: boxes of one image":
        pool = bank.whole[TEXTURES[rep % 3]][layer][kind]
        pick = rng.choice(pool.shape[0], 16, replace=False)
        x, y = pool[pick[:8]], pool[pick[8:]]
        xs = [(int(b), 0) for b in pick[:8]]
        ys = [(int(b), 0) for b in pick[8:]]
    else:
        if scenario == "null: 4 vs 4 images":
            pool = bank.crops[TEXTURES[rep % 3]][layer][kind]
            pick = rng.choice(pool.shape[0], 8, replace=False)
            x, y = pool[pick[:4]], pool[pick[4:]]
        else:
            a, b = bank.crops["brick"][layer][kind], bank.crops["grass"][layer][kind]
            x = a[rng.choice(a.shape[0], 4, replace=False)]
            y = b[rng.choice(b.shape[0], 4, replace=False)]
        xs = [(i * 4 + j, i) for i in range(4) for j in range(4)]
        ys = [(100 + i * 4 + j, 100 + i) for i in range(4) for j in range(4)]
    return _rows(x), _rows(y), _design(xs, ys, per_box)


SCENARIOS = ("null: boxes of one image", "null: 4 vs 4 images", "alternative: brick vs grass")


def calibration_rates(
    repetitions: int,
    *,
    bank: Bank | None = None,
    measures: Sequence[Spec] = MEASURES,
    layers: Sequence[str] = LAYERS,
    scenarios: Sequence[str] = SCENARIOS,
    permutations: int = 99,
    alpha: float = 0.05,
    seed: int = 0,
    limits: Mapping[tuple[str, str], int] | None = None,
) -> list[Row]:
    """Rejection rates at ``alpha`` of the unit-level permutation test.

    Args:
        repetitions: random splits per scenario, measure and layer.
        bank: precomputed descriptors (computed with the embedded model when ``None``).
        measures: statistics to test.
        layers: layers (must be in the bank).
        scenarios: any of :data:`SCENARIOS`.
        permutations: random draws for the boxes of one image (4 vs 4 images always
            enumerate their 70 splits).
        alpha: the level.
        seed: seed of the draws and the permutations.
        limits: fewer repetitions for some ``(measure label, layer)`` pairs (0 leaves the
            pair out): the slow ones.

    Returns:
        One :class:`Row` per scenario, measure and layer.
    """
    bank = bank or precompute(layers=layers)
    threads = torch.get_num_threads()
    # Each statistic is a small computation: one thread avoids the thread pool's overhead,
    # which dominates (and explodes on a busy machine) at these sizes.
    torch.set_num_threads(1)
    try:
        return _rates(
            repetitions, bank, measures, layers, scenarios, permutations, alpha, seed, limits or {}
        )
    finally:
        torch.set_num_threads(threads)


def _rates(
    repetitions: int,
    bank: Bank,
    measures: Sequence[Spec],
    layers: Sequence[str],
    scenarios: Sequence[str],
    permutations: int,
    alpha: float,
    seed: int,
    limits: Mapping[tuple[str, str], int],
) -> list[Row]:
    out: list[Row] = []
    for scenario in scenarios:
        for spec in measures:
            for layer in layers:
                reps = min(repetitions, limits.get((spec.label, layer), repetitions))
                if reps < 1:
                    continue
                rng = np.random.default_rng([seed, len(out)])
                start = time.perf_counter()
                hits, exact, min_p = 0, True, 0.0
                for rep in range(reps):
                    x, y, design = _draw(scenario, bank, layer, spec.descriptor, rng, rep)
                    # 4 vs 4 images: all 70 splits, so the test is exact.
                    asked = permutations if scenario == SCENARIOS[0] else max(permutations, 70)
                    res = permutation_test(
                        spec.fn,
                        x,
                        y,
                        design,
                        permutations=asked,
                        seed=rep,
                        alpha=alpha,
                        mmd_options=spec.mmd_options,
                    )
                    hits += res.p_value is not None and res.p_value <= alpha
                    exact, min_p = exact and res.exact, max(min_p, res.min_p)
                ci = binomtest(hits, reps).proportion_ci(0.95, method="exact")
                out.append(
                    Row(
                        scenario=scenario,
                        measure=spec.label,
                        layer=layer,
                        repetitions=reps,
                        rejections=hits,
                        rate=hits / reps,
                        low=float(ci.low),
                        high=float(ci.high),
                        exact=exact,
                        min_p=min_p,
                        seconds=time.perf_counter() - start,
                    )
                )
    return out


def print_table(rows: Sequence[Row]) -> None:
    """Print the rates with their intervals as a Markdown table."""
    print("| scenario | measure | layer | rate | 95% CI | exact | min p | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r.scenario} | {r.measure} | {r.layer} | {r.rate:.3f} "
            f"({r.rejections}/{r.repetitions}) | [{r.low:.3f}, {r.high:.3f}] | "
            f"{'yes' if r.exact else 'no'} | {r.min_p:.3f} | {r.seconds:.1f} |",
            flush=True,
        )


def main(repetitions: int = 500) -> None:
    """Precompute once, then print every rate with its interval."""
    print_table(calibration_rates(repetitions, limits=BENCH_LIMITS))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
