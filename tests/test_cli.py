"""The featuregap command line on real photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.cli import COMMANDS, command, main


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    out = {}
    for name in ("chelsea", "coffee"):
        out[name] = folder / f"{name}.png"
        Image.fromarray(np.asarray(getattr(data, name)())).save(out[name])
    return out


@pytest.mark.slow
def test_predict_json_through_the_console_entry(photos: dict[str, Path]) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "predict",
            str(photos["chelsea"]),
            str(photos["coffee"]),
            "--top",
            "3",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    results = json.loads(done.stdout)
    assert [r["image"] for r in results] == [str(photos["chelsea"]), str(photos["coffee"])]
    cat, coffee = (r["predictions"] for r in results)
    assert len(cat) == 3 and {281, 285} & {p["index"] for p in cat}
    assert coffee[0]["index"] == 967 and coffee[0]["label"] == "espresso"
    assert 0.0 < coffee[0]["probability"] <= 1.0
    assert "predict" in done.stderr  # the progress bar goes to stderr, not into the JSON


@pytest.mark.slow
def test_models_and_layers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)
    assert models[0]["name"] == "efficientnet_lite0" and models[0]["classes"] == 1000
    assert main(["layers", "--json"]) == 0
    layers = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert layers["bn2"] == {"name": "bn2", "channels": 1280, "height": 7, "width": 7}
    assert main(["layers"]) == 0
    assert "bn2" in capsys.readouterr().out


@pytest.mark.slow
def test_heatmap_writes_an_overlay_and_scores(
    photos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.boxes import Box
    from app.engine.heatmaps import compute_heatmap
    from app.engine.localisation import score_boxes
    from app.engine.models import get_model
    from app.images import decode_image

    out = tmp_path / "overlay.png"
    status = main(
        [
            "heatmap",
            str(photos["chelsea"]),
            "--layer",
            "bn2",
            "--method",
            "mean",
            "--box",
            "140,20,180,210",
            "--label",
            "cat",
            "--box",
            "400,250,100,100",
            "--label",
            "ant",
            "--box",
            "20,200,60,60",
            "-o",
            str(out),
            "--json",
        ]
    )
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    framed = Image.open(out)
    at = report["overlay_at"]
    assert (at["w"], at["h"]) == (451, 300) and framed.mode == "RGB"
    # A title strip above, the colour bar to the right.
    assert at["x"] == 0 and at["y"] > 0 and framed.width > 451 and framed.height == 300 + at["y"]
    overlay = framed.crop((at["x"], at["y"], at["x"] + 451, at["y"] + 300))
    first, second, third = report["boxes"]
    assert (first["label"], second["label"], third["label"]) == ("cat", "ant", "")
    assert (second["x"], second["w"], second["h"]) == (400, 51, 50)  # clipped to the image
    image = decode_image(photos["chelsea"].read_bytes(), max_pixels=10**8)
    heat = compute_heatmap(get_model("efficientnet_lite0"), image, "bn2", "mean")
    want = score_boxes(heat.values, [Box(140, 20, 180, 210)])[0]
    assert first["scores"]["energy"] == pytest.approx(want["energy"], rel=1e-6)
    # Each box's outline is its label's colour on the page (by rank: ant, cat); none: grey.
    from app.palette import UNKNOWN, label_colours

    palette = label_colours(["cat", "ant"])
    drawn = np.asarray(overlay)
    for (x, y), colour in [
        ((140, 120), palette["cat"]),
        ((400, 280), palette["ant"]),
        ((20, 240), UNKNOWN),
    ]:
        assert drawn[y, x].tolist() == [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    assert palette["cat"] == "#ff7f0e"  # rank 1 of the shared palette
    # Away from the boxes, each pixel is image·(1−α) + viridis(minmax(map))·α.
    from app.engine.heatmaps import normalise
    from app.engine.overlay import colorize

    colours = colorize(normalise(heat.values, "minmax")).astype(np.float64)
    pixels = np.asarray(image.pixels.convert("RGB"), dtype=np.float64)
    want_pixels = np.round(pixels * 0.5 + colours * 0.5)
    assert np.abs(np.asarray(overlay)[5:15, 5:15] - want_pixels[5:15, 5:15]).max() <= 1


@pytest.mark.slow
def test_heatmap_alpha_normalise_and_channel(photos: dict[str, Path], tmp_path: Path) -> None:
    from app.engine.heatmaps import compute_heatmap, normalise
    from app.engine.models import get_model
    from app.engine.overlay import colorize
    from app.images import decode_image

    out = tmp_path / "channel.png"
    argv = ["heatmap", str(photos["coffee"]), "--layer", "bn2", "--method", "channel"]
    argv += ["--channel", "7", "--alpha", "0.8", "--normalise", "percentile", "-o", str(out)]
    assert main([*argv, "--json"]) == 0
    image = decode_image(photos["coffee"].read_bytes(), max_pixels=10**8)
    heat = compute_heatmap(get_model("efficientnet_lite0"), image, "bn2", "channel", channel=7)
    shown = normalise(heat.values, "percentile")
    want = np.round(
        np.asarray(image.pixels.convert("RGB"), np.float64) * 0.2
        + colorize(shown).astype(np.float64) * 0.8
    )
    framed = np.asarray(Image.open(out), dtype=np.float64)
    top = framed.shape[0] - image.height
    assert np.abs(framed[top:, : image.width] - want).max() <= 1
    # The colour bar's top is the colour of the map's maximum, its bottom that of the minimum.
    bar = framed[top:, image.width :]
    high, low = colorize(np.array([[1.0, 0.0]]))[0]
    column = bar[:, np.abs(bar - high).sum(axis=-1).min(axis=0).argmin()]
    assert np.abs(column - high).sum(axis=-1).min() <= 3
    assert np.abs(column - low).sum(axis=-1).min() <= 3


def test_heatmap_refuses_an_alpha_outside_0_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["heatmap", "a.png", "--layer", "bn2", "--alpha", "1.5", "-o", "x.png"]) == 2
    assert "--alpha must lie in [0, 1], got 1.5" in capsys.readouterr().err


@pytest.mark.slow  # imports the registries to compare
def test_help_lists_methods_and_measures(capsys: pytest.CaptureFixture[str]) -> None:
    from app.engine.cams import METHODS
    from app.engine.measures import MEASURES

    for argv in (["--help"], ["heatmap", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert all(name in text for name in METHODS), text
        assert all(f"  {name} " in text for name in MEASURES), text
        assert "mutual_information   higher = more alike" in text
        assert "mmd                  higher = farther apart" in text
        descriptors = {m.needs for m in MEASURES.values()}
        assert all(f"\n  {kind} " in text for kind in descriptors), text
    # Every choice a subcommand offers says what it means.
    for name, words in [
        ("heatmap", ["native: keep its aspect ratio", "percentile"]),
        ("predict", ["resize: the image to the model's input size"]),
        ("extract", ["grid: the box resampled", "pixels: the s×s grid's vectors"]),
        ("stats", ["unbiased: U-statistic", "higher = farther apart"]),
    ]:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
        assert all(word in text for word in words), (name, text)


@pytest.mark.slow  # the run past the seed loads the model once
def test_first_models_and_layers_answer_without_torch(tmp_path: Path) -> None:
    script = (
        "import sys\nfrom app.cli import main\n"
        "try:\n    main(sys.argv[1:])\n"  # --help exits through SystemExit
        "finally:\n    print('torch' in sys.modules, file=sys.stderr)"
    )
    env = {**os.environ, "FEATUREGAP_DATA_DIR": str(tmp_path / "data")}
    env["FEATUREGAP_MODELS_DIR"] = str(tmp_path / "models")
    env["TORCH_HOME"] = str(tmp_path / "torch")  # an empty hub cache, as on a fresh machine
    (tmp_path / "models").mkdir()

    def run(*argv: str) -> tuple[str, str]:
        done = subprocess.run(
            [sys.executable, "-c", script, *argv],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
            env=env,
        )
        return done.stdout, done.stderr.strip().splitlines()[-1]

    # A fresh data folder: the shipped seed answers (app/catalog_seed.json), then the cache.
    for argv in (["models", "--json"], ["layers", "--json"], ["--help"]):
        cold, cold_torch = run(*argv)
        warm, warm_torch = run(*argv)
        assert (cold_torch, warm_torch) == ("False", "False")
        assert warm == cold
    layers = {row["name"]: row for row in json.loads(run("layers", "--json")[0])}
    assert layers["bn2"] == {"name": "bn2", "channels": 1280, "height": 7, "width": 7}
    # A sidecar adds a model the seed cannot know: the first listing imports torch, once.
    sidecar = {"architecture": "resnet18", "class_names": ["a", "b"], "weights": "r.pth"}
    (tmp_path / "models" / "tiny.json").write_text(json.dumps(sidecar))
    for expected in ("True", "False"):
        listed, imported = run("models", "--json")
        assert imported == expected
        assert [(r["name"], r["classes"]) for r in json.loads(listed)] == [
            ("efficientnet_lite0", 1000),
            ("tiny", 2),
        ]


_SLOW = pytest.mark.slow  # these load the real model before they fail


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["layers", "--model", "nope"], "unknown model 'nope'; use one of efficientnet_lite0"),
        pytest.param(["predict", "/no/such/file.png"], "cannot read", marks=_SLOW),
        pytest.param(
            ["heatmap", "IMG", "--layer", "bn3", "--box", "1,1,5,5", "-o", "x.png"],
            "unknown layer",
            marks=_SLOW,
        ),
        pytest.param(
            ["heatmap", "IMG", "--layer", "bn2", "--box", "900,1,5,5", "-o", "x.png"],
            "outside",
            marks=_SLOW,
        ),
    ],
)
def test_bad_input_is_one_line_on_stderr(
    argv: list[str],
    message: str,
    photos: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [str(photos["chelsea"]) if a == "IMG" else a for a in argv]
    argv = [str(tmp_path / a) if a == "x.png" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_malformed_box_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["heatmap", "a.png", "--layer", "bn2", "--box", "1,2,3", "-o", "x.png"])
    assert exit_info.value.code == 2
    assert "x,y,w,h" in capsys.readouterr().err


def test_commands_register_once() -> None:
    assert {"models", "layers", "predict", "heatmap"} <= set(COMMANDS)
    with pytest.raises(ValueError, match="already exists"):
        command("models", "again", lambda parser: None)(lambda args: 0)


@pytest.mark.slow  # loads the real model before the image
def test_an_image_past_the_decode_budget_is_a_message_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.config import get_settings

    path = tmp_path / "deep.png"
    Image.fromarray(np.zeros((300, 400), dtype=np.uint16)).save(path)
    monkeypatch.setenv("FEATUREGAP_MAX_DECODED_BYTES", str(300 * 400 * 8 - 1))
    get_settings.cache_clear()
    try:
        assert main(["predict", str(path)]) == 2
    finally:
        get_settings.cache_clear()
    assert "FEATUREGAP_MAX_DECODED_BYTES" in capsys.readouterr().err
