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
at 500 repetitions through ``bench_calibration``), then the coverage of the 95% bootstrap
intervals (studentized, BCa and percentile, over units) on simulated groups whose true
distance is known (:func:`coverage_rates`; the ``‖x̄−ȳ‖`` rows at d=16 and 256 set the
interval on ``‖x̄−ȳ‖`` itself against the Euclidean measures' own, built on the
bias-corrected squared distance), at 300 replicates; ``python -m
benchmarks.calibration coverage [replicates [resamples]]`` prints that table alone.
"""

from __future__ import annotations

import io
import math
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
from app.engine.inference import (
    INNER_RESAMPLES,
    Design,
    IntervalMethod,
    bootstrap_interval,
    permutation_test,
)
from app.engine.measures import cosine, euclidean, grassmann, mahalanobis, mmd
from app.engine.measures._squared_gap import SquaredGap
from app.engine.models import LoadedModel, get_model
from app.engine.regions import region_descriptors
from app.images import DecodedImage, decode_image

__all__ = [
    "BENCH_LIMITS",
    "COVERAGE_METHODS",
    "COVERAGE_SETTINGS",
    "CoverageRow",
    "LAYERS",
    "MEASURES",
    "SCENARIOS",
    "Bank",
    "Row",
    "Spec",
    "calibration_rates",
    "coverage_rates",
    "precompute",
    "print_coverage",
    "print_coverage_row",
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
# busy 2-core machine: grassmann on pixels ~40 at conv_head and ~2 at blocks.4.2.add (two
# SVDs of 128×C per split); mahalanobis at conv_head, ~20 while it solved a 1280×1280
# system per split, is ~0.08 since it solves one the size of the split's rows. The
# defaults below keep `make bench` in minutes.
BENCH_LIMITS: Mapping[tuple[str, str], int] = {
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


# ---- Bootstrap coverage ------------------------------------------------------------------
# Intervals are proven by how often they cover a truth known by construction: Gaussian
# groups with a known mean shift, the distance between group means (truth: the shift) or
# the Gaussian-kernel MMD² at a fixed bandwidth (truth in closed form), resampled by units.


@dataclass(frozen=True)
class CoverageRow:
    """How often one interval method covered the truth in one setting."""

    setting: str
    method: str
    covered: int
    replicates: int
    low: float
    high: float
    seconds: float
    at_zero: int = 0
    """Intervals whose lower end reached 0 (those the service warns about)."""

    @property
    def rate(self) -> float:
        """Share of replicates whose interval held the truth."""
        return self.covered / self.replicates


@dataclass(frozen=True)
class _Setting:
    label: str
    units: int
    rows: int
    dim: int
    shift: float
    statistic: str  # "gap", "gap_squared", "mmd_biased" or "mmd_unbiased"


COVERAGE_SETTINGS: tuple[_Setting, ...] = (
    _Setting("‖x̄−ȳ‖, 40 vs 40 images × 3 boxes, d=2, shift 4 (small bias)", 40, 3, 2, 4.0, "gap"),
    _Setting(
        "‖x̄−ȳ‖, 40 vs 40 images × 2 boxes, d=16, shift 2.2 (bias ≈ 0.8 SE)", 40, 2, 16, 2.2, "gap"
    ),
    _Setting("MMD² biased, 20 vs 20 boxes, d=2, shift 1.5, σ=1", 20, 1, 2, 1.5, "mmd_biased"),
    _Setting("MMD² unbiased, 20 vs 20 boxes, d=2, shift 1, σ=1", 20, 1, 2, 1.0, "mmd_unbiased"),
    _Setting("MMD² biased, 60 vs 60 boxes, d=2, shift 1.5, σ=1", 60, 1, 2, 1.5, "mmd_biased"),
    # At the boundary: the true distance is 0, the edge of every measure's range.
    _Setting("‖x̄−ȳ‖, 40 vs 40 images × 2 boxes, d=16, shift 0 (boundary)", 40, 2, 16, 0.0, "gap"),
    _Setting("MMD² biased, 20 vs 20 boxes, d=2, shift 0 (boundary)", 20, 1, 2, 0.0, "mmd_biased"),
    _Setting(
        "MMD² unbiased, 20 vs 20 boxes, d=2, shift 0 (boundary)", 20, 1, 2, 0.0, "mmd_unbiased"
    ),
    # ‖x̄−ȳ‖ biased far above its standard error (20 vs 20 images × 2 boxes): the interval
    # on ‖x̄−ȳ‖ itself against the one the app gives (studentized on the bias-corrected
    # D̂² = ‖x̄−ȳ‖² − s²x/n − s²y/m with unit-level s², then √max(0, ·)).
    *(
        _Setting(
            f"{name}, 20 vs 20 images × 2 boxes, d={d}, shift {shift:g}{tag}", 20, 2, d, shift, stat
        )
        for d, shift in ((16, 0.0), (16, 2.0), (256, 0.0), (256, 4.0))
        for name, stat in (("‖x̄−ȳ‖", "gap"), ("√D̂²₊ (the app's)", "gap_squared"))
        for tag in [" (boundary)" if shift == 0 else ""]
    ),
)
COVERAGE_METHODS: tuple[IntervalMethod, ...] = ("studentized", "bca", "percentile")


def _mmd_truth(dim: int, shift: float, sigma: float = 1.0) -> float:
    # E k(X, X') for X ~ N(a, I), X' ~ N(b, I), k = exp(−‖x−x'‖²/(2σ²)): X − X' ~ N(a−b, 2I).
    s2 = sigma * sigma
    scale = (s2 / (s2 + 2)) ** (dim / 2)
    return 2 * scale * (1 - math.exp(-(shift**2) / (2 * (s2 + 2))))


def _draw_group(g: torch.Generator, s: _Setting, centre: torch.Tensor) -> torch.Tensor:
    if s.rows == 1:
        return centre + torch.randn(s.units, s.dim, generator=g, dtype=torch.float64)
    effects = torch.randn(s.units, 1, s.dim, generator=g, dtype=torch.float64)
    noise = 0.5 * torch.randn(s.units, s.rows, s.dim, generator=g, dtype=torch.float64)
    return (centre + effects + noise).reshape(-1, s.dim)


def coverage_rates(
    replicates: int = 300,
    resamples: int = 1000,
    seed: int = 0,
    progress: Callable[[CoverageRow], None] | None = None,
    *,
    settings: Sequence[_Setting] = COVERAGE_SETTINGS,
    methods: Sequence[IntervalMethod] = COVERAGE_METHODS,
    inner: int = INNER_RESAMPLES,
) -> list[CoverageRow]:
    """Coverage of the unit-bootstrap intervals (95%) in each setting, with its Wilson 95%
    interval over the replicates.

    The MMD² statistics are :func:`app.engine.measures.mmd` at ``sigma=1`` (biased: the
    V-statistic, the app's default; unbiased: the U-statistic, whose studentized pivot is
    centred on the V-statistic as :meth:`app.engine.measures.mmd.MMD.plug_in` gives it),
    evaluated through the pooled Gram matrix of each replicate so a resample costs a few
    index operations. Every method sees the same data and the same outer resamples.
    """
    out: list[CoverageRow] = []
    for s in settings:
        g = torch.Generator().manual_seed(seed)
        truth = s.shift if s.statistic.startswith("gap") else _mmd_truth(s.dim, s.shift)
        design = Design.from_boxes(
            [(i, i, s.rows) for i in range(s.units)],
            [(i + s.units, i + s.units, s.rows) for i in range(s.units)],
        )
        centre = torch.zeros(s.dim, dtype=torch.float64)
        centre[0] = s.shift
        covered = dict.fromkeys(methods, 0)
        at_zero = dict.fromkeys(methods, 0)
        seconds = dict.fromkeys(methods, 0.0)
        for rep in range(replicates):
            x = _draw_group(g, s, torch.zeros(s.dim, dtype=torch.float64))
            y = _draw_group(g, s, centre)
            stat, plug_in, a, b = _coverage_statistic(s, x, y)
            scale = SquaredGap() if s.statistic == "gap_squared" else None
            for method in methods:
                start = time.perf_counter()
                low, high, *_ = bootstrap_interval(
                    stat,
                    a,
                    b,
                    design,
                    resamples=resamples,
                    seed=rep,
                    method=method,
                    inner=inner,
                    plug_in=plug_in,
                    scale=scale,
                )
                seconds[method] += time.perf_counter() - start
                covered[method] += low <= truth <= high
                at_zero[method] += low <= 0
        for method, count in covered.items():
            ci = binomtest(count, replicates).proportion_ci(method="wilson")
            row = CoverageRow(
                s.label,
                method,
                count,
                replicates,
                ci.low,
                ci.high,
                seconds[method],
                at_zero[method],
            )
            out.append(row)
            if progress is not None:
                progress(row)
    return out


_Stat = Callable[[torch.Tensor, torch.Tensor], float]


def _coverage_statistic(
    s: _Setting, x: torch.Tensor, y: torch.Tensor
) -> tuple[_Stat, _Stat | None, torch.Tensor, torch.Tensor]:
    """The setting's statistic, its plug-in value ``θ(F̂)`` when that differs (``None``:
    the statistic itself), and the rows it takes."""
    if s.statistic in ("gap", "gap_squared"):  # gap_squared: the engine's scale replaces it
        return (lambda a, b: float((a.mean(0) - b.mean(0)).norm())), None, x, y
    z = torch.cat([x, y])
    gram = torch.exp(-(torch.cdist(z, z) ** 2) / 2)
    unbiased = s.statistic == "mmd_unbiased"
    if not unbiased:  # the Gram route is the app's measure: check it once per replicate
        assert (
            abs(
                _gram_mmd(gram, torch.arange(len(x)), torch.arange(len(x), len(z)), False)
                - mmd(x, y, sigma=1.0)
            )
            < 1e-9
        )

    def stat(a: torch.Tensor, b: torch.Tensor) -> float:
        return _gram_mmd(gram, a[:, 0].long(), b[:, 0].long(), unbiased)

    def v_stat(a: torch.Tensor, b: torch.Tensor) -> float:
        return _gram_mmd(gram, a[:, 0].long(), b[:, 0].long(), False)

    rows = torch.arange(len(z), dtype=torch.float64)[:, None]
    return stat, v_stat if unbiased else None, rows[: len(x)], rows[len(x) :]


def _gram_mmd(gram: torch.Tensor, i: torch.Tensor, j: torch.Tensor, unbiased: bool) -> float:
    kxx, kyy, kxy = gram[i][:, i], gram[j][:, j], gram[i][:, j]
    if not unbiased:
        return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    n, m = len(i), len(j)
    # a resample's repeated units are distinct draws here: only the diagonal is left out
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def print_coverage(replicates: int = 300, resamples: int = 1000) -> None:
    """Print the coverage rates with their Wilson intervals as a Markdown table, a row as
    soon as it is measured (``low ≤ 0``: intervals whose lower end reached 0)."""
    print(
        f"| setting ({replicates} replicates, {resamples} resamples, studentized "
        f"{INNER_RESAMPLES} inner) | interval | coverage | 95% CI (Wilson) | low ≤ 0 | s |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    coverage_rates(replicates, resamples, progress=print_coverage_row)


def print_coverage_row(r: CoverageRow) -> None:
    """Print one row of :func:`print_coverage`'s table."""
    print(
        f"| {r.setting} | {r.method} | {r.rate:.3f} ({r.covered}/{r.replicates}) | "
        f"[{r.low:.3f}, {r.high:.3f}] | {r.at_zero} | {r.seconds:.1f} |",
        flush=True,
    )


def main(repetitions: int = 500) -> None:
    """Precompute once, then print every rate with its interval; then the bootstrap
    intervals' coverage (300 replicates of each setting, fewer if ``repetitions`` is)."""
    print_table(calibration_rates(repetitions, limits=BENCH_LIMITS))
    print_coverage(min(repetitions, 300))


if __name__ == "__main__":
    if sys.argv[1:2] == ["coverage"]:
        print_coverage(*(int(a) for a in sys.argv[2:4]))  # replicates, resamples
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
