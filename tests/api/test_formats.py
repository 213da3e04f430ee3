"""COCO, Pascal VOC and YOLO: round trips, hand-checked conventions, malicious and bad files."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image


def _png(width: int, height: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(
        np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
    ).save(buffer, format="PNG")
    return buffer.getvalue()


def _image(client: TestClient, name: str, width: int, height: int, seed: int) -> dict[str, Any]:
    response = client.post("/api/images", files={"file": (name, _png(width, height, seed))})
    assert response.status_code == 201
    body: dict[str, Any] = response.json()
    return body


def _add(
    client: TestClient, image_id: int, x: float, y: float, w: float, h: float, label: str
) -> None:
    response = client.post(
        f"/api/images/{image_id}/boxes", json={"x": x, "y": y, "w": w, "h": h, "label": label}
    )
    assert response.status_code == 201, response.text


def _boxes(client: TestClient) -> list[tuple[Any, ...]]:
    return sorted(
        (b["image_id"], b["x"], b["y"], b["w"], b["h"], b["label"])
        for b in client.get("/api/boxes").json()["items"]
    )


def _clear_boxes(client: TestClient) -> None:
    for box in client.get("/api/boxes").json()["items"]:
        assert client.delete(f"/api/boxes/{box['id']}").status_code == 204


def test_coco_round_trip(client: TestClient) -> None:
    a = _image(client, "a.png", 61, 47, 0)
    b = _image(client, "b.png", 30, 30, 1)
    _add(client, a["id"], 1.5, 2, 10, 20.25, "cat")
    _add(client, a["id"], 0, 0, 61, 47, "scene")
    _add(client, b["id"], 3, 4, 5, 6, "cat")
    before = _boxes(client)
    document = client.get("/api/export/coco").json()
    assert [c["name"] for c in document["categories"]] == ["cat", "scene"]
    assert {(i["file_name"], i["width"], i["height"]) for i in document["images"]} == {
        ("a.png", 61, 47),
        ("b.png", 30, 30),
    }
    first = next(x for x in document["annotations"] if x["image_id"] == a["id"])
    assert first["bbox"] == [1.5, 2, 10, 20.25] and first["area"] == 10 * 20.25
    _clear_boxes(client)
    response = client.post(
        "/api/import/coco", files={"file": ("c.json", json.dumps(document).encode())}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "boxes_added": 3,
        "boxes_present": 0,
        "images_matched": 2,
        "skipped": [],
    }
    assert _boxes(client) == before
    again = client.post(
        "/api/import/coco", files={"file": ("c.json", json.dumps(document).encode())}
    )
    assert again.json() == {
        "boxes_added": 0,
        "boxes_present": 3,
        "images_matched": 2,
        "skipped": [],
    }
    assert _boxes(client) == before


def test_coco_matches_by_file_name_and_reports_what_it_skips(client: TestClient) -> None:
    a = _image(client, "a.png", 40, 30, 2)
    document = {
        "images": [
            {"id": 7, "file_name": "some/dir/a.png", "width": 40, "height": 30},
            {"id": 8, "file_name": "missing.jpg"},
        ],
        "categories": [{"id": 3, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 2, 3, 4]},
            {"id": 2, "image_id": 8, "category_id": 3, "bbox": [1, 2, 3, 4]},
        ],
    }
    result = client.post(
        "/api/import/coco", files={"file": ("c.json", json.dumps(document).encode())}
    ).json()
    assert result["boxes_added"] == 1 and result["images_matched"] == 1
    assert len(result["skipped"]) == 1 and "missing.jpg" in result["skipped"][0]
    assert _boxes(client) == [(a["id"], 1, 2, 3, 4, "dog")]
    document["images"] = [{"id": 7, "file_name": "a.png", "width": 30, "height": 40}]
    result = client.post(
        "/api/import/coco", files={"file": ("c.json", json.dumps(document).encode())}
    ).json()
    assert result["boxes_added"] == 0 and "40×30" in result["skipped"][0]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"images": [], "annotations": []}', "'categories'"),
        (
            json.dumps(
                {
                    "images": [],
                    "categories": [{"id": 1, "name": "a"}],
                    "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2]}],
                }
            ).encode(),
            "bbox",
        ),
        (
            json.dumps(
                {
                    "images": [],
                    "categories": [{"id": 1, "name": "a"}],
                    "annotations": [{"image_id": 1, "category_id": 9, "bbox": [1, 2, 3, 4]}],
                }
            ).encode(),
            "category_id 9",
        ),
    ],
)
def test_bad_coco_is_422(client: TestClient, document: bytes, message: str) -> None:
    response = client.post("/api/import/coco", files={"file": ("c.json", document)})
    assert response.status_code == 422 and message in response.json()["detail"]


def test_large_coco_import_runs_as_a_job(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.config import get_settings
    from app.main import create_app

    monkeypatch.setenv("FEATUREGAP_IMPORT_JOB_THRESHOLD", "3")
    get_settings.cache_clear()
    with TestClient(create_app(get_settings())) as client:
        images = [_image(client, f"{i}.png", 50, 40, 10 + i) for i in range(3)]
        document = {
            "images": [{"id": i, "file_name": f"{i}.png"} for i in range(3)],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [
                {"id": k, "image_id": k % 3, "category_id": 1, "bbox": [k, k, 5, 5]}
                for k in range(12)
            ],
        }
        response = client.post(
            "/api/import/coco", files={"file": ("c.json", json.dumps(document).encode())}
        )
        assert response.status_code == 202
        job_id = response.json()["job_id"]
        client.app.state.jobs.wait(job_id)  # type: ignore[attr-defined]
        job = client.get(f"/api/jobs/{job_id}").json()
        assert job["state"] == "done" and job["progress"] == 1.0 and job["kind"] == "import_coco"
        assert job["result"] == {
            "boxes_added": 12,
            "boxes_present": 0,
            "images_matched": 3,
            "skipped": [],
        }
        counts = [i["box_count"] for i in client.get("/api/images").json()["items"]]
        assert counts == [4, 4, 4] and len(images) == 3


VOC = b"""<annotation>
  <filename>whatever.jpg</filename>
  <size><width>40</width><height>30</height><depth>3</depth></size>
  <object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>5</ymax>
  </bndbox></object>
  <object><name>dog</name><bndbox><xmin>21</xmin><ymin>11</ymin><xmax>40</xmax><ymax>30</ymax>
  </bndbox></object>
