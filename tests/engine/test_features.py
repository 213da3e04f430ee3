"""Feature extraction: batched values, both input modes, and the byte-budget cache."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from app.engine import features
from app.engine.features import FeatureCache, default_cache, extract
from app.engine.graph import traced
from app.engine.models import LoadedModel
from app.engine.preprocess import input_size, to_input
from app.images import DecodedImage


@pytest.fixture(scope="module")
def model(embedded_model: LoadedModel) -> LoadedModel:
    return embedded_model


@pytest.fixture(scope="module")
def images(photo: Any) -> list[DecodedImage]:
    return [photo.decoded(name) for name in ("chelsea", "coffee", "astronaut")]


def test_batched_extraction_equals_one_image_at_a_time(
    model: LoadedModel, images: list[DecodedImage]
) -> None:
    seen: list[tuple[int, int]] = []
    out = extract(
        model,
        images,
        ["bn2", "blocks.3.0.conv_pw"],
        batch_size=2,
        with_logits=True,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(2, 3), (3, 3)]
    # one image at a time through the same (batch-norm folded) extractor
    single = traced(model.module).extractor(["bn2", "blocks.3.0.conv_pw"], folded=True)
    for image, result in zip(images, out, strict=True):
        x = to_input(image.pixels, model.spec)[None]
        with torch.inference_mode():
            want = single(x)
            logits = model.module(x)[0]
        assert set(result) == {"bn2", "blocks.3.0.conv_pw", "logits"}
        assert result["bn2"].shape == (1280, 7, 7) and result["bn2"].dtype == torch.float32
        torch.testing.assert_close(result["bn2"], want["bn2"][0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(
            result["blocks.3.0.conv_pw"], want["blocks.3.0.conv_pw"][0], rtol=1e-4, atol=1e-4
        )
        torch.testing.assert_close(result["logits"], logits, rtol=1e-4, atol=1e-4)
    assert int(out[0]["logits"].argmax()) == 285 and int(out[1]["logits"].argmax()) == 967


def test_native_mode_keeps_aspect_and_covers_the_image(
    model: LoadedModel, images: list[DecodedImage]
) -> None:
    chelsea = images[0]  # 451×300
    assert input_size(451, 300, model.spec, "native") == (288, 448)
    assert input_size(451, 300, model.spec, "native", native_max_side=200) == (128, 192)
    assert input_size(10, 5, model.spec, "native") == (32, 32)
    (result,) = extract(model, [chelsea], ["bn2"], mode="native")
    assert result["bn2"].shape == (1280, 9, 14)
    x = to_input(chelsea.pixels, model.spec, "native")
    assert x.shape == (3, 288, 448)
    pixels = torch.from_numpy(np.asarray(chelsea.pixels, dtype=np.float32)).permute(2, 0, 1) / 255
    want = F.interpolate(
        pixels[None], size=(288, 448), mode="bilinear", align_corners=False, antialias=True
    )[0]
    mean = torch.tensor(model.spec.mean).view(3, 1, 1)
    std = torch.tensor(model.spec.std).view(3, 1, 1)
    # PIL's float resampling is the antialiased bilinear filter torch reproduces.
    torch.testing.assert_close(x, (want - mean) / std, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="input mode"):
        extract(model, [chelsea], ["bn2"], mode="crop")  # type: ignore[arg-type]


def test_cache_hit_returns_the_same_tensors_without_a_forward_pass(
    model: LoadedModel, images: list[DecodedImage], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = FeatureCache(max_bytes=64 * 1024 * 1024)
    first = extract(model, images[:2], ["bn2"], cache=cache)
    assert cache.stats.misses == 2 and cache.stats.hits == 0
    assert cache.stats.bytes == 2 * 1280 * 7 * 7 * 4

    def refuse(*args: object) -> None:
        raise AssertionError("a forward pass ran on a cache hit")

    monkeypatch.setattr(features, "_extractor", refuse)
    again = extract(model, images[:2], ["bn2"], cache=cache)
    assert all(a["bn2"] is b["bn2"] for a, b in zip(first, again, strict=True))
    assert cache.stats.hits == 2
    with pytest.raises(AssertionError, match="forward pass"):
        extract(model, images[:1], ["bn2"], cache=cache, mode="native")
    monkeypatch.undo()
    # A partly cached request computes only what is missing.
    mixed = extract(model, images[:1], ["bn2", "conv_head"], cache=cache)
    assert mixed[0]["bn2"] is first[0]["bn2"] and mixed[0]["conv_head"].shape == (1280, 7, 7)


def test_unknown_layer_lists_valid_ones(model: LoadedModel, images: list[DecodedImage]) -> None:
    with pytest.raises(KeyError, match="use one of conv_stem"):
        extract(model, images[:1], ["nope"])
    with pytest.raises(ValueError, match="batch_size"):
        extract(model, images[:1], ["bn2"], batch_size=0)


def test_feature_cache_evicts_least_recently_used() -> None:
    cache = FeatureCache(max_bytes=3 * 40)  # three 10-float tensors
    keys = [("m", "w", "l", str(i), "resize") for i in range(4)]
    for key in keys[:3]:
        cache.put(key, torch.zeros(10))
    assert cache.get(keys[0]) is not None  # now most recent
    cache.put(keys[3], torch.ones(10))
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is not None
    assert cache.stats.bytes == 120 and cache.stats.entries == 3
    cache.put(("big",) * 5, torch.zeros(100))  # larger than the budget: not stored
    assert cache.get(("big",) * 5) is None and cache.stats.entries == 3
    cache.put(keys[3], torch.zeros(5))  # replacing an entry updates the byte count
    assert cache.stats.bytes == 100
    cache.clear()
    assert cache.stats == features.CacheStats(0, 0, 0, 0)
    with pytest.raises(ValueError, match="max_bytes"):
        FeatureCache(-1)
    shared = default_cache(1 << 20)
    shared.clear()  # the process-wide cache: earlier tests may have filled it
    shared.put(keys[0], torch.zeros(1000))
    assert default_cache(1 << 20) is shared and shared.stats.entries == 1
    assert default_cache(100) is shared and shared.max_bytes == 100  # resized, not replaced
    assert shared.stats.entries == 0  # the 4000-byte entry no longer fits
    shared.max_bytes = 1 << 30


def test_native_max_side_is_the_callers_and_part_of_the_cache_key(
    model: LoadedModel, images: list[DecodedImage]
) -> None:
    chelsea = images[0]  # 451×300: at 200 the input is 128×192, at 1024 it is 288×448
    cache = FeatureCache(max_bytes=64 * 1024 * 1024)
    (small,) = extract(model, [chelsea], ["bn2"], mode="native", cache=cache, native_max_side=200)
    (large,) = extract(model, [chelsea], ["bn2"], mode="native", cache=cache)
    assert small["bn2"].shape == (1280, 4, 6) and large["bn2"].shape == (1280, 9, 14)
    assert cache.stats.misses == 2 and cache.stats.entries == 2
    x = to_input(chelsea.pixels, model.spec, "native", native_max_side=200)[None]
    x = x.contiguous(memory_format=torch.channels_last)  # the layout extract forwards in
    with torch.inference_mode():
        want = traced(model.module).extractor(["bn2"], folded=True)(x)["bn2"][0]
    torch.testing.assert_close(small["bn2"], want, rtol=0, atol=0)
