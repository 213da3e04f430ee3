"""Memory (bytes) and time (work units) of an analysis request, estimated before it starts.

Torch-free arithmetic over what a request asks for and what the store knows (box counts,
image sizes, a layer's channels): no forward pass and no array is made here. Each estimate
names its parts, so a refusal says what is large. :func:`check_budget` refuses an estimate
past ``max_request_bytes`` (413, naming the setting and the estimate); the routes compare
``units`` with ``analysis_job_threshold`` to run slow requests as jobs.

The estimate is *held* bytes (what stays alive for the whole request: features,
descriptors) plus the largest *phase* (one image's decode and forward pass; the measure's
working memory; a heat map at image size), because phases run one after another. The
constants were checked against the peak RSS growth of real requests in a fresh process
(``benchmarks/bench_memory.py``, EfficientNet-Lite0): measured / estimated was 0.71–0.92
on every endpoint's heavy case (bins at 256, 5,120-dim Mahalanobis, MMD with permutations,
three-layer separation, native Grad-CAM, Score-CAM and predictions on 12 MP photos) and 0.41
for t-SNE of 600 points, whose estimate is dominated by n² terms meant for larger n. The
estimate is meant as an upper bound: a factor up to 1 is the target, above 1 a bug.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.config import Settings
from app.errors import LimitExceeded

__all__ = [
    "Estimate",
    "Extraction",
    "ModelCost",
    "check_budget",
    "descriptor_shape",
    "estimate_distances",
    "estimate_embedding",
    "estimate_heatmap",
    "estimate_prediction",
    "heatmap_passes",
    "estimate_separation",
    "input_pixels",
]

F32 = 4
F64 = 8
_RGB = 4  # Pillow keeps an RGB picture as 4 bytes a pixel
_PERMUTATION_BATCH = 256  # assignments app.engine.inference evaluates at once
_NULL_BLOCK = 1024  # Gram block of the MMD permutation fast path
# MMD's bootstrap resamples (app.engine.measures.mmd.RESAMPLED_ROWS, and the median
# heuristic's rows, _kernels.MEDIAN_ROWS): kept equal by tests/service/test_budgets.py
RESAMPLED_ROWS = 4096
MEDIAN_ROWS = 1024
_OVERHEAD = 16 * 2**20  # a request's own objects, the answer's JSON, allocator slack
_MMD_MEASURES = frozenset({"mmd", "seed_mmd"})
_MEAN_MEASURES = frozenset({"euclidean", "std_euclidean", "cosine"})
_GRADIENT_METHODS = frozenset({"gradcam", "gradcampp", "layercam"})
# A heat map at image size: the float32 map, score_boxes' float64 copies and sort (3), the
# display normalisation and the figure's float32 bytes with their base64 text.
_HEATMAP_BYTES_PER_PIXEL = F32 + 3 * F64 + F32 + 2 * F32
# Preprocessing at image size (app.engine.preprocess): an RGB copy, one float32 plane, a band.
_PREPROCESS_BYTES_PER_PIXEL = 10
# One work unit is about this many multiply-adds of a measure (a little over 1 ms here), so
# the default analysis_job_threshold of 20,000 units sends work of about half a minute or
# more to a job.
FLOPS_PER_UNIT = 2**24
_TSNE_BASE = 48 * 2**20  # openTSNE's own working set, measured at 600 points
# openTSNE on n points: exact neighbours / affinities below 1000 points, and the
# gradient's n×n-sized work in Barnes–Hut; counted as two n×n float64 arrays.
_TSNE_SQUARES = 2


@dataclass(frozen=True)
class ModelCost:
    """What one forward pass of a model holds, per input pixel.

    Attributes:
        forward_per_pixel: bytes per input pixel of an inference-mode forward pass.
        gradient_per_pixel: bytes per input pixel of a forward pass that keeps its autograd
            graph and takes gradients (the gradient CAM family).
        input_size: the model's square input side in ``resize`` mode.
        macs_per_pixel: multiply-adds per input pixel of one forward pass (its
            convolutions and linear layers); 0 when unknown.
    """

    forward_per_pixel: float
    gradient_per_pixel: float
    input_size: int
    macs_per_pixel: float = 0.0


@dataclass(frozen=True)
class Estimate:
    """An estimate of one request: bytes held throughout, the largest of the phases that
    run one after another, and work units (compared with ``analysis_job_threshold``).

    Attributes:
        kind: what the request is (``distances``, ``heat map``, …), for messages.
        held: name → bytes alive for the whole request.
        phases: name → bytes of a phase (only the largest counts).
        units: work units of the request.
        hint: what to ask for instead when it is too large.
    """

    kind: str
    held: Mapping[str, int] = field(default_factory=dict)
    phases: Mapping[str, int] = field(default_factory=dict)
    units: int = 0
    hint: str = "ask for less"

    @property
    def bytes(self) -> int:
        """Estimated peak bytes: everything held plus the largest phase (plus a small fixed
        overhead)."""
        return _OVERHEAD + sum(self.held.values()) + max(self.phases.values(), default=0)

    def describe(self) -> str:
        """The largest parts with their sizes, largest first."""
        parts = sorted([*self.held.items(), *self.phases.items()], key=lambda kv: -kv[1])
        return ", ".join(f"{name} {_size(nbytes)}" for name, nbytes in parts[:4])


def _size(nbytes: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} B"


def check_budget(settings: Settings, estimate: Estimate) -> Estimate:
    """Refuse ``estimate`` past ``max_request_bytes``; return it when it fits.

    Raises:
        LimitExceeded: the estimate is larger than the setting (the message names both).
    """
    limit = settings.max_request_bytes
    if estimate.bytes > limit:
        raise LimitExceeded(
            f"this {estimate.kind} request would need about {_size(estimate.bytes)} of memory "
            f"by its estimate ({estimate.describe()}), more than max_request_bytes = "
            f"{_size(limit)} (setting FEATUREGAP_MAX_REQUEST_BYTES); {estimate.hint}"
        )
    return estimate


def input_pixels(cost: ModelCost, mode: str, width: int, height: int, native_max_side: int) -> int:
    """Pixels of the model's input for an image: the square input in ``resize`` mode, the
    image scaled to at most ``native_max_side`` per side in ``native`` mode."""
    if mode != "native":
        return cost.input_size * cost.input_size
    scale = min(1.0, native_max_side / max(1, width, height))
    return max(1, round(width * scale)) * max(1, round(height * scale))


def descriptor_shape(descriptor: str, channels: int, grid_size: int) -> tuple[int, int]:
    """``(rows per box, dims per row)`` of a descriptor: ``gap`` is one ``C`` vector,
    ``grid`` one ``C·s²`` vector, ``pixels`` ``s²`` rows of ``C``."""
    cells = grid_size * grid_size
    if descriptor == "grid":
        return 1, channels * cells
    if descriptor == "pixels":
        return cells, channels
    return 1, channels


@dataclass(frozen=True)
class Extraction:
    """The forward passes of a request over stored boxes: each image of ``image_sizes``
    (``(width, height)``) decoded and forwarded once, in ``mode``.

    Attributes:
        cost: the model's forward cost.
        mode: ``resize`` or ``native`` (scaled to at most ``native_max_side`` per side).
        image_sizes: the images the boxes lie on.
        native_max_side: the native mode's longest side.
    """

    cost: ModelCost
    mode: str
    image_sizes: Sequence[tuple[int, int]]
    native_max_side: int

    def peak(self) -> int:
        """One image's decode and forward pass, the largest of the images."""
        return max(
            (
                width * height * (_RGB + _PREPROCESS_BYTES_PER_PIXEL)
                + int(self._pixels(width, height) * self.cost.forward_per_pixel)
                for width, height in self.image_sizes
            ),
            default=0,
        )

    def _pixels(self, width: int, height: int) -> int:
        return input_pixels(self.cost, self.mode, width, height, self.native_max_side)


