"""POST /api/distances and /api/separation on real textures and the real embedded model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from tests.api.helpers import module_app

pytestmark = pytest.mark.slow

LAYER = "conv_head"
TEXTURES = ("brick", "grass", "gravel")
# Three boxes per texture, of awkward sizes, inside the 512×512 photos.
BOXES = (
    {"x": 10, "y": 12, "w": 201, "h": 157},
    {"x": 250.5, "y": 40, "w": 180, "h": 233},
    {"x": 60, "y": 300, "w": 317, "h": 199},
)


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, photo: Any
) -> Iterator[tuple[TestClient, dict[str, list[dict[str, Any]]]]]:
    """One app with three textures, three labelled boxes on each."""
    with module_app(tmp_path_factory, "dist") as client:
        boxes: dict[str, list[dict[str, Any]]] = {}
        for name in TEXTURES:
            image = client.post(
                "/api/images", files={"file": (f"{name}.png", photo.png(name), "image/png")}
            ).json()
            boxes[name] = [
                client.post(f"/api/images/{image['id']}/boxes", json={**box, "label": name}).json()
                for box in BOXES
            ]
        yield client, boxes


def _reference_gap(client: TestClient, boxes: list[dict[str, Any]]) -> torch.Tensor:
    """GAP descriptors by the engine's pieces, outside the service."""
    from app.boxes import Box
    from app.engine.features import extract
    from app.engine.models import get_model
    from app.engine.regions import region_descriptors
    from app.images import decode_image

    model = get_model("efficientnet_lite0")
    rows = []
    for box in boxes:
        data = client.get(f"/api/images/{box['image_id']}/file").content
        image = decode_image(data, max_pixels=10**8)
        fmap = extract(model, [image], [LAYER])[0][LAYER]
        rows.append(
            region_descriptors(
                fmap,
                (image.width, image.height),
                [Box(box["x"], box["y"], box["w"], box["h"])],
                "gap",
            )[0]
        )
    return torch.stack(rows).double()


