"""The training loop on a tiny network: reproducible, frozen where it should be, and it
moves the trained layer in the direction the loss asks (values, not shapes)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn

from app.engine.analysis import separation
from app.engine.measures import mmd
from app.engine.models import IMAGENET_MEAN, IMAGENET_STD, LoadedModel, ModelSpec, get_model
from app.engine.training import (
    CropSample,
    TrainConfig,
    cut_context,
    default_after,
    save_trained,
    train,
    trainable_nodes,
)
from tests.engine.tiny import Tiny, tiny_model, tiny_samples


def _pooled(model: nn.Module, layer: str, samples: list[CropSample]) -> torch.Tensor:
    from torchvision.models.feature_extraction import create_feature_extractor

    body = create_feature_extractor(model, return_nodes={layer: "f"}).eval()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1).float() / 255 for s in samples])
    with torch.no_grad():
        return body((x - mean) / std)["f"].mean(dim=(2, 3)).double()


def _state_after(model: LoadedModel, result_state: dict[str, torch.Tensor]) -> nn.Module:
    copy = Tiny()
    copy.load_state_dict(result_state)
    return copy.eval()


def test_default_after_is_the_node_before_the_layers_stage() -> None:
    model = tiny_model()
    assert default_after(model, "out") == "act"  # 'down' halves 24×24 to 12×12
    assert trainable_nodes(model.module, "out", "act") == ["down", "bn", "mix"]
    assert trainable_nodes(model.module, "out", "down") == ["bn", "mix"]
    with pytest.raises(ValueError, match="before"):
        trainable_nodes(model.module, "down", "mix")
    with pytest.raises(KeyError, match="unknown layer"):
        trainable_nodes(model.module, "nope", None)


def test_same_seed_same_weights_and_frozen_parts_stay() -> None:
    model, samples = tiny_model(), tiny_samples()
    config = TrainConfig(layer="out", epochs=2, lr=1e-2, batch_size=6, crop_size=32, seed=5)
    a = train(model, samples, config)
    b = train(model, samples, config)
    c = train(model, samples, TrainConfig(**{**config.__dict__, "seed": 6}))
    assert a.trained == ["down", "bn", "mix"]
    assert a.parameters == 8 * 12 * 9 + 12 + 2 * 12 + 12 * 12 * 9 + 12
    for key, value in a.state_dict.items():
        assert torch.equal(value, b.state_dict[key]), key
    base = model.module.state_dict()
    changed = {k for k in base if not torch.equal(base[k], a.state_dict[k])}
    assert changed == {"down.weight", "down.bias", "bn.weight", "bn.bias", "mix.weight", "mix.bias"}
    assert any(not torch.equal(a.state_dict[k], c.state_dict[k]) for k in changed)
    assert [s.step for s in a.curve] == list(range(1, 5)) and a.curve[-1].epoch == 2


def test_training_on_the_boxes_surroundings_equals_training_on_whole_images() -> None:
    model, samples = tiny_model(), tiny_samples(4)
    config = TrainConfig(layer="out", epochs=2, lr=1e-2, batch_size=4, crop_size=32, jitter=0.1)
    cut = [cut_context(s.image, s.box, s.label, config.jitter) for s in samples]
    assert all(c.image.size < s.image.size for c, s in zip(cut, samples, strict=True))
    whole, small = train(model, samples, config), train(model, cut, config)
    for key, value in whole.state_dict.items():
        assert torch.equal(value, small.state_dict[key]), key
    assert any(
        not torch.equal(model.module.state_dict()[k], v) for k, v in whole.state_dict.items()
    )


def test_zero_loss_weight_changes_nothing() -> None:
    model = tiny_model()
    result = train(
        model,
        tiny_samples(),
        TrainConfig(layer="out", loss_weight=0.0, lr=0.1, batch_size=4, crop_size=32),
    )
    base = model.module.state_dict()
    assert all(torch.equal(base[k], v) for k, v in result.state_dict.items())
    assert all(s.loss == 0.0 for s in result.curve)


@pytest.mark.parametrize("objective", ["triplet", "npair", "contrastive"])
def test_metric_training_raises_separation_at_the_layer(objective: str) -> None:
    model, samples = tiny_model(), tiny_samples()
    held_out = tiny_samples(5, seed=1)
    labels = [s.label for s in held_out]
    before = separation(_pooled(model.module, "out", held_out), labels, "euclidean").ratio
    config = TrainConfig(
        layer="out",
        objective=objective,
        epochs=8,
        lr=3e-2,
        batch_size=12,
        crop_size=40,
        head=False,
        seed=1,
    )
    result = train(model, samples, config)
    after = separation(
        _pooled(_state_after(model, result.state_dict), "out", held_out), labels, "euclidean"
    ).ratio
    assert after > 1.5 * before, (before, after)
    if objective != "npair":  # N-pair's one pair per label makes single steps noisy
        assert result.curve[-1].objective < 0.5 * result.curve[0].objective


def test_mmd_training_pulls_two_domains_together() -> None:
    model = tiny_model()
    samples = tiny_samples()
    held_out = tiny_samples(5, seed=2)
    warm = [s for s in held_out if s.label == "warm"]
    cool = [s for s in held_out if s.label == "cool"]

    def gap(module: nn.Module) -> float:
        return mmd(_pooled(module, "out", warm), _pooled(module, "out", cool), sigma=None)

    config = TrainConfig(
        layer="out",
        objective="mmd",
        domains=("warm", "cool"),
        epochs=8,
        lr=3e-3,
        batch_size=12,
        crop_size=40,
        seed=2,
    )
    result = train(model, samples, config)
    before, after = gap(model.module), gap(_state_after(model, result.state_dict))
    assert after < 0.8 * before, (before, after)
    with pytest.raises(ValueError, match="collapsed"):  # too high a rate: said, not a NaN
        train(model, samples, TrainConfig(**{**config.__dict__, "lr": 1e-2, "epochs": 20}))


def test_cross_entropy_alone_trains_and_cancel_stops() -> None:
    model = tiny_model()
    result = train(
        model,
        tiny_samples(),
        TrainConfig(layer="out", loss_weight=0.0, cross_entropy=1.0, lr=1e-2, crop_size=32),
    )
    assert result.curve[0].cross_entropy > 0 and result.curve[0].objective >= 0
    assert any(
        not torch.equal(model.module.state_dict()[k], v) for k, v in result.state_dict.items()
    )
    calls: list[int] = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(InterruptedError):
        train(
            model,
            tiny_samples(),
            TrainConfig(layer="out", epochs=5, batch_size=4, crop_size=32),
            cancelled=stop,
        )
    assert len(calls) == 3


def test_bad_settings() -> None:
    model, samples = tiny_model(), tiny_samples()
    with pytest.raises(ValueError, match="domains"):
        train(model, samples, TrainConfig(layer="out", objective="mmd"))
    with pytest.raises(ValueError, match="two labels"):
        train(model, [s for s in samples if s.label == "warm"], TrainConfig(layer="out"))
    with pytest.raises(ValueError, match="epochs"):
        train(model, samples, TrainConfig(layer="out", epochs=0))
    with pytest.raises(ValueError, match="no training boxes"):
        train(model, samples, TrainConfig(layer="out", objective="mmd", domains=("warm", "x")))


def test_a_saved_model_loads_back_exactly(tmp_path: Path) -> None:
    from app.engine.models import _build

    torch.manual_seed(0)
    module = _build("squeezenet1_1", "torchvision", 1000).eval()
    spec = ModelSpec(
        "sq", "squeezenet1_1", "torchvision", 64, IMAGENET_MEAN, IMAGENET_STD, (), None, ""
    )
    base = LoadedModel(spec, module, f"sq-{uuid.uuid4().hex}", 32)
    samples = tiny_samples(3)
    result = train(
        base,
        samples,
        TrainConfig(layer="features.12.cat", epochs=1, lr=1e-3, batch_size=6, crop_size=64),
    )
    assert result.trained  # the last Fire module's expand convolutions
    sidecar = {
        "architecture": "squeezenet1_1",
        "source": "torchvision",
        "input_size": 64,
        "class_names": "imagenet",
        "training": {"base": "sq", "seed": 0},
    }
    path = save_trained(tmp_path, "sq-tuned", result.state_dict, sidecar)
    assert json.loads(path.read_text())["weights"] == "sq-tuned.safetensors"
    loaded = get_model("sq-tuned", tmp_path)
    for key, value in loaded.module.state_dict().items():
        assert torch.equal(value, result.state_dict[key]), key
    with pytest.raises(ValueError, match="already exists"):
        save_trained(tmp_path, "sq-tuned", result.state_dict, sidecar)
    with pytest.raises(ValueError, match="must start"):
        save_trained(tmp_path, "../evil", result.state_dict, sidecar)
