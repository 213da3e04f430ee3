"""Matrices, separation and layer profiles against sklearn and naive loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import silhouette_score

from app.engine.analysis import distance_matrix, layer_profile, separation
from app.engine.measures import (
    MEASURES,
    cosine,
    get_measure,
    mmd,
    mutual_information,
)


def _groups(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a": torch.randn(7, 5, generator=g, dtype=torch.float64),
        "b": torch.randn(4, 5, generator=g, dtype=torch.float64) + 1.0,
        "c": torch.randn(9, 5, generator=g, dtype=torch.float64) - 0.5,
    }


def test_distance_matrix_values_and_p_values() -> None:
    groups = _groups()
    r = distance_matrix(groups, get_measure("mmd", estimator="unbiased", sigma=1.5))
    assert r.labels == ["a", "b", "c"] and not r.higher_is_better
    for i, a in enumerate(r.labels):
        assert r.values[i, i] == 0
        for j, b in enumerate(r.labels):
            if i != j:
                want = mmd(groups[a], groups[b], estimator="unbiased", sigma=1.5)
                assert float(r.values[i, j]) == pytest.approx(want, rel=1e-12)
    # The matrix of tests gives the same values, with a unit-level test per pair.
    from app.engine.inference import Design, Group, matrix_tests, permutation_test

    rows = {
        k: Group(
            v, tuple(f"{k}{i}" for i in range(len(v))), tuple(f"{k}{i}" for i in range(len(v)))
        )
        for k, v in groups.items()
    }
    t = matrix_tests(rows, get_measure("cosine"), permutations=30, seed=2)
    want_p = permutation_test(
        get_measure("cosine"),
        groups["a"],
        groups["c"],
        Design.independent(7, 9),
        permutations=30,
        seed=2,
    )
    pair = next(x for x in t.tests if (x.i, x.j) == (0, 2))
    assert t.unit == "box" and pair.p_value == want_p.p_value
    assert float(t.values[0, 2]) == pytest.approx(cosine(groups["a"], groups["c"]))
    torch.testing.assert_close(t.values, distance_matrix(groups, "cosine").values)


def test_similarity_matrix_diagonal_is_the_self_value() -> None:
    groups = {k: v.repeat(1, 20) for k, v in _groups().items()}
    r = distance_matrix(groups, get_measure("mutual_information", bins=4))
    assert r.higher_is_better
    want = mutual_information(groups["b"].mean(0), groups["b"].mean(0), bins=4)
    assert float(r.values[1, 1]) == pytest.approx(want)


def test_distance_matrix_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2 groups"):
        distance_matrix({"a": torch.ones(2, 2)}, "euclidean")
    with pytest.raises(KeyError, match="unknown measure"):
        distance_matrix(_groups(), "nope")


def _labelled(seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    groups = _groups(seed)
    labels = [k for k, v in groups.items() for _ in range(len(v))]
    return torch.cat(list(groups.values())), labels


@pytest.mark.parametrize("measure", ["euclidean", "cosine"])
def test_separation_matches_naive_loops_and_sklearn_silhouette(measure: str) -> None:
    x, labels = _labelled()
    s = separation(x, labels, get_measure(measure))
    xs = x.numpy()

    def dist(i: int, j: int) -> float:
        if measure == "euclidean":
            return float(np.linalg.norm(xs[i] - xs[j]))
        return 1 - float(xs[i] @ xs[j] / np.linalg.norm(xs[i]) / np.linalg.norm(xs[j]))

    pairs = [(i, j) for i in range(len(xs)) for j in range(len(xs)) if i != j]
    intra = np.mean([dist(i, j) for i, j in pairs if labels[i] == labels[j]])
    inter = np.mean([dist(i, j) for i, j in pairs if labels[i] != labels[j]])
    assert s.intra == pytest.approx(intra, rel=1e-10)
    assert s.inter == pytest.approx(inter, rel=1e-10)
    assert s.ratio == pytest.approx(inter / intra, rel=1e-10)
    assert s.silhouette == pytest.approx(silhouette_score(xs, labels, metric=measure), rel=1e-9)
    b = [i for i, lab in enumerate(labels) if lab == "b"]
    want_b = np.mean([dist(i, j) for i in b for j in b if i != j])
    assert s.per_label["b"].intra == pytest.approx(want_b, rel=1e-10)
    want_b_inter = np.mean([dist(i, j) for i in b for j in range(len(xs)) if labels[j] != "b"])
    assert s.per_label["b"].inter == pytest.approx(want_b_inter, rel=1e-10)


def test_std_euclidean_and_mahalanobis_pairwise() -> None:
    x, labels = _labelled(1)
    from scipy.spatial.distance import cdist
    from sklearn.covariance import LedoitWolf

    v = np.var(x.numpy(), axis=0, ddof=1)
    want = cdist(x.numpy(), x.numpy(), "seuclidean", V=v)
    got = get_measure("std_euclidean").pairwise(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-10)
    resid = np.vstack([x.numpy()[[i for i, la in enumerate(labels) if la == k]] for k in "abc"])
    resid = np.vstack([r - r.mean(0) for r in np.split(resid, [7, 11])])
    vi = np.linalg.inv(LedoitWolf(assume_centered=True).fit(resid).covariance_)
    want = cdist(x.numpy(), x.numpy(), "mahalanobis", VI=vi)
    got = get_measure("mahalanobis").pairwise(x, labels).numpy()
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_singleton_label_has_nan_intra() -> None:
    x, labels = _labelled()
    s = separation(x[:8], labels[:8])
    assert math.isnan(s.per_label["b"].intra)


def test_separation_bad_input() -> None:
    x, labels = _labelled()
    with pytest.raises(ValueError, match="one label per row"):
        separation(x, labels[:-1])
    with pytest.raises(ValueError, match="at least 2 different labels"):
        separation(x, ["a"] * len(labels))
    with pytest.raises(ValueError, match="own label"):
        separation(x[:3], ["a", "b", "c"])
    with pytest.raises(ValueError, match="zero rows"):
        separation(torch.zeros(4, 2), ["a", "a", "b", "b"], "cosine")


def test_layer_profile_is_separation_per_layer_in_order() -> None:
    x, labels = _labelled()
    prof = layer_profile({"late": (x, labels), "early": (x[:, :2], labels)})
    assert [name for name, _ in prof] == ["late", "early"]
    assert prof[1][1] == separation(x[:, :2], labels)
    with pytest.raises(ValueError, match="layer 'bad'"):
        layer_profile({"bad": (x, labels[:3])})


def _boxes(seed: int = 4) -> tuple[list[torch.Tensor], list[str]]:
    """Per-box sets of rows (a box's pixels), of uneven sizes, for three labels."""
    g = torch.Generator().manual_seed(seed)
    sets, labels = [], []
    for label, shift, count in (("a", 0.0, 3), ("b", 1.5, 2), ("c", -1.0, 4)):
        for _ in range(count):
            rows = int(torch.randint(5, 9, (1,), generator=g))
            scale = torch.linspace(2.0, 0.5, 6, dtype=torch.float64)
            sets.append(torch.randn(rows, 6, generator=g, dtype=torch.float64) * scale + shift)
            labels.append(label)
    return sets, labels


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_separation_of_box_sets_works_with_every_measure(name: str) -> None:
    sets, labels = _boxes()
    m = get_measure(name)
    s = separation(sets, labels, m)
    n = len(sets)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                d[i, j] = m(sets[min(i, j)], sets[max(i, j)])
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    intra = np.mean([d[i, j] for i, j in pairs if labels[i] == labels[j]])
    inter = np.mean([d[i, j] for i, j in pairs if labels[i] != labels[j]])
    assert s.intra == pytest.approx(intra, rel=1e-10, abs=1e-14)
    assert s.inter == pytest.approx(inter, rel=1e-10, abs=1e-14)
    c = [i for i, lab in enumerate(labels) if lab == "c"]
    want_c = np.mean([d[i, j] for i in c for j in c if i != j])
    assert s.per_label["c"].intra == pytest.approx(want_c, rel=1e-10, abs=1e-14)
    if m.higher_is_better:
        assert s.ratio == pytest.approx(intra / inter) and math.isnan(s.silhouette)
    else:
        assert s.ratio == pytest.approx(inter / intra)
        assert s.silhouette == pytest.approx(
            silhouette_score(d, labels, metric="precomputed"), rel=1e-9
        )


@pytest.mark.parametrize("name", sorted(set(MEASURES) - {"std_euclidean", "mahalanobis"}))
def test_pairwise_rows_is_the_measure_between_single_rows(name: str) -> None:
    x, _ = _labelled(3)
    x = x[:9] + 2.0  # cosine needs no zero rows; keep the loop small
    m = get_measure(name)
    if m.min_rows > 1:
        with pytest.raises(ValueError, match=f"at least {m.min_rows}"):
            m.pairwise(x)
        return
    got = m.pairwise(x)
    assert got.dtype == torch.float64 and got.shape == (9, 9)
    for i in range(9):
        for j in range(9):
            if i == j and not m.higher_is_better:
                assert float(got[i, i]) == 0.0
            else:
                assert float(got[i, j]) == pytest.approx(
                    m(x[min(i, j)], x[max(i, j)]), rel=1e-9, abs=1e-12
                ), (i, j)


def test_euclidean_and_cosine_pairwise_match_scipy_cdist_to_the_last_digits() -> None:
    from scipy.spatial.distance import cdist

    g = torch.Generator().manual_seed(9)
    x = torch.randn(61, 13, generator=g, dtype=torch.float64) * 1e3
    x[1] = x[0] + 1e-9  # near rows: ‖a‖² + ‖b‖² − 2ab would lose them
    for name in ("euclidean", "cosine"):
        want = cdist(x.numpy(), x.numpy(), name)
        got = get_measure(name).pairwise(x).numpy()
        np.testing.assert_allclose(
            got, want, rtol=1e-9, atol=1e-15 if name == "euclidean" else 1e-13
        )


def test_separation_with_configured_options_and_by_name() -> None:
    sets, labels = _boxes(5)
    by_name = separation(sets, labels, "mmd")
    configured = separation(sets, labels, get_measure("mmd", sigma=2.0, kernel="multi"))
    assert by_name == separation(sets, labels, get_measure("mmd"))
    assert configured.intra != by_name.intra
    with pytest.raises(KeyError, match="use one of"):
        separation(sets, labels, "manhattan")
    prof = layer_profile({"l": (sets, labels)}, get_measure("grassmann", k=2))
    assert prof[0][1] == separation(sets, labels, get_measure("grassmann", k=2))
