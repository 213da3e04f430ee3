"""A tiny network (two conv + batch norm pairs, a pooled Linear head) and noisy crops of two
labels, for tests that train or trace a model quickly."""

from __future__ import annotations

import uuid

import numpy as np
import torch
from torch import nn

from app.boxes import Box
from app.engine.models import IMAGENET_MEAN, IMAGENET_STD, LoadedModel, ModelSpec
from app.engine.training import CropSample


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8))
        self.act = nn.ReLU()
        self.down = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(12)
        self.mix = nn.Conv2d(12, 12, 3, padding=1)
        self.out = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.stem(x))
        x = self.out(self.mix(self.bn(self.down(x))))
        return self.fc(self.pool(x).flatten(1))


def tiny_model() -> LoadedModel:
    torch.manual_seed(3)
    module = Tiny().eval()
    spec = ModelSpec(
        "tiny",
        "tiny",
        "torchvision",
        48,
        IMAGENET_MEAN,
        IMAGENET_STD,
        tuple("abcde"),
        None,
        "",
    )
    return LoadedModel(spec, module, f"tiny-{uuid.uuid4().hex}", 4)


def tiny_samples(n_per: int = 6, seed: int = 0) -> list[CropSample]:
    """Two labels of noisy images that differ a little: 'warm' leans red and has faint
    stripes, 'cool' leans blue."""
    rng = np.random.default_rng(seed)
    out = []
    for label, base in (("warm", (112, 100, 96)), ("cool", (98, 100, 110))):
        for k in range(n_per):
            img = rng.normal(base, 60, size=(61, 67, 3))
            if label == "warm":
                img[:, ::4] += 12
            image = img.clip(0, 255).astype(np.uint8)
            out.append(CropSample(image, Box(5 + k, 7, 41, 37), label))
    return out
