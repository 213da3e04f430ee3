"""Shared route helpers: a service request is read from its body by field name."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.api.deps import service_request
from app.api.distances import DistancesIn
from app.api.embeddings import EmbeddingIn
from app.api.separation import SeparationIn
from app.service.analysis import DistanceRequest, EmbeddingRequest, SeparationRequest


def test_distance_request_reads_every_field_by_name() -> None:
    body = DistancesIn(
        labels=["a", "b"],
        layer="conv_head",
        measure="mmd",
        descriptor="pixels",
        grid_size=3,
        options={"kernel_num": 3},
        permutations=7,
        seed=11,
        mode="native",
        bootstrap=5,
        unit="box",
        adjust="bh",
        alpha=0.1,
    )
    assert service_request(DistanceRequest, body, model="m") == DistanceRequest(
        "m",
        "conv_head",
        "mmd",
        "pixels",
        3,
        {"kernel_num": 3},
        7,
        11,
        "native",
        5,
        "box",
        "bh",
        0.1,
    )


def test_embedding_and_separation_requests_take_given_values_on_top() -> None:
    body = EmbeddingIn(layer="l", method="pca", perplexity=4.5, seed=2, n_iter=60, grid_size=2)
    assert service_request(EmbeddingRequest, body, model="m") == EmbeddingRequest(
        "m", "l", "pca", 4.5, 2, "gap", 2, "resize", 60
    )
    sep = SeparationIn(layers=["x", "x", "y"], measure="cosine", mode="native")
    made = service_request(SeparationRequest, sep, model="m", layers=["x", "y"], descriptor="gap")
    assert made == SeparationRequest("m", ["x", "y"], "cosine", "gap", 4, "native", {})


def test_a_field_the_body_lacks_is_a_bug_not_a_default() -> None:
    with pytest.raises(AttributeError, match="descriptor"):
        service_request(DistanceRequest, SimpleNamespace(layer="l", measure="m"), model="m")
