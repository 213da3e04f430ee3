"""Predictions of the embedded model on real photos, and top-k from logits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from app.boxes import Box
from app.engine.models import LoadedModel
from app.engine.predictions import predict, predict_from_logits


@pytest.fixture(scope="module")
def model(embedded_model: LoadedModel) -> LoadedModel:
    return embedded_model


def test_embedded_model_sees_a_cat_and_an_espresso(model: LoadedModel, photo: Any) -> None:
    cat = predict(model, photo.decoded("chelsea"), k=3)
    assert {281, 285} & {p.index for p in cat}
    assert cat[0].index == 285 and cat[0].label == "Egyptian cat"
    assert 0.7 < cat[0].probability < 0.9
    coffee = predict(model, photo.decoded("coffee"), k=5)
    assert coffee[0].index == 967 and coffee[0].label == "espresso"
    assert [p.probability for p in coffee] == sorted((p.probability for p in coffee), reverse=True)


def test_box_prediction_equals_prediction_of_the_crop(model: LoadedModel, photo: Any) -> None:
    array = photo("chelsea")
    whole = photo.decoded(array)
    got = predict(model, whole, k=4, box=Box(130, 20, 190, 170))
    want = predict(model, photo.decoded(np.ascontiguousarray(array[20:190, 130:320])), k=4)
    assert [p.index for p in got] == [p.index for p in want]
    np.testing.assert_allclose(
        [p.probability for p in got], [p.probability for p in want], rtol=1e-6
    )
    with pytest.raises(ValueError, match="outside"):
        predict(model, whole, box=Box(9000, 0, 5, 5))


def test_predict_from_logits_matches_softmax_reference(model: LoadedModel) -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(size=1000) * 4
    out = predict_from_logits(model, torch.from_numpy(logits).float(), k=7)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs)[:7]
    assert [p.index for p in out] == order.tolist()
    np.testing.assert_allclose([p.probability for p in out], probs[order], rtol=1e-5)
    assert out[0].label == model.spec.class_names[int(order[0])]
    assert len(predict_from_logits(model, torch.zeros(1000), k=5000)) == 1000
    with pytest.raises(ValueError, match="k must"):
        predict_from_logits(model, torch.zeros(1000), k=0)
    with pytest.raises(ValueError, match="vector"):
        predict_from_logits(model, torch.zeros(2, 1000))
