"""Localisation scores against Quantus's own metric classes, sklearn and naive loops.

Quantus metrics are called with ``normalise=False, abs=False`` (the raw maps FeatureGap
scores) and ``disable_warnings=True``; ``x_batch`` only fixes the shape.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import jaccard_score, roc_auc_score

from app.boxes import Box
from app.engine.localisation import LOCALISATION_SCORES, box_mask, prepare_map, score_boxes

quantus = pytest.importorskip("quantus")

QUIET = {"normalise": False, "abs": False, "disable_warnings": True}
SIZES = [(17, 23), (1, 9), (31, 7), (40, 41)]


def _random_boxes(rng: np.random.Generator, height: int, width: int, n: int) -> list[Box]:
    boxes = []
    for _ in range(n):
        x0, x1 = sorted(rng.choice(width + 1, size=2, replace=False))
        y0, y1 = sorted(rng.choice(height + 1, size=2, replace=False))
        boxes.append(Box(int(x0), int(y0), int(x1 - x0), int(y1 - y0)))
    return boxes


def _quantus(metric: Any, maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    n = maps.shape[0]
    result = metric(
        model=None,
        x_batch=np.zeros_like(maps)[:, None],
        y_batch=np.zeros(n, int),
        a_batch=maps[:, None],
        s_batch=masks[:, None].astype(float),
        channel_first=True,
    )
    return np.asarray(result, dtype=float)


def _ours(maps: np.ndarray, boxes: list[Box], score: str, **options: Any) -> np.ndarray:
    pairs = zip(maps, boxes, strict=True)
    return np.array([score_boxes(m, [b], [score], **options)[0][score] for m, b in pairs])


def _trials(
    height: int, width: int, seed: int, n: int = 40, signed: bool = True
) -> tuple[np.ndarray, list[Box], np.ndarray]:
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=(n, height, width))
    if not signed:
        maps = np.abs(maps)
    boxes = _random_boxes(rng, height, width, n)
    masks = np.stack([box_mask(b, height, width) for b in boxes])
    return maps, boxes, masks


# --- agreement with Quantus ------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_agrees_with_quantus_on_continuous_maps(height: int, width: int) -> None:
    maps, boxes, masks = _trials(height, width, seed=height * width)
    checks = [
        ("pointing_game", quantus.PointingGame(**QUIET), {}),
        ("relevance_rank", quantus.RelevanceRankAccuracy(**QUIET), {}),
        ("auc", quantus.AUC(**QUIET), {}),
    ]
    k = max(1, height * width // 3)
    checks.append(("top_k_intersection", quantus.TopKIntersection(k=k, **QUIET), {"k": k}))
    checks.append(
        (
            "top_k_intersection",
            quantus.TopKIntersection(k=k, concept_influence=True, **QUIET),
            {"k": k, "concept_influence": True},
        )
    )
    for name, metric, options in checks:
        with warnings.catch_warnings():
            # boxes covering a whole 1×9 map: AUC undefined, NaN on both sides
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            expected = _quantus(metric, maps, masks)
        np.testing.assert_allclose(
            _ours(maps, boxes, name, **options), expected, rtol=1e-12, err_msg=name
        )


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_energy_is_quantus_relevance_mass_on_non_negative_maps(height: int, width: int) -> None:
    maps, boxes, masks = _trials(height, width, seed=7 + height, signed=False)
    expected = _quantus(quantus.RelevanceMassAccuracy(**QUIET), maps, masks)
    np.testing.assert_allclose(_ours(maps, boxes, "energy"), expected, rtol=1e-12)


def test_energy_differs_on_signed_maps_it_uses_the_positive_part() -> None:
    maps, boxes, masks = _trials(17, 23, seed=3)
    ours = _ours(maps, boxes, "energy")
    theirs = _quantus(quantus.RelevanceMassAccuracy(**QUIET), maps, masks)
    positive = np.maximum(maps, 0)
    by_hand = (positive * masks).sum(axis=(1, 2)) / positive.sum(axis=(1, 2))
    np.testing.assert_allclose(ours, by_hand, rtol=1e-12)
    assert ((ours >= 0) & (ours <= 1)).all()
    assert ((theirs < 0) | (theirs > 1)).any()  # raw ratios of signed sums leave [0, 1]


def test_quantus_normalise_is_one_positive_factor_and_abs_changes_the_scores() -> None:
    # Quantus's default normalise=True divides by max|a|: these scores ignore that; its
    # abs=True would count negative evidence as relevance, which FeatureGap never does
    maps, boxes, masks = _trials(17, 23, seed=5)
    ours = _ours(maps, boxes, "relevance_rank")
    raw = _quantus(quantus.RelevanceRankAccuracy(**QUIET), maps, masks)
    normalised = _quantus(
        quantus.RelevanceRankAccuracy(abs=False, disable_warnings=True), maps, masks
    )
    absolute = _quantus(
        quantus.RelevanceRankAccuracy(abs=True, normalise=False, disable_warnings=True), maps, masks
    )
    np.testing.assert_allclose(ours, raw, rtol=1e-12)
    np.testing.assert_allclose(ours, normalised, rtol=1e-12)
    assert not np.allclose(ours, absolute)
    np.testing.assert_allclose(_ours(np.abs(maps), boxes, "relevance_rank"), absolute, rtol=1e-12)


def test_pointing_game_ties_count_as_in_quantus() -> None:
    rng = np.random.default_rng(11)
    maps = rng.integers(0, 3, size=(60, 9, 13)).astype(float)  # many tied maxima
    boxes = _random_boxes(rng, 9, 13, 60)
    masks = np.stack([box_mask(b, 9, 13) for b in boxes])
    expected = _quantus(quantus.PointingGame(**QUIET), maps, masks)
    np.testing.assert_array_equal(_ours(maps, boxes, "pointing_game"), expected)
    peak_anywhere_inside = [(m[k] == m.max()).any() for m, k in zip(maps, masks, strict=True)]
    np.testing.assert_array_equal(_ours(maps, boxes, "pointing_game"), peak_anywhere_inside)
    assert 0 < np.mean(peak_anywhere_inside) < 1


def test_pointing_game_empty_mask_is_an_error_not_a_hit() -> None:
    heat = np.random.default_rng(0).normal(size=(2, 6, 8))
    masks = np.zeros((2, 6, 8), dtype=bool)
    masks[0, 1:3, 1:3] = True
    assert _quantus(quantus.PointingGame(**QUIET), heat, masks)[1] == 1.0  # NaN stored as True
    with pytest.raises(ValueError, match="covers no pixel centre"):
        score_boxes(heat[1], [Box(2.6, 1.0, 0.3, 3.0)], ["pointing_game"])


def test_quantus_weighted_pointing_game_crashes_so_it_is_not_offered() -> None:
    heat = np.zeros((1, 6, 8))
    heat[0, 2, 2] = 1.0
    masks = np.zeros((1, 6, 8), dtype=bool)
    masks[0, 1:4, 1:4] = True
    with pytest.raises(TypeError):
        _quantus(quantus.PointingGame(weighted=True, **QUIET), heat, masks)
    assert score_boxes(heat[0], [Box(1, 1, 3, 3)], ["pointing_game"]) == [{"pointing_game": 1.0}]
    with pytest.raises(ValueError, match="unknown option 'weighted'"):
        score_boxes(heat[0], [Box(1, 1, 3, 3)], ["pointing_game"], weighted=True)


# --- ties, AUC, IoU, edge cases ------------------------------------------------------------


@pytest.mark.parametrize("score", ["relevance_rank", "top_k_intersection"])
def test_rank_scores_with_ties_are_the_mean_over_random_tie_breaks(score: str) -> None:
    rng = np.random.default_rng(4)
    heat = rng.integers(0, 4, size=(7, 11)).astype(float)
    box = Box(2, 1, 5, 4)
    mask = box_mask(box, 7, 11).reshape(-1)
    k = 20 if score == "top_k_intersection" else int(mask.sum())
    options = {"k": k} if score == "top_k_intersection" else {}
    ours = score_boxes(heat, [box], [score], **options)[0][score]
    values = heat.reshape(-1)
    shares = []
    for _ in range(4000):
        order = np.lexsort((rng.random(values.size), -values))  # by value, ties at random
        shares.append(mask[order[:k]].mean())
    assert ours == pytest.approx(np.mean(shares), abs=0.01)
    assert min(shares) < ours < max(shares)  # the ties matter here


def test_auc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(9)
    for trial in range(30):
        height, width = int(rng.integers(2, 30)), int(rng.integers(2, 30))
        heat = rng.integers(0, 5, size=(height, width)).astype(float)
        (box,) = _random_boxes(rng, height, width, 1)
        mask = box_mask(box, height, width).reshape(-1)
        if mask.all():
            continue
        ours = score_boxes(heat, [box], ["auc"])[0]["auc"]
        assert ours == pytest.approx(roc_auc_score(mask, heat.reshape(-1)), rel=1e-12), trial


def test_auc_of_a_box_covering_the_whole_image_is_nan_as_in_quantus() -> None:
    heat = np.random.default_rng(1).normal(size=(1, 5, 7))
    masks = np.ones((1, 5, 7), dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # no negative samples
        assert math.isnan(_quantus(quantus.AUC(**QUIET), heat, masks)[0])
    assert math.isnan(score_boxes(heat[0], [Box(0, 0, 7, 5)], ["auc"])[0]["auc"])


@pytest.mark.parametrize(
    ("mode", "threshold"),
    [("fraction", 0.5), ("fraction", 0.2), ("quantile", 0.8), ("quantile", 0.0)],
)
def test_iou_equals_sklearn_jaccard(mode: str, threshold: float) -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        heat = rng.normal(size=(19, 14))
        (box,) = _random_boxes(rng, 19, 14, 1)
        mask = box_mask(box, 19, 14).reshape(-1)
        values = heat.reshape(-1)
        cut = threshold * values.max() if mode == "fraction" else np.quantile(values, threshold)
        expected = jaccard_score(mask, values >= cut)
        ours = score_boxes(heat, [box], ["iou"], threshold=threshold, threshold_mode=mode)
        assert ours[0]["iou"] == pytest.approx(expected, rel=1e-12)


def test_all_zero_map_has_defined_scores() -> None:
    heat = np.zeros((1, 8, 10))
    box = Box(2, 2, 3, 4)
    mask = box_mask(box, 8, 10)[None]
    ours = score_boxes(heat[0], [box], k=30)[0]
    share = 12 / 80
    assert ours == pytest.approx(
        {
            "pointing_game": 1.0,
            "energy": 0.0,
            "relevance_rank": share,
            "top_k_intersection": share,
            "auc": 0.5,
            "iou": 0.0,
        }
    )
    with pytest.raises(AssertionError, match="all equal to zero"):  # Quantus refuses it
        _quantus(quantus.RelevanceMassAccuracy(**QUIET), heat, mask)


@pytest.mark.parametrize("name", sorted(LOCALISATION_SCORES))
def test_every_score_rewards_a_map_on_the_box(name: str) -> None:
    rng = np.random.default_rng(0)
    box = Box(5, 3, 40, 30)  # 1200 pixels: more than the default k
    inside = box_mask(box, 60, 100)
    on_box = inside + 0.01 * rng.random((60, 100)) * inside
    beside = np.roll(on_box, 50, axis=1)  # no overlap
    cls = LOCALISATION_SCORES[name]
    assert isinstance(cls.higher_is_better, bool)
    good = score_boxes(on_box, [box], [name])[0][name]
    bad = score_boxes(beside, [box], [name])[0][name]
    assert good == pytest.approx(1.0)
    assert (good > bad) == cls.higher_is_better


# --- boxes and input checks ----------------------------------------------------------------


def test_box_mask_takes_pixels_whose_centres_are_inside() -> None:
    rng = np.random.default_rng(8)
    for _ in range(50):
        box = Box(
            *(float(v) for v in rng.uniform(-3, 12, size=2)),
            *(float(v) for v in rng.uniform(0.2, 9, size=2)),
        )
        naive = np.array(
            [
                [
                    box.x <= j + 0.5 < box.x + box.w and box.y <= i + 0.5 < box.y + box.h
                    for j in range(11)
                ]
                for i in range(9)
            ]
        )
        np.testing.assert_array_equal(box_mask(box, 9, 11), naive)


def test_tensor_maps_and_many_boxes() -> None:
    heat = torch.rand(30, 40, generator=torch.Generator().manual_seed(0))
    boxes = [Box(0, 0, 10, 10), Box(20, 5, 20, 25), Box(0, 0, 40, 30)]
    results = score_boxes(heat, boxes)
    assert [set(r) for r in results] == [set(LOCALISATION_SCORES)] * 3
    assert results[1] == score_boxes(heat.double().numpy(), [boxes[1]])[0]


@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 9), (37, 53), (300, 451)])
@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_ranks_are_scipys_average_ranks_to_the_bit(
    height: int, width: int, decimals: int | None
) -> None:
    from scipy.stats import rankdata

    heat = np.random.default_rng(height).normal(size=(height, width))
    if decimals is not None:  # ties: a few, many, nearly all
        heat = np.round(heat, decimals)
    ranks = prepare_map(heat).ranks
    np.testing.assert_array_equal(ranks, rankdata(heat.reshape(-1), method="average"))
    np.testing.assert_array_equal(prepare_map(np.zeros((3, 4))).ranks, np.full(12, 6.5))


def test_a_prepared_map_scores_box_after_box_as_a_fresh_map_does() -> None:
    # a map with ties (rounded) and boxes of awkward sizes, two of the same size (k reused)
    rng = np.random.default_rng(7)
    heat = np.round(rng.normal(size=(37, 53)), 1)
    boxes = _random_boxes(rng, 37, 53, 9) + [Box(3, 4, 5, 6), Box(20, 9, 5, 6)]
    prepared = prepare_map(torch.from_numpy(heat).float())
    fresh = [score_boxes(torch.from_numpy(heat).float(), [b])[0] for b in boxes]
    for _ in range(2):  # the second pass reads only what the first one kept
        assert score_boxes(prepared, boxes) == fresh
    assert score_boxes(prepared, boxes, ["top_k_intersection"], k=17) == [
        score_boxes(heat.astype(np.float32).astype(np.float64), [b], ["top_k_intersection"], k=17)[
            0
        ]
        for b in boxes
    ]
    with pytest.raises(ValueError, match="NaN or infinite"):
        prepare_map(np.full((3, 4), math.nan))


def test_bad_input_says_how_to_fix_it() -> None:
    heat = np.ones((5, 6))
    with pytest.raises(KeyError, match="unknown localisation score 'focus'; use one of"):
        score_boxes(heat, [Box(0, 0, 2, 2)], ["focus"])
    with pytest.raises(ValueError, match="H×W heat map"):
        score_boxes(np.ones((1, 5, 6)), [Box(0, 0, 2, 2)])
    with pytest.raises(ValueError, match="NaN or infinite"):
        score_boxes(np.full((5, 6), np.nan), [Box(0, 0, 2, 2)])
    with pytest.raises(ValueError, match="covers no pixel centre"):
        score_boxes(heat, [Box(7, 0, 2, 2)])
    with pytest.raises(ValueError, match="threshold must lie in"):
        score_boxes(heat, [Box(0, 0, 2, 2)], ["iou"], threshold=2.0)
    with pytest.raises(ValueError, match="threshold_mode"):
        score_boxes(heat, [Box(0, 0, 2, 2)], ["iou"], threshold_mode="otsu")
    with pytest.raises(ValueError, match="already registered"):
        LOCALISATION_SCORES.register("auc")(LOCALISATION_SCORES["iou"])
    assert LOCALISATION_SCORES["iou"].name == "iou"
