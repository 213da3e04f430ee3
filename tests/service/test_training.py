"""Fine-tuning the real model on real photos moves the held-out boxes the way the loss asks.

Boxes are split by image region: each photo is cut into quadrant images, and one quadrant
(or one photo) is held out, so no held-out box shares an image with a training box. The
figures are printed (``pytest -s``) and asserted with a margin; each run is a few steps on
small crops to keep the cost low.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageFilter

from app.config import Settings
from app.engine.models import get_model, list_models
from app.service.training import TrainingRequest, plan_training, run_training, split_by_image
from app.store import BoxRecord, Store


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _store(tmp_path: Path) -> tuple[Store, Settings]:
    settings = Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    return Store(settings), settings


def _textures(store: Store, photo: Any) -> list[int]:
    """Each texture's four 256-px quadrants as images with 3×3 boxes of 96 px; returns the
    ids of the held-out quadrant (the last) of each texture."""
    held = []
    for name in ("brick", "grass", "gravel"):
        full = photo(name)
        for k, (y, x) in enumerate([(0, 0), (0, 256), (256, 0), (256, 256)]):
            record, _ = store.add_image(
                _png(Image.fromarray(full[y : y + 256, x : x + 256])), f"{name}{k}.png"
            )
            starts = (0, 80, 160)
            store.add_boxes(record.id, [(sx, sy, 96, 96, name) for sy in starts for sx in starts])
            if k == 3:
                held.append(record.id)
    return held


def _ratio(result: dict[str, Any], layer: str) -> tuple[float, float, float, float]:
    row = next(r for r in result["held_out"]["layers"] if r["layer"] == layer)
    return (
        row["ratio_before"],
        row["ratio_after"],
        row["silhouette_before"],
        row["silhouette_after"],
    )


@pytest.mark.slow
def test_triplet_fine_tune_raises_held_out_separation_and_weight_0_does_not(
    tmp_path: Path, photo: Any
) -> None:
    store, settings = _store(tmp_path)
    held = _textures(store, photo)
    common = {
        "layer": "bn2",
        "holdout_image_ids": held,
        "epochs": 1,
        "lr": 3e-4,
        "batch_size": 27,
        "crop_size": 64,
        "head": False,
        "margin": 0.5,
        "eval_layers": ["blocks.4.2.add", "bn2"],
    }
    plan = plan_training(store, settings, TrainingRequest(name="tex-triplet", **common))
    assert len(plan.train_boxes) == 81 and len(plan.held_out) == 27
    assert not {b.image_id for b in plan.train_boxes} & {b.image_id for b in plan.held_out}
    trained = run_training(store, settings, plan)
    control = run_training(
        store,
        settings,
        plan_training(store, settings, TrainingRequest(name="tex-w0", loss_weight=0.0, **common)),
    )
    before, after, sil_before, sil_after = _ratio(trained, "bn2")
    _, after_0, _, sil_0 = _ratio(control, "bn2")
    print(
        f"\nheld-out bn2 ratio {before:.3f} → {after:.3f} (weight 0: {after_0:.3f}); "
        f"silhouette {sil_before:.3f} → {sil_after:.3f} (weight 0: {sil_0:.3f}); "
        f"loss {[round(p['loss'], 3) for p in trained['curve']]}; {trained['seconds']:.1f} s"
    )
    assert after > 1.15 * before
    assert sil_after > sil_before + 0.05
    assert after_0 == pytest.approx(before, rel=1e-3)  # no loss: the layer stays put
    # Layers below the trained stage are frozen: their separation does not move at all.
    below = _ratio(trained, "blocks.4.2.add")
    assert below[1] == pytest.approx(below[0], rel=1e-6)
    # The result is a model like any other: listed, loadable, with its sidecar.
    names = [m.name for m in list_models(settings.models_dir)]
    assert "tex-triplet" in names and "tex-w0" in names
    sidecar = json.loads((settings.models_dir / "tex-triplet.json").read_text())
    assert sidecar["architecture"] == "tf_efficientnet_lite0"
    assert sidecar["training"]["base"] == "efficientnet_lite0"
    assert sidecar["training"]["data"]["held_out_images"] == sorted(held)
    assert sidecar["training"]["held_out"]["layers"][-1]["ratio_after"] == after
    assert get_model("tex-triplet", settings.models_dir).weights_sha256 != (
        get_model("efficientnet_lite0").weights_sha256
    )


@pytest.mark.slow
def test_mk_mmd_run_lowers_held_out_mmd_between_colour_and_grey_blurred(
    tmp_path: Path, photo: Any
) -> None:
    store, settings = _store(tmp_path)
    held = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "coins"):
        full = Image.fromarray(photo(name)).resize((256, 256))
        for k, (x, y) in enumerate([(0, 0), (128, 0), (0, 128), (128, 128)]):
            colour = full.crop((x, y, x + 128, y + 128))
            grey = colour.convert("L").filter(ImageFilter.GaussianBlur(2)).convert("RGB")
            for domain, version in (("colour", colour), ("grey", grey)):
                record, _ = store.add_image(_png(version), f"{name}{k}-{domain}.png")
                store.add_boxes(record.id, [(0, 0, 128, 128, domain)])
                if name == "rocket":
                    held.append(record.id)
    request = TrainingRequest(
        objective="mmd",
        domains=["colour", "grey"],
        layer="bn2",
        holdout_image_ids=held,
        epochs=1,
        lr=1e-3,
        batch_size=28,
        crop_size=96,
        eval_layers=["bn2"],
        name="colour-grey",
    )
    result = run_training(store, settings, plan_training(store, settings, request))
    before, after = result["held_out"]["mmd"]["before"], result["held_out"]["mmd"]["after"]
    ratio = _ratio(result, "bn2")
    print(
        f"\nheld-out MK-MMD colour vs grey-blurred at bn2 {before:.4f} → {after:.4f}; "
        f"domain separation ratio {ratio[0]:.3f} → {ratio[1]:.3f}; {result['seconds']:.1f} s"
    )
    assert after < 0.93 * before
    assert ratio[1] < ratio[0]


def test_split_by_image_never_shares_an_image() -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    boxes = [
        BoxRecord(i, image_id=i // 3, x=0, y=0, w=4, h=4, label="ab"[i // 9 % 2], created_at=now)
        for i in range(36)
    ]
    for seed in range(5):
        train, held = split_by_image(boxes, 0.25, seed)
        assert not {b.image_id for b in train} & {b.image_id for b in held}
        assert len({b.image_id for b in held}) == 3  # ceil(0.25 × 12 images)
        assert {b.label for b in held} == {"a", "b"}  # each label held out when it can be
        assert len(train) + len(held) == 36
    # Holding out 90 % of the images never takes a label's last training image.
    for seed in range(5):
        train, held = split_by_image(boxes, 0.9, seed)
        assert {b.label for b in train} == {"a", "b"}
        assert not {b.image_id for b in train} & {b.image_id for b in held}
    assert split_by_image(boxes, 0.25, 1) == split_by_image(boxes, 0.25, 1)
    assert split_by_image(boxes, 0.25, 1) != split_by_image(boxes, 0.25, 2)
