"""The synthetic dataset's domain switch has the answer it promises in the embedded model:
colour and greyscale-blurred renderings of the same scenes lie further apart (mean ``gap``
descriptors at the last stage) than two colour datasets of different scenes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.boxes import Box
from app.engine.features import FeatureCache, extract
from app.engine.models import LoadedModel
from app.engine.regions import region_descriptors
from app.images import DecodedImage, decode_image
from benchmarks.synthetic import SyntheticDataset, make_dataset

LAYER = "bn2"


def _descriptors(model: LoadedModel, dataset: SyntheticDataset) -> tuple[torch.Tensor, list[str]]:
    images: dict[str, DecodedImage] = {
        name: decode_image((dataset.images_dir / name).read_bytes(), max_pixels=10**8)
        for name in dataset.file_names
    }
    maps = extract(model, list(images.values()), [LAYER], cache=FeatureCache(0))
    by_name = dict(zip(images, maps, strict=True))
    rows, labels = [], []
    for _, name, box in dataset.boxes:
        image = images[name]
        rows += region_descriptors(
            by_name[name][LAYER],
            (image.width, image.height),
            [Box(box.x, box.y, box.w, box.h)],
            "gap",
        )
        labels.append(box.label)
    return torch.stack(rows).to(torch.float64), labels


@pytest.mark.slow
def test_the_grey_domain_is_further_from_colour_than_other_colour_scenes(
    embedded_model: LoadedModel, tmp_path: Path
) -> None:
    colour, _ = _descriptors(
        embedded_model, make_dataset(tmp_path / "c", 24, 4, seed=1, formats=())
    )
    grey, _ = _descriptors(
        embedded_model, make_dataset(tmp_path / "g", 24, 4, seed=1, domain="grey", formats=())
    )
    other, _ = _descriptors(embedded_model, make_dataset(tmp_path / "o", 24, 4, seed=2, formats=()))
    across = float(torch.linalg.vector_norm(colour.mean(0) - grey.mean(0)))
    within = float(torch.linalg.vector_norm(colour.mean(0) - other.mean(0)))
    print(
        f"\n{LAYER} gap means: colour vs grey {across:.3f}, colour vs colour {within:.3f} "
        f"({across / within:.1f}x)"
    )
    assert across > 1.5 * within