def _measure_bytes(measure: str, options: Mapping[str, Any], rows: int, dims: int) -> int:
    """Working memory of one call of a measure on ``rows`` pooled rows of ``dims``."""
    pooled = rows * dims * F64
    if measure in _MEAN_MEASURES:
        return 2 * pooled
    if measure == "mahalanobis":  # fewer rows than dims: through the rows' Gram matrix
        small = min(rows, dims)
        return (5 if rows >= dims else 3) * small * small * F64 + 4 * pooled
    if measure == "mutual_information":
        bins = int(options.get("bins", 16))
        return 3 * bins * bins * F64 + 6 * dims * F64 + pooled
    if measure in _MMD_MEASURES:
        block = min(int(options.get("block_size", 1024)), max(1, rows))  # MMDOptions default
        return 3 * block * block * F64 + 2 * pooled
    if measure == "grassmann":
        return 3 * pooled + 2 * min(rows, dims) * dims * F64
    return 4 * pooled


def _resampled_bytes(measure: str, options: Mapping[str, Any], rows: int) -> int:
    """What MMD's bootstrap keeps beside the calls (:meth:`MMD.resampled`): the pooled rows'
    squared distances, a resample's block of them and its kernel values (a copy for the
    multi-kernel), its median subset's block and the values above its diagonal."""
    if measure != "mmd" or options.get("estimator") == "linear" or rows > RESAMPLED_ROWS:
        return 0
    return (3 * rows * rows + 2 * min(rows, MEDIAN_ROWS) ** 2) * F64


