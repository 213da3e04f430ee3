"""Budgets: the estimates' arithmetic, by hand, and the refusal that names the setting."""

from __future__ import annotations

import pytest

from app.config import Settings
from app.errors import LimitExceeded
from app.service import budgets
from app.service.budgets import (
    Estimate,
    Extraction,
    ModelCost,
    check_budget,
    descriptor_shape,
    estimate_distances,
    estimate_embedding,
    estimate_heatmap,
    estimate_prediction,
    input_pixels,
)

COST = ModelCost(forward_per_pixel=400.0, gradient_per_pixel=1800.0, input_size=224)
MIB = 2**20


def test_descriptor_shapes() -> None:
    assert descriptor_shape("gap", 1280, 4) == (1, 1280)
    assert descriptor_shape("grid", 1280, 3) == (1, 1280 * 9)
    assert descriptor_shape("pixels", 40, 5) == (25, 40)


def test_input_pixels_by_mode() -> None:
    assert input_pixels(COST, "resize", 6000, 4500, 1024) == 224 * 224
    assert input_pixels(COST, "native", 6000, 4500, 1024) == 1024 * 768
    assert input_pixels(COST, "native", 300, 200, 1024) == 300 * 200


def test_mutual_information_counts_bins_squared_and_descriptors() -> None:
    est = estimate_distances(
        extraction=Extraction(COST, "resize", [(640, 480)], 1024),
        measure="mutual_information",
        options={"bins": 256},
        descriptor="grid",
        channels=1280,
        grid_size=16,
        group_sizes=[20, 20],
        permutations=0,
        bootstrap=0,
        units=40,
    )
    dims = 1280 * 256
    held = 40 * dims * (4 + 4 + 8)
    work = 3 * 256 * 256 * 8 + 6 * dims * 8 + 40 * dims * 8
    forward = 640 * 480 * (4 + 10) + int(224 * 224 * 400.0)
    assert est.bytes == 16 * MIB + held + max(work, forward)
    assert est.units == 40  # a cheap measure: the count of boxes decides


def test_mmd_on_pixels_grows_with_rows_squared_and_becomes_slow() -> None:
    def units(boxes: int) -> int:
        return estimate_distances(
            extraction=Extraction(COST, "resize", [(640, 480)], 1024),
            measure="mmd",
            options={},
            descriptor="pixels",
            channels=1280,
            grid_size=16,
            group_sizes=[boxes] * 3,
            permutations=0,
            bootstrap=0,
            units=3 * boxes,
        ).units

    rows = 2 * 60 * 256
    assert units(60) == 3 * rows * rows * 1280 // budgets.FLOPS_PER_UNIT
    assert units(60) > Settings().analysis_job_threshold  # a job, not a blocked request
    assert units(2) < Settings().analysis_job_threshold


def test_permutations_add_their_assignment_batches() -> None:
    def estimate(permutations: int) -> Estimate:
        return estimate_distances(
            extraction=Extraction(COST, "resize", [(64, 64)], 1024),
            measure="euclidean",
            options={},
            descriptor="gap",
            channels=100,
            grid_size=4,
            group_sizes=[30, 50, 7],
            permutations=permutations,
            bootstrap=0,
            units=87,
        )

    plain, tested = estimate(0), estimate(1000)
    pair = (50 + 30) * 100 * 8
    assert tested.phases["permutation test on a pair"] == 80 * 256 * 8 * 2 + 2 * pair + pair
    assert "permutation test on a pair" not in plain.phases


def test_tsne_counts_n_squared() -> None:
    def size(n: int) -> int:
        return estimate_embedding(
            extraction=Extraction(COST, "resize", [(64, 64)], 1024),
            method="tsne",
            descriptor="gap",
            channels=1280,
            grid_size=4,
            n_boxes=n,
            units=10 * n,
        ).phases[f"tsne of {n} points"]

    assert size(2000) - size(1000) == 2 * (2000**2 - 1000**2) * 8 + 2 * 1000 * 1280 * 8


def test_heatmaps_count_image_pixels_and_gradients() -> None:
    grad = estimate_heatmap(
        cost=COST, method="gradcam", width=6000, height=4500, mode="native", native_max_side=1024
    )
    mean = estimate_heatmap(
        cost=COST, method="mean", width=6000, height=4500, mode="native", native_max_side=1024
    )
    pixels = 6000 * 4500
    assert grad.held == {"decoded image": pixels * 4}
    assert grad.phases["forward pass with gradients"] == int(1024 * 768 * 1800.0) + pixels * 10
    assert mean.phases["forward pass"] == int(1024 * 768 * 400.0) + pixels * 10
    assert grad.phases["heat map and scores at image size"] == pixels * (4 + 24 + 4 + 8)
    score = estimate_heatmap(
        cost=COST,
        method="scorecam",
        width=640,
        height=480,
        mode="resize",
        native_max_side=1024,
        scorecam_batch_pixels=32 * 224 * 224,
    )
    assert score.phases["forward pass"] == (
        int(224 * 224 * 400.0) + 640 * 480 * 10 + int(32 * 224 * 224 * (400.0 + 48))
    )


def test_prediction() -> None:
    est = estimate_prediction(
        cost=COST, width=4000, height=3000, mode="native", native_max_side=1024
    )
    assert est.bytes == 16 * MIB + 4000 * 3000 * 4 + int(1024 * 768 * 400.0) + 4000 * 3000 * 10


def test_check_budget_names_the_setting_and_the_estimate() -> None:
    est = Estimate(
        "distances",
        {"descriptors": 3 * 2**30},
        {"mmd on a pair": 2**30},
        hint="ask for fewer boxes",
    )
    settings = Settings(max_request_bytes=2**30)
    with pytest.raises(LimitExceeded) as caught:
        check_budget(settings, est)
    message = str(caught.value)
    assert "FEATUREGAP_MAX_REQUEST_BYTES" in message
    assert "4.0 GiB" in message and "descriptors 3.0 GiB" in message
    assert "ask for fewer boxes" in message
    assert check_budget(Settings(max_request_bytes=est.bytes), est) is est


def test_settings_defaults() -> None:
    settings = Settings()
    assert settings.max_request_bytes == 3 * 2**30 // 2
    assert settings.max_decoded_bytes == 2 * 2**30


def test_mmd_bootstrap_counts_the_pooled_rows_distances_it_resamples_from() -> None:
    from app.engine.measures._kernels import MEDIAN_ROWS
    from app.engine.measures.mmd import RESAMPLED_ROWS

    assert (budgets.RESAMPLED_ROWS, budgets.MEDIAN_ROWS) == (RESAMPLED_ROWS, MEDIAN_ROWS)

    def bootstrap_bytes(measure: str, boxes: int, options: dict[str, object]) -> int:
        return estimate_distances(
            extraction=Extraction(COST, "resize", [(64, 64)], 1024),
            measure=measure,
            options=options,
            descriptor="pixels",
            channels=100,
            grid_size=4,
            group_sizes=[boxes, boxes],
            permutations=0,
            bootstrap=200,
            units=2 * boxes,
        ).phases["bootstrap on a pair"]

    rows = 2 * 40 * 16  # 1,280 pooled rows: the median looks at 1,024 of them
    added = bootstrap_bytes("mmd", 40, {}) - bootstrap_bytes("mmd", 40, {"estimator": "linear"})
    assert added == (3 * rows * rows + 2 * 1024 * 1024) * 8
    assert bootstrap_bytes("mmd", 200, {}) == bootstrap_bytes("mmd", 200, {"estimator": "linear"})
