"""``featuregap train``: a fine-tune from the command line saves a model and reports it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.cli import main


@pytest.fixture
def models_dir(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A models folder holding ``sq`` (SqueezeNet 1.1, seeded random weights) and a store
    with 6 images of two labels, 3 boxes each."""
    from safetensors.torch import save_file

    from app.config import get_settings
    from app.engine.models import _build
    from app.store import Store

    folder = data_dir.parent / "models"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    state = {
        k: v.contiguous() for k, v in _build("squeezenet1_1", "torchvision", 2).state_dict().items()
    }
    save_file(state, folder / "sq.safetensors")
    sidecar = {"architecture": "squeezenet1_1", "input_size": 64, "class_names": ["a", "b"]}
    (folder / "sq.json").write_text(json.dumps({**sidecar, "weights": "sq.safetensors"}))
    monkeypatch.setenv("FEATUREGAP_MODELS_DIR", str(folder))
    get_settings.cache_clear()
    store = Store(get_settings())
    rng = np.random.default_rng(1)
    for k in range(6):
        label = "ab"[k % 2]
        pixels = rng.normal(100 + 30 * (k % 2), 40, size=(70, 75, 3)).clip(0, 255)
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
        image = store.add_image(buffer.getvalue(), f"{k}.png")[0]
        store.add_boxes(image.id, [(3 * j, 5, 40, 41, label) for j in range(3)])
    store.close()
    return folder


def test_train_saves_a_model_and_prints_the_held_out_change(
    models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "train",
        "--model",
        "sq",
        "--layer",
        "features.12.cat",
        "--epochs",
        "1",
        "--batch-size",
        "6",
        "--crop-size",
        "64",
        "--lr",
        "1e-3",
        "--name",
        "sq-cli",
        "--holdout",
        "0.33",
        "--eval-layers",
        "features.12.cat",
    ]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "sq-cli" and result["split"]["held_out_images"] == 2
    assert len(result["curve"]) == 2  # 12 training boxes, 6 per step
    assert (models_dir / "sq-cli.safetensors").is_file()
    sidecar = json.loads((models_dir / "sq-cli.json").read_text())
    assert sidecar["training"]["curve"] == result["curve"]
    row = result["held_out"]["layers"][0]
    assert row["layer"] == "features.12.cat" and row["ratio_after"] != row["ratio_before"]
    # The same name again is refused with one line and status 2; plain output says it all.
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv[:-6], "--name", "sq-cli2", "--holdout", "0.33"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("saved sq-cli2") and "held-out features.12.cat: ratio" in out


def test_help_says_what_each_objective_does(capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli_train import _OBJECTIVES
    from app.engine.training import OBJECTIVES

    # The CLI names the objectives without importing torch; they must be the engine's.
    assert list(_OBJECTIVES) == list(OBJECTIVES)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    # argparse wraps the lines, and breaks them after a hyphen ("same-" / "label").
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
    assert "{triplet,npair,contrastive,mmd}" in text
    for name, says in _OBJECTIVES.items():
        assert f"{name}: {says}" in text, (name, text)
    assert "(default triplet)" in text
    # Each says what it acts on: the option it reads, or that it needs labels.
    assert "--margin" in _OBJECTIVES["triplet"] and "--domains" in _OBJECTIVES["mmd"]
    assert all(_OBJECTIVES[n].endswith("; labels)") for n in ("triplet", "npair", "contrastive"))