def _measure_flops(measure: str, rows: int, dims: int) -> int:
    """Multiply-adds of one call of a measure on ``rows`` pooled rows of ``dims``."""
    if measure in _MMD_MEASURES:
        return rows * rows * dims
    if measure == "mahalanobis":
        small = min(rows, dims)
        return small * (rows * dims + small * small)
    if measure == "grassmann":
        return rows * dims * min(rows, dims)
    return rows * dims


def estimate_distances(
    *,
    extraction: Extraction,
    measure: str,
    options: Mapping[str, Any],
    descriptor: str,
    channels: int,
    grid_size: int,
    group_sizes: Sequence[int],
    permutations: int,
    bootstrap: int,
    units: int,
) -> Estimate:
    """A distance matrix between groups, with its permutation tests and bootstrap.

    Args:
        extraction: the forward passes the boxes need.
        measure: the measure's name; options: its options.
        descriptor: ``gap``, ``grid`` or ``pixels``; channels: the layer's channels;
            grid_size: ``s``.
        group_sizes: boxes per group.
        permutations: draws per pair; bootstrap: resamples per pair.
        units: the request's work units by count (boxes × (draws + resamples)); the
            estimate's units are the larger of these and the measure's multiply-adds over
            :data:`FLOPS_PER_UNIT` (MMD on ``pixels`` grows with rows²).
    """
    per_box, dims = descriptor_shape(descriptor, channels, grid_size)
    rows = sum(group_sizes) * per_box
    largest = sorted(group_sizes, reverse=True)[:2]
    pair_rows = sum(largest) * per_box
    held = {"descriptors (float32, and float64 rows)": rows * dims * (F32 + F32 + F64)}
    phases = {
        "decode and forward of one image": extraction.peak(),
        f"{measure} on a pair": _measure_bytes(measure, options, pair_rows, dims),
    }
    if permutations:
        batch = min(_PERMUTATION_BATCH, permutations)
        extra = pair_rows * batch * F64 * 2
        extra += (
            3 * _NULL_BLOCK**2 * F64
            if measure in _MMD_MEASURES
            else _measure_bytes(measure, options, pair_rows, dims) + pair_rows * dims * F64
        )
        phases = {**phases, "permutation test on a pair": extra}
    if bootstrap:
        phases = {
            **phases,
            "bootstrap on a pair": _measure_bytes(measure, options, pair_rows, dims)
            + 2 * pair_rows * dims * F64
            + _resampled_bytes(measure, options, pair_rows),
        }
    k = len(group_sizes)
    calls = (
        1
        + bootstrap
        + (-(-permutations // _PERMUTATION_BATCH) if measure in _MMD_MEASURES else permutations)
    )
    flops = k * (k - 1) // 2 * calls * _measure_flops(measure, pair_rows, dims)
    units = max(units, flops // FLOPS_PER_UNIT)
    return Estimate(
        "distances",
        held,
        phases,
        units,
        hint=(
            "ask for fewer boxes or labels, a smaller grid_size, the 'gap' descriptor, smaller "
            "measure options (bins, block_size) or fewer permutations"
        ),
    )


def estimate_separation(
    *,
    extraction: Extraction,
    measure: str,
    options: Mapping[str, Any],
    descriptor: str,
    channels: Sequence[int],
    grid_size: int,
    n_boxes: int,
    units: int,
) -> Estimate:
    """Intra/inter distances of ``n_boxes`` boxes at each layer (``channels`` per layer)."""
    shapes = [descriptor_shape(descriptor, c, grid_size) for c in channels]
    held = {"descriptors of every layer": sum(n_boxes * r * d * F32 for r, d in shapes)}
    widest_rows, widest = max(
        ((r, d) for r, d in shapes), key=lambda rd: rd[0] * rd[1], default=(1, 1)
    )
    if descriptor == "pixels":
        work = _measure_bytes(measure, options, 2 * widest_rows, widest)
    else:
        work = _measure_bytes(measure, options, n_boxes, widest)
    phases = {
        "decode and forward of one image": extraction.peak(),
        "one layer's pairwise matrix": 3 * n_boxes * n_boxes * F64
        + n_boxes * widest_rows * widest * F64
        + work,
    }
    return Estimate(
        "separation",
        held,
        phases,
        units,
        hint=("ask for fewer labels or layers, a smaller grid_size or the 'gap' descriptor"),
    )


def estimate_embedding(
    *,
    extraction: Extraction,
    method: str,
    descriptor: str,
    channels: int,
    grid_size: int,
    n_boxes: int,
    units: int,
) -> Estimate:
    """t-SNE or PCA of one descriptor per box (t-SNE counts ``n²``)."""
    _, dims = descriptor_shape(descriptor, channels, grid_size)
    held = {"descriptors": n_boxes * dims * (F32 + F64)}
    work = (
        _TSNE_BASE + _TSNE_SQUARES * n_boxes * n_boxes * F64 + 2 * n_boxes * dims * F64
        if method == "tsne"
        else 3 * n_boxes * dims * F64
    )
    phases = {
        "decode and forward of one image": extraction.peak(),
        f"{method} of {n_boxes} points": work,
    }
    return Estimate(
        "embedding",
        held,
        phases,
        units,
        hint=("ask for fewer boxes (labels or box_ids), the 'gap' descriptor or method 'pca'"),
    )


def heatmap_passes(method: str, channels: int = 0, max_channels: int = 64) -> int:
    """Forward passes one heat map costs: its own pass (a backward pass counts as two more
    for the gradient family), one per masked input for Score-CAM (at most ``max_channels``
    of the layer's ``channels``: constant channels are skipped, so this is an upper
    bound), and the top-5 prediction's."""
    if method == "scorecam":
        return 2 + min(max_channels, channels)
    return 4 if method in _GRADIENT_METHODS else 2


def estimate_heatmap(
    *,
    cost: ModelCost,
    method: str,
    width: int,
    height: int,
    mode: str,
    native_max_side: int,
    scorecam_batch_pixels: int = 0,
    channels: int = 0,
    max_channels: int = 64,
) -> Estimate:
    """One heat map at image size with its scores, prediction and figure.

    Its work units are the multiply-adds of its forward passes (:func:`heatmap_passes`)
    over :data:`FLOPS_PER_UNIT`: Score-CAM's grow with its channels, every method's with
    the input's pixels in ``native`` mode.

    Args:
        scorecam_batch_pixels: input pixels Score-CAM forwards at once (its batch × the
            input's pixels); 0 for other methods.
        channels: the layer's channels; max_channels: Score-CAM's option.
    """
    pixels = input_pixels(cost, mode, width, height, native_max_side)
    macs = heatmap_passes(method, channels, max_channels) * pixels * cost.macs_per_pixel
    per_pixel = cost.gradient_per_pixel if method in _GRADIENT_METHODS else cost.forward_per_pixel
    forward = int(pixels * per_pixel) + width * height * _PREPROCESS_BYTES_PER_PIXEL
    if method == "scorecam":
        # the masked batch (masks and masked inputs) and its forward pass
        forward += int(scorecam_batch_pixels * (cost.forward_per_pixel + 4 * 3 * F32))
    held = {"decoded image": width * height * _RGB}
    phases = {
        "forward pass" + (" with gradients" if method in _GRADIENT_METHODS else ""): forward,
        "heat map and scores at image size": width * height * _HEATMAP_BYTES_PER_PIXEL,
    }
    return Estimate(
        "heat map",
        held,
        phases,
        -int(-macs // FLOPS_PER_UNIT),
        hint=("use mode 'resize', a smaller image, or a method without gradients"),
    )


def estimate_prediction(
    *, cost: ModelCost, width: int, height: int, mode: str, native_max_side: int
) -> Estimate:
    """Top-k classes of an image (or a box's crop): its decode and one forward pass."""
    pixels = input_pixels(cost, mode, width, height, native_max_side)
    return Estimate(
        "prediction",
        {"decoded image": width * height * _RGB},
        {
            "forward pass": int(pixels * cost.forward_per_pixel)
            + width * height * _PREPROCESS_BYTES_PER_PIXEL
        },
        0,
        hint="use mode 'resize' or a smaller image",
    )
