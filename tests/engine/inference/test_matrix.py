"""The matrix of tests says each warning once and carries its intervals' method."""

from __future__ import annotations

import torch

from app.engine.inference import Design, Group, bootstrap_interval, matrix_tests
from app.engine.inference.permutation import SINGLE_IMAGES
from app.engine.measures import get_measure


def _group(name: str, images: list[str], rows: int, shift: float) -> Group:
    """``rows`` boxes (one row each) spread over ``images`` in turn."""
    g = torch.Generator().manual_seed(len(name) * 7 + rows)
    data = torch.randn(rows, 3, generator=g, dtype=torch.float64) + shift
    boxes = tuple(f"{name}{i}" for i in range(rows))
    return Group(data, boxes, tuple(images[i % len(images)] for i in range(rows)))


def test_a_single_image_matrix_says_so_once_and_each_pair_warning_once() -> None:
    # Three labels, each on one image of its own: the matrix says it once; the pairs' own
    # "too few images" (the same for every pair) is said once for every pair; no pair
    # repeats the single-image warning and no pair gets a zero-width interval.
    groups = {
        name: _group(name, [f"img-{name}"], 4, k) for k, name in enumerate(("ant", "bee", "cow"))
    }
    t = matrix_tests(groups, get_measure("euclidean"), permutations=20, bootstrap=1000)
    assert t.unit == "image" and len(t.tests) == 3
    said = "\n".join(t.warnings)
    assert sum("single image" in w for w in t.warnings) == 1, t.warnings
    assert said.count("single image") == 1 and SINGLE_IMAGES not in said
    assert [w for w in t.warnings if "too few images for a test" in w] == [
        next(w for w in t.warnings if w.startswith("every pair: too few images for a test"))
    ]
    assert [w for w in t.warnings if "no interval" in w] == [
        "every pair: no interval: too few images for an interval: 1 vs 1; a bootstrap needs "
        "at least 2 images per group (with 1 the group's own variation is left out)"
    ]
    assert len(t.warnings) == 3 and all(p.interval is None for p in t.tests)


def test_a_pair_of_single_images_keeps_its_own_warning() -> None:
    # Only ant and bee are single images; cow spreads over three images. Not every group is
    # a single image, so the warning is the ant–bee pair's own.
    groups = {
        "ant": _group("ant", ["a"], 4, 0.0),
        "bee": _group("bee", ["b"], 4, 1.0),
        "cow": _group("cow", ["c1", "c2", "c3"], 6, 2.0),
    }
    t = matrix_tests(groups, get_measure("euclidean"), permutations=20)
    assert f"ant vs bee: {SINGLE_IMAGES}" in t.warnings
    assert sum(SINGLE_IMAGES in w for w in t.warnings) == 1
    assert not any(w.startswith("every pair") for w in t.warnings)


def test_intervals_carry_their_method_and_equal_the_pair_bootstrap() -> None:
    groups = {
        "ant": _group("ant", ["a1", "a2", "a3", "a4", "a5"], 10, 0.0),
        "bee": _group("bee", ["b1", "b2", "b3", "b4", "b5", "b6"], 12, 0.7),
    }
    measure = get_measure("euclidean")
    design = Design(
        groups["ant"].boxes, groups["ant"].images, groups["bee"].boxes, groups["bee"].images
    )
    for method in ("bca", "percentile"):
        t = matrix_tests(groups, measure, bootstrap=300, seed=4, interval_method=method)
        (pair,) = t.tests
        want = bootstrap_interval(
            measure,
            groups["ant"].rows,
            groups["bee"].rows,
            design,
            resamples=300,
            seed=4,
            method=method,
            scale=measure.interval_scale,  # euclidean's: the bias-corrected squared distance
        )
        assert pair.interval == want and want.method == method and want.resamples == 300
        assert t.warnings[0] == (
            "the intervals rest on 300 bootstrap resamples, so their ends are noisy; ask for "
            "at least 1000"
        )
    bca, percentile = (
        matrix_tests(groups, measure, bootstrap=300, seed=4, interval_method=m).tests[0].interval
        for m in ("bca", "percentile")
    )
    assert bca is not None and percentile is not None and bca != percentile


def test_a_warning_of_many_pairs_names_five_and_counts_the_rest() -> None:
    # Seven single-image labels and one spread over three images: 21 of the 28 pairs are
    # two single images, which is said once, naming five pairs and counting the rest.
    groups = {name: _group(name, [f"img-{name}"], 3, k) for k, name in enumerate("abcdefg")}
    groups["z"] = _group("z", ["z1", "z2", "z3"], 6, 9.0)
    t = matrix_tests(groups, get_measure("euclidean"), permutations=10)
    (said,) = [w for w in t.warnings if SINGLE_IMAGES in w]
    assert said == f"a vs b, a vs c, a vs d, a vs e, a vs f and 16 more pairs: {SINGLE_IMAGES}"


def test_a_measure_whose_intervals_fail_gives_none_and_says_why_once() -> None:
    # Mahalanobis's bootstrap intervals were measured on real boxes and did not hold their
    # level: every pair says so once, and its permutation test is still given.
    groups = {
        name: _group(name, [f"{name}{i}" for i in range(6)], 12, k)
        for k, name in enumerate(("ant", "bee", "cow"))
    }
    measure = get_measure("mahalanobis")
    assert measure.interval_refusal is not None
    t = matrix_tests(groups, measure, permutations=20, bootstrap=200)
    assert all(p.interval is None and p.p_value is not None for p in t.tests)
    assert t.warnings == [f"every pair: no interval: {measure.interval_refusal}"]
    euclidean = matrix_tests(groups, get_measure("euclidean"), permutations=20, bootstrap=200)
    assert all(p.interval is not None for p in euclidean.tests)
    assert not any("no interval" in w for w in euclidean.warnings)
