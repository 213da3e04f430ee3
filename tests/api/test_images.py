"""Images API: upload, dedupe, list, file, thumbnail, delete, and every kind of bad upload."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _post(client: TestClient, data: bytes, name: str = "x.png", **form: str) -> object:
    return client.post(
        "/api/images", files={"file": (name, data, "application/octet-stream")}, data=form or None
    )


def test_upload_real_photo_then_same_bytes_again(client: TestClient, photo: object) -> None:
    png = photo.png("chelsea")  # type: ignore[attr-defined]
    first = _post(client, png, "chelsea.png", label="cats")
    assert first.status_code == 201  # type: ignore[attr-defined]
    body = first.json()  # type: ignore[attr-defined]
    assert (body["width"], body["height"], body["format"]) == (451, 300, "PNG")
    assert body["filename"] == "chelsea.png" and body["label"] == "cats"
    assert body["box_count"] == 0 and len(body["sha256"]) == 64
    again = _post(client, png, "renamed.png")
    assert again.status_code == 200 and again.json()["id"] == body["id"]  # type: ignore[attr-defined]
    listing = client.get("/api/images").json()["items"]
    assert [i["id"] for i in listing] == [body["id"]]
    assert client.get("/api/images", params={"label": "dogs"}).json()["items"] == []
    assert client.get(f"/api/images/{body['id']}").json() == body


def test_file_returns_the_stored_bytes_with_their_type(client: TestClient) -> None:
    jpeg = _encode(_noise(33, 21), "JPEG")
    image = _post(client, jpeg, "a.jpg").json()  # type: ignore[attr-defined]
    response = client.get(f"/api/images/{image['id']}/file")
    assert response.status_code == 200
    assert response.content == jpeg and response.headers["content-type"] == "image/jpeg"


def test_thumbnail_of_image_and_of_a_box(client: TestClient) -> None:
    picture = _noise(300, 200, 1)
    image = _post(client, _encode(picture, "PNG")).json()  # type: ignore[attr-defined]
    whole = client.get(f"/api/images/{image['id']}/thumbnail", params={"size": 64})
    assert whole.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(whole.content)).size == (64, 43)
    box = client.post(
        f"/api/images/{image['id']}/boxes", json={"x": 10, "y": 20, "w": 30, "h": 40, "label": "a"}
    ).json()
    crop = client.get(
        f"/api/images/{image['id']}/thumbnail", params={"box_id": box["id"], "size": 512}
    )
    got = np.asarray(Image.open(io.BytesIO(crop.content)).convert("RGB"))
    assert got.shape == (40, 30, 3)  # never enlarged: the crop's own pixels
    np.testing.assert_array_equal(got, np.asarray(picture)[20:60, 10:40])
    other = _post(client, _encode(_noise(50, 50, 2), "PNG")).json()  # type: ignore[attr-defined]
    wrong = client.get(f"/api/images/{other['id']}/thumbnail", params={"box_id": box["id"]})
    assert wrong.status_code == 422 and "belongs to image" in wrong.json()["detail"]
    assert (
        client.get(f"/api/images/{image['id']}/thumbnail", params={"box_id": 9999}).status_code
        == 404
    )


def test_delete_image_and_unknown_ids(client: TestClient, data_dir: Path) -> None:
    image = _post(client, _encode(_noise(20, 20), "PNG")).json()  # type: ignore[attr-defined]
    client.post(
        f"/api/images/{image['id']}/boxes", json={"x": 0, "y": 0, "w": 5, "h": 5, "label": "a"}
    )
    assert client.delete(f"/api/images/{image['id']}").status_code == 204
    assert client.get("/api/boxes").json()["items"] == []
    assert not list((data_dir / "images").rglob("*.png"))
    for method, url in (
        ("get", "/api/images/{}"),
        ("delete", "/api/images/{}"),
        ("get", "/api/images/{}/file"),
        ("get", "/api/images/{}/thumbnail"),
    ):
        response = getattr(client, method)(url.format(image["id"]))
        assert response.status_code == 404, url
        assert f"no image with id {image['id']}" in response.json()["detail"]
    assert client.get("/api/images/0").status_code == 422
    assert client.get(f"/api/images/{2**70}").status_code == 422  # not a driver overflow 500
    assert client.get("/api/boxes", params={"image_id": 2**70}).status_code == 422


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width×height`` (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is text\n" * 20, "not a readable image"),
        (_encode(_noise(64, 64), "PNG")[:300], "truncated"),
        (_png_claiming(7_000, 7_000), "above the limit of 40000000"),
        (_png_claiming(100_000, 100_000), "decompression bomb"),
    ],
)
def test_bad_uploads_are_4xx_with_a_reason(client: TestClient, data: bytes, message: str) -> None:
    response = _post(client, data)
    assert response.status_code == 422, response.text  # type: ignore[attr-defined]
    assert message in response.json()["detail"]  # type: ignore[attr-defined]
    assert client.get("/api/images").json()["items"] == []


def test_too_large_upload_is_413_with_the_limit(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.config import get_settings
    from app.main import create_app

    monkeypatch.setenv("FEATUREGAP_MAX_UPLOAD_BYTES", "5000")
    get_settings.cache_clear()
    with TestClient(create_app(get_settings())) as client:
        response = _post(client, _encode(_noise(100, 100), "PNG"))
        assert response.status_code == 413  # type: ignore[attr-defined]
        assert "5000 bytes" in response.json()["detail"]  # type: ignore[attr-defined]
        assert _post(client, _encode(_noise(10, 10), "PNG")).status_code == 201  # type: ignore[attr-defined]
        # A declared body far over the limit is refused before it is parsed.
        huge = client.post(
            "/api/images",
            content=b"x" * (2 * 1024 * 1024),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert huge.status_code == 413 and "5000 bytes" in huge.json()["detail"]


@pytest.mark.parametrize(
    ("image", "fmt", "size"),
    [
        (
            Image.fromarray((np.arange(35 * 17).reshape(17, 35) * 100).astype(np.uint16)),
            "PNG",
            (35, 17),
        ),
        (_noise(30, 20).convert("CMYK"), "JPEG", (30, 20)),
        (_noise(25, 15).convert("RGBA"), "PNG", (25, 15)),
        (_noise(25, 15).convert("P"), "GIF", (25, 15)),
    ],
)
def test_unusual_modes_are_accepted_as_rgb(
    client: TestClient, image: Image.Image, fmt: str, size: tuple[int, int]
) -> None:
    response = _post(client, _encode(image, fmt))
    assert response.status_code == 201, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert (body["width"], body["height"]) == size
    thumb = client.get(f"/api/images/{body['id']}/thumbnail", params={"size": 1024})
    assert Image.open(io.BytesIO(thumb.content)).mode == "RGB"


def test_exif_rotated_jpeg_has_the_displayed_size_and_boxes_use_it(client: TestClient) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    data = _encode(_noise(40, 20), "JPEG", exif=exif.tobytes())
    body = _post(client, data, "rotated.jpg").json()  # type: ignore[attr-defined]
    assert (body["width"], body["height"]) == (20, 40)
    ok = client.post(
        f"/api/images/{body['id']}/boxes", json={"x": 0, "y": 0, "w": 20, "h": 40, "label": "a"}
    )
    assert ok.status_code == 201
    too_wide = client.post(
        f"/api/images/{body['id']}/boxes", json={"x": 0, "y": 0, "w": 40, "h": 20, "label": "a"}
    )
    assert too_wide.status_code == 201
    assert (too_wide.json()["w"], too_wide.json()["h"]) == (20, 20)  # clipped to 20 wide
    outside = client.post(
        f"/api/images/{body['id']}/boxes", json={"x": 25, "y": 0, "w": 5, "h": 5, "label": "a"}
    )
    assert outside.status_code == 422 and "20×40" in outside.json()["detail"]


def test_upload_needs_a_file(client: TestClient) -> None:
    assert client.post("/api/images").status_code == 422