</annotation>"""


def test_voc_import_uses_one_based_inclusive_pixels_and_round_trips(client: TestClient) -> None:
    image = _image(client, "a.png", 40, 30, 3)
    url = f"/api/images/{image['id']}"
    result = client.post(f"{url}/import/voc", files={"file": ("a.xml", VOC)})
    assert result.status_code == 200, result.text
    assert result.json()["boxes_added"] == 2
    assert _boxes(client) == [
        (image["id"], 0, 0, 10, 5, "cat"),
        (image["id"], 20, 10, 20, 20, "dog"),
    ]
    exported = client.get(f"{url}/export/voc")
    assert exported.headers["content-type"].startswith("application/xml")
    assert b"<xmin>21</xmin>" in exported.content and b"<xmax>40</xmax>" in exported.content
    before = _boxes(client)
    _clear_boxes(client)
    client.post(f"{url}/import/voc", files={"file": ("a.xml", exported.content)})
    assert _boxes(client) == before


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (
            b"""<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "x"><!ENTITY f "&e;&e;&e;">]>
<annotation><object><name>&f;</name></object></annotation>""",
            "refused",
        ),
        (
            b"""<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<annotation><object><name>&x;</name></object></annotation>""",
            "refused",
        ),
        (b"<notvoc/>", "<annotation>"),
        (b"<annotation><object><name>a</name></object></annotation>", "<bndbox>"),
        (VOC.replace(b"<width>40</width>", b"<width>41</width>"), "41×30"),
        (VOC.replace(b"<xmin>1</xmin>", b"<xmin>one</xmin>"), "<xmin>"),
        (b"<annotation", "not a Pascal VOC"),
    ],
)
def test_bad_or_malicious_voc_is_422(client: TestClient, xml: bytes, message: str) -> None:
    image = _image(client, "a.png", 40, 30, 4)
    response = client.post(f"/api/images/{image['id']}/import/voc", files={"file": ("a.xml", xml)})
    assert response.status_code == 422 and message in response.json()["detail"]
    assert _boxes(client) == []


def test_yolo_import_by_hand_and_round_trip(client: TestClient) -> None:
    image = _image(client, "a.png", 40, 20, 5)
    url = f"/api/images/{image['id']}"
    text = b"1 0.5 0.5 0.5 0.5\n\n0 0.125 0.25 0.25 0.5\n"
    result = client.post(
        f"{url}/import/yolo", files={"file": ("a.txt", text)}, data={"classes": "cat,dog"}
    )
    assert result.status_code == 200 and result.json()["boxes_added"] == 2
    assert _boxes(client) == [
        (image["id"], 0, 0, 10, 10, "cat"),
        (image["id"], 10, 5, 20, 10, "dog"),
    ]
    _add(client, image["id"], 3.3, 1.7, 11.1, 7.9, "dog")
    before = _boxes(client)
    exported = client.get(f"{url}/export/yolo")
    assert json.loads(exported.headers["x-yolo-classes"]) == ["cat", "dog"]
    assert exported.text.splitlines()[:2] == [
        "1 0.50000000 0.50000000 0.50000000 0.50000000",
        "0 0.12500000 0.25000000 0.25000000 0.50000000",
    ]
    _clear_boxes(client)
    client.post(
        f"{url}/import/yolo",
        files={"file": ("a.txt", exported.content)},
        data={"classes": "cat\ndog\n"},
    )
    after = _boxes(client)
    assert [b[5] for b in after] == [b[5] for b in before]
    np.testing.assert_allclose([b[1:5] for b in after], [b[1:5] for b in before], atol=1e-5)
    reordered = client.get(f"{url}/export/yolo", params={"classes": "dog,cat"})
    assert reordered.text.splitlines()[0].startswith("0 ")
    missing = client.get(f"{url}/export/yolo", params={"classes": "dog"})
    assert missing.status_code == 422 and "'cat'" in missing.json()["detail"]


@pytest.mark.parametrize(
    ("text", "classes", "message"),
    [
        (b"2 0.5 0.5 0.1 0.1", "a,b", "only 2 class names"),
        (b"0 0.5 0.5 0.1", "a", "line 1"),
        (b"0 0.5 0.5 0.1 0.1\nx 1 1 1 1", "a", "line 2"),
        (b"0 0.5 0.5 0.1 0.1", " , ", "class names"),
        (b"\xff\xfe", "a", "UTF-8"),
        (b"0 5 5 0.1 0.1", "a", "40×20"),
    ],
)
def test_bad_yolo_is_422_and_adds_nothing(
    client: TestClient, text: bytes, classes: str, message: str
) -> None:
    image = _image(client, "a.png", 40, 20, 6)
    response = client.post(
        f"/api/images/{image['id']}/import/yolo",
        files={"file": ("a.txt", text)},
        data={"classes": classes},
    )
    assert response.status_code == 422 and message in response.json()["detail"]
    assert _boxes(client) == []


_ANNOTATION = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}


def _coco_bytes(categories: Any = None, images: Any = None, annotation: Any = None) -> bytes:
    return json.dumps(
        {
            "images": [{"id": 1, "file_name": "a.png"}] if images is None else images,
            "categories": [{"id": 1, "name": "a"}] if categories is None else categories,
            "annotations": [{**_ANNOTATION, **(annotation or {})}],
        }
    ).encode()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_coco_bytes(categories=[{"id": [1, 2], "name": "a"}]), "must be an integer"),
        (_coco_bytes(categories=[{"id": {"x": 1}, "name": "a"}]), "got dict"),
        (_coco_bytes(categories=[{"id": True, "name": "a"}]), "got bool"),
        (_coco_bytes(categories=[{"id": 1.5, "name": "a"}]), "got float"),
        (_coco_bytes(categories=[{"id": 10**30, "name": "a"}]), "from 0 to"),
        (_coco_bytes(categories=[{"id": 1, "name": {"a": 1}}]), "must be a string"),
        (_coco_bytes(categories=[{"id": 1, "name": "a\u202eb"}]), "U+202E"),
        (_coco_bytes(images=[{"id": [1], "file_name": "a.png"}]), "image 0's 'id'"),
        (
            _coco_bytes(images=[{"id": 1, "file_name": "a.png", "width": [], "height": 2}]),
            "'width'",
        ),
        (_coco_bytes(images=[None]), "image 0"),
        (_coco_bytes(annotation={"image_id": [1]}), "'image_id'"),
        (_coco_bytes(annotation={"bbox": [1, 2, 3, None]}), "'bbox'"),
        (_coco_bytes(annotation={"bbox": [1, 2, 3, "4"]}), "'bbox'"),
        (_coco_bytes(annotation={"bbox": {"x": 1}}), "[x, y, w, h]"),
        (_coco_bytes(annotation={"category_id": {"id": 1}}), "'category_id'"),
        (
            _coco_bytes().replace(b"[1, 2, 3, 4]", b"[1, 2, 3, " + b"7" * 400 + b"]"),
            "finite number",
        ),
        (_coco_bytes().replace(b"[1, 2, 3, 4]", b"[1, 2, NaN, 4]"), "finite number"),
        (_coco_bytes().replace(b"[1, 2, 3, 4]", b"[1, 2, Infinity, 4]"), "finite number"),
        (_coco_bytes().replace(b"[1, 2, 3, 4]", b"[1, 2, 3, " + b"7" * 5000 + b"]"), "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b'{"images": [], "categories": 5, "annotations": []}', "'categories'"),
    ],
)
def test_hostile_coco_is_422_with_a_message(
    client: TestClient, document: bytes, message: str
) -> None:
    _image(client, "a.png", 20, 20, 7)
    response = client.post("/api/import/coco", files={"file": ("c.json", document)})
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert _boxes(client) == []


def test_voc_export_of_awkward_labels_is_well_formed_and_reimports(client: TestClient) -> None:
    import xml.etree.ElementTree as ET

    image = _image(client, "a <b> & 'c'.png", 40, 30, 8)
    labels = ["a <b> & c", "\"q\" 'z'", "]]>", "caf\u00e9 \U0001f408", "&amp;", "x" * 200]
    for i, label in enumerate(labels):
        _add(client, image["id"], i, i, 10, 10, label)
    url = f"/api/images/{image['id']}"
    exported = client.get(f"{url}/export/voc").content
    root = ET.fromstring(exported)
    assert root.findtext("filename") == "a <b> & 'c'.png"
    assert [o.findtext("name") for o in root.iter("object")] == labels
    before = _boxes(client)
    again = client.post(f"{url}/import/voc", files={"file": ("a.xml", exported)}).json()
    assert again == {"boxes_added": 0, "boxes_present": 6, "images_matched": 1, "skipped": []}
    _clear_boxes(client)
    client.post(f"{url}/import/voc", files={"file": ("a.xml", exported)})
    assert _boxes(client) == before


def test_voc_and_yolo_reimports_add_nothing(client: TestClient) -> None:
    image = _image(client, "a.png", 40, 30, 9)
    url = f"/api/images/{image['id']}"
    added = [
        client.post(f"{url}/import/voc", files={"file": ("a.xml", VOC)}).json() for _ in range(2)
    ]
    assert [(r["boxes_added"], r["boxes_present"]) for r in added] == [(2, 0), (0, 2)]
    yolo = b"0 0.5 0.5 0.5 0.5\n0 0.5 0.5 0.5 0.5\n"
    first = client.post(
        f"{url}/import/yolo", files={"file": ("a.txt", yolo)}, data={"classes": "cat"}
    ).json()
    second = client.post(
        f"{url}/import/yolo", files={"file": ("a.txt", yolo)}, data={"classes": "cat"}
    ).json()
    assert (first["boxes_added"], second["boxes_added"], second["boxes_present"]) == (2, 0, 2)
    assert len(_boxes(client)) == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"0 nan 0.5 0.1 0.1", "finite numbers"),
        (b"0 0.5 0.5 0.1 0.1 7", "line 1"),
        (b"0", "line 1"),
        (b"1" * 5000 + b" 0.5 0.5 0.1 0.1", "line 1"),
        (b"-3 0.5 0.5 0.1 0.1", "class -3"),
    ],
)
def test_hostile_yolo_is_422(client: TestClient, text: bytes, message: str) -> None:
    image = _image(client, "a.png", 40, 20, 10)
    response = client.post(
        f"/api/images/{image['id']}/import/yolo",
        files={"file": ("a.txt", text)},
        data={"classes": "a\nb"},
    )
    assert response.status_code == 422 and message in response.json()["detail"]
    bad_classes = client.post(
        f"/api/images/{image['id']}/import/yolo",
        files={"file": ("a.txt", b"0 0.5 0.5 0.1 0.1")},
        data={"classes": "a\x00b"},
    )
    assert bad_classes.status_code == 422 and "U+0000" in bad_classes.json()["detail"]
    assert _boxes(client) == []