def test_euclidean_between_labels_equals_distance_of_group_means(
    project: tuple[TestClient, dict[str, list[dict[str, Any]]]],
) -> None:
    client, boxes = project
    response = client.post(
        "/api/distances",
        json={"labels": ["brick", "grass", "gravel"], "layer": LAYER, "measure": "euclidean"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["labels"] == ["brick", "grass", "gravel"] and body["p_values"] is None
    assert body["descriptor"] == "gap" and body["higher_is_better"] is False
    means = {name: _reference_gap(client, boxes[name]).mean(0) for name in TEXTURES}
    for i, a in enumerate(TEXTURES):
        assert body["matrix"][i][i] == 0.0
        for j, b in enumerate(TEXTURES):
            if i != j:
                expected = float(torch.linalg.vector_norm(means[a] - means[b]))
                assert body["matrix"][i][j] == pytest.approx(expected, rel=1e-5)
    assert body["figure"]["data"][0]["x"] == list(TEXTURES)
    # Explicit groups of box ids give the same numbers.
    groups = {name: [b["id"] for b in boxes[name]] for name in TEXTURES}
    same = client.post(
        "/api/distances", json={"groups": groups, "layer": LAYER, "measure": "euclidean"}
    ).json()
    assert same["matrix"] == body["matrix"]


def test_one_image_per_label_supports_no_test(
    project: tuple[TestClient, dict[str, list[dict[str, Any]]]],
) -> None:
    client, boxes = project
    brick = [b["id"] for b in boxes["brick"]]
    grass = [b["id"] for b in boxes["grass"]]
    body = client.post(
        "/api/distances",
        json={
            "groups": {"brick": brick, "grass": grass},
            "layer": LAYER,
            "measure": "mmd",
            "permutations": 99,
            "seed": 3,
        },
    ).json()
    assert body["descriptor"] == "pixels" and body["between"] == "sets"
    assert body["unit"] == "image" and body["matrix"][0][1] > 0
    # Three boxes on one image per label: 1 vs 1 images, nothing to exchange.
    assert body["p_values"][0][1] is None and body["p_adjusted"][0][1] is None
    assert body["adjustment"]["family"].startswith("no pair of this matrix")
    test = body["tests"][0]
    assert test["exact"] is True and test["min_p"] >= 0.5 and test["p_value"] is None
    assert body["groups"]["brick"]["units"] == 1 and body["groups"]["brick"]["rows"] == 48
    said = " ".join(body["warnings"])
    assert "single image" in said and "images, not between labels" in said
    # Said once, at matrix level: the pair does not repeat it.
    assert said.count("single image") == 1 and "compares images, not labels" not in said
    assert "p=" not in body["figure"]["data"][0]["text"][0][1]
    # The same boxes on both sides of a test: a 422 that says so.
    both = client.post(
        "/api/distances",
        json={
            "groups": {"brick": brick, "again": brick},
            "layer": LAYER,
            "measure": "mmd",
            "permutations": 9,
        },
    )
    assert both.status_code == 422 and "both groups" in both.json()["detail"]


def _crops(photo: Any, name: str, count: int) -> list[bytes]:
    import io

    from PIL import Image

    image = photo(name)
    out = []
    for i in range(count):
        y, x = divmod(i, 2)
        buffer = io.BytesIO()
        Image.fromarray(image[y * 128 : y * 128 + 256, x * 256 : x * 256 + 256]).save(
            buffer, format="PNG"
        )
        out.append(buffer.getvalue())
    return out


def test_image_level_exact_test_detects_different_textures(data_dir: Path, photo: Any) -> None:
    from app.config import get_settings
    from app.main import create_app

    with TestClient(create_app(get_settings())) as client:
        ids: dict[str, list[int]] = {}
        for name in ("brick", "grass"):
            for k, png in enumerate(_crops(photo, name, 4)):
                image = client.post(
                    "/api/images", files={"file": (f"{name}{k}.png", png, "image/png")}
                ).json()
                ids.setdefault(name, []).append(
                    client.post(
                        f"/api/images/{image['id']}/boxes",
                        json={"x": 20, "y": 30, "w": 180, "h": 170, "label": name},
                    ).json()["id"]
                )
        for measure, descriptor in (("mmd", "pixels"), ("euclidean", "gap")):
            body = client.post(
                "/api/distances",
                json={
                    "labels": ["brick", "grass"],
                    "layer": LAYER,
                    "measure": measure,
                    "descriptor": descriptor,
                    "permutations": 500,
                    "bootstrap": 50,
                    "seed": 1,
                },
            ).json()
            test = body["tests"][0]
            # One box per image: the unit is the box (= the image); C(8, 4) = 70 splits,
            # all enumerated; the observed split and its mirror are the two most extreme.
            assert body["unit"] == "box" and test["exact"] and test["permutations"] == 70
            assert test["p_value"] == pytest.approx(2 / 70) == test["min_p"]
            assert body["p_adjusted"][0][1] == pytest.approx(2 / 70)
            assert body["adjustment"]["family"] == "the 1 pair of this matrix with a p-value"
            few = (
                "the intervals rest on 50 bootstrap resamples, so their ends are noisy; ask "
                "for at least 1000"
            )
            assert body["groups"]["grass"]["units"] == 4
            # The studentized interval (the default): every resample of 4 vs 4 boxes repeats
            # boxes, which moves the distance (MMD² grows with repeats, so BCa finds the
            # data's value below every resample and gives none); the pivot carries that bias,
            # and the textures are far apart, so the interval stays clear of 0.
            interval = test["interval"]
            assert interval["method"] == "studentized" and interval["level"] == 0.95
            assert 0 < interval["low"] < interval["high"] and 0 < interval["resamples"] <= 50
            assert body["warnings"] == [few], body["warnings"]


def test_separation_per_layer_textures_separate_at_the_head(
    project: tuple[TestClient, dict[str, list[dict[str, Any]]]],
) -> None:
    client, boxes = project
    layers = ["blocks.1.0.bn2", "blocks.5.1.add", LAYER]
    response = client.post("/api/separation", json={"layers": layers, "measure": "euclidean"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["layer"] for r in body["layers"]] == layers
    head = body["layers"][-1]
    assert head["inter"] > head["intra"] and head["ratio"] == pytest.approx(
        head["inter"] / head["intra"]
    )
    # Independent check of the head's intra/inter from the reference descriptors.
    x = torch.cat([_reference_gap(client, boxes[n]) for n in TEXTURES])
    labels = [n for n in TEXTURES for _ in BOXES]
    d = torch.cdist(x, x)
    same = torch.tensor([[a == b for b in labels] for a in labels])
    off = ~torch.eye(len(labels), dtype=torch.bool)
    assert head["intra"] == pytest.approx(float(d[same & off].mean()), rel=1e-5)
    assert head["inter"] == pytest.approx(float(d[~same].mean()), rel=1e-5)
    ratio, silhouette = body["figure"]["data"]  # two aligned panels: ratio above, silhouette
    assert ratio["y"] == pytest.approx([r["ratio"] for r in body["layers"]])
    assert silhouette["yaxis"] == "y2"
    assert silhouette["y"] == pytest.approx([r["silhouette"] for r in body["layers"]], nan_ok=True)


def test_measures_list(project: tuple[TestClient, Any]) -> None:
    client, _ = project
    measures = {m["name"]: m for m in client.get("/api/measures").json()}
    assert {"euclidean", "mmd", "cosine"} <= set(measures)
    assert measures["mmd"]["needs"] == "pixels"
    kernel_num = measures["mmd"]["options"]["properties"]["kernel_num"]
    assert (kernel_num["minimum"], kernel_num["maximum"], kernel_num["default"]) == (1, 16, 5)
    assert measures["mutual_information"]["options"]["properties"]["bins"]["maximum"] == 256
    assert measures["euclidean"]["options"]["properties"] == {}


@pytest.mark.parametrize(
    ("measure", "options", "hint"),
    [
        ("euclidean", {"foo": 1}, "'foo'"),
        ("mmd", {"foo": 1}, "kernel_num"),
        ("mmd", {"seed": 1}, "permutation test"),
        ("euclidean", {"permutations": 5}, "permutation test"),
        ("mmd", {"block_size": "a"}, "block_size"),
        ("mmd", {"kernel_num": 1e6}, "kernel_num"),
        ("mmd", {"kernel_mul": 1e308}, "kernel_mul"),
        ("seed_mmd", {"kernel_mul": 1e308}, "kernel_mul"),
        ("mutual_information", {"bins": 1e6}, "bins"),
        ("grassmann", {"metric": "angle"}, "metric"),
    ],
)
@pytest.mark.parametrize("route", ["distances", "separation"])
def test_bad_measure_options_are_422_naming_the_known_options(
    project: tuple[TestClient, Any], route: str, measure: str, options: dict[str, Any], hint: str
) -> None:
    client, _ = project
    where = {"layer": LAYER} if route == "distances" else {"layers": [LAYER]}
    response = client.post(
        f"/api/{route}",
        json={"labels": ["brick", "grass"], **where, "measure": measure, "options": options},
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert hint in detail
    assert "known options" in detail or "takes no options" in detail


def test_separation_unknown_measure_names_the_known_ones(project: tuple[TestClient, Any]) -> None:
    client, _ = project
    response = client.post("/api/separation", json={"layers": [LAYER], "measure": "nope"})
    assert response.status_code == 404
    assert "grassmann" in response.json()["detail"]


@pytest.mark.parametrize(
    ("measure", "options"),
    [("mmd", {"sigma": 30.0}), ("grassmann", {"k": 2}), ("mutual_information", {"bins": 8})],
)
def test_separation_works_with_set_measures_and_similarities(
    project: tuple[TestClient, Any], measure: str, options: dict[str, Any]
) -> None:
    client, _ = project
    response = client.post(
        "/api/separation",
        json={"layers": [LAYER], "measure": measure, "options": options, "grid_size": 3},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    needs = {"mmd": "pixels", "grassmann": "pixels", "mutual_information": "grid"}[measure]
    assert body["descriptor"] == needs
    head = body["layers"][0]
    if measure == "mutual_information":  # a similarity: ratio is intra / inter, no silhouette
        assert head["ratio"] == pytest.approx(head["intra"] / head["inter"])
        assert head["silhouette"] is None
    else:
        assert head["ratio"] == pytest.approx(head["inter"] / head["intra"])
        assert -1 <= head["silhouette"] <= 1
    assert set(head["per_label"]) == set(TEXTURES)


@pytest.mark.parametrize(
    ("body", "status", "hint"),
    [
        ({"labels": ["brick", "grass"], "layer": LAYER, "measure": "nope"}, 404, "euclidean"),
        ({"labels": ["brick", "grass"], "layer": "nope"}, 404, "conv_stem"),
        ({"labels": ["brick", "nothing"], "layer": LAYER}, 422, "no boxes"),
        ({"labels": ["brick"], "layer": LAYER}, 422, "at least 2 groups"),
        ({"groups": {"a": [9999], "b": [1]}, "layer": LAYER}, 404, "9999"),
        ({"groups": {"a": [1], "b": [4]}, "labels": ["x"], "layer": LAYER}, 422, "not both"),
        (
            {
                "groups": {"a": [1], "b": [4]},
                "layer": LAYER,
                "measure": "grassmann",
                "descriptor": "gap",
            },
            422,
            "at least 2",
        ),
        (
            {"labels": ["brick", "grass"], "layer": LAYER, "permutations": 10**6},
            413,
            "max_permutations",
        ),
    ],
)
def test_bad_distance_requests(
    project: tuple[TestClient, Any], body: dict[str, Any], status: int, hint: str
) -> None:
    client, _ = project
    response = client.post("/api/distances", json=body)
    assert response.status_code == status, response.text
    assert hint in str(response.json()["detail"])


def test_bad_separation_requests(project: tuple[TestClient, Any]) -> None:
    client, _ = project
    one = client.post("/api/separation", json={"labels": ["brick"], "layers": [LAYER]})
    assert one.status_code == 422 and "2 different labels" in one.json()["detail"]
    bad = client.post("/api/separation", json={"layers": ["nope"]})
    assert bad.status_code == 404


def test_large_work_runs_as_a_job_and_limits_name_the_setting(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, photo: Any
) -> None:
    from app.config import get_settings
    from app.main import create_app

    monkeypatch.setenv("FEATUREGAP_ANALYSIS_JOB_THRESHOLD", "3")
    monkeypatch.setenv("FEATUREGAP_MAX_SAMPLES_PER_REQUEST", "4")
    get_settings.cache_clear()
    with TestClient(create_app(get_settings())) as client:
        ids = []
        for name in ("brick", "grass"):
            image = client.post(
                "/api/images", files={"file": (f"{name}.png", photo.png(name), "image/png")}
            ).json()
            ids += [
                client.post(f"/api/images/{image['id']}/boxes", json={**box, "label": name}).json()[
                    "id"
                ]
                for box in BOXES[:2]
            ]
        request = {"labels": ["brick", "grass"], "layer": "blocks.2.0.bn2", "measure": "euclidean"}
        queued = client.post("/api/distances", json=request)
        assert queued.status_code == 202, queued.text
        job_id = queued.json()["job_id"]
        deadline = time.monotonic() + 60
        while (job := client.get(f"/api/jobs/{job_id}").json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert job["state"] == "done", job
        assert job["result"]["labels"] == ["brick", "grass"]
        assert job["result"]["matrix"][0][1] > 0
        client.post(f"/api/images/{1}/boxes", json={**BOXES[2], "label": "brick"})
        over = client.post("/api/distances", json=request)
        assert over.status_code == 413
        assert "FEATUREGAP_MAX_SAMPLES_PER_REQUEST" in over.json()["detail"]
