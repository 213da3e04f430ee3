"""Every bad or unusual image input from issue 2: a clear error or correct handling."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.images import content_hash, decode_image

LIMIT = 10**7


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _rgb(seed: int = 0, size: tuple[int, int] = (7, 5)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is plain text, not a picture", "not a readable image"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj", "not a readable image"),
    ],
)
def test_unreadable_files(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_image(data, max_pixels=LIMIT)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files(fmt: str) -> None:
    data = _save(Image.fromarray(_rgb(size=(64, 48))), fmt)
    with pytest.raises(ValueError, match="damaged or truncated|not a readable image"):
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)


def test_too_many_pixels_and_decompression_bombs() -> None:
    data = _save(Image.new("RGB", (300, 200)), "PNG")
    with pytest.raises(ValueError, match="above the limit of 59999"):
        decode_image(data, max_pixels=59_999)
    assert decode_image(data, max_pixels=60_000).width == 300
    # A tiny file that claims a huge canvas is refused before any pixel is decoded.
    bomb = _save(Image.new("1", (20_000, 20_000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(ValueError, match="above the limit"):
        decode_image(bomb, max_pixels=LIMIT)


def test_rgb_round_trip_and_hash() -> None:
    array = _rgb(1)
    data = _save(Image.fromarray(array), "PNG")
    decoded = decode_image(data, max_pixels=LIMIT)
    np.testing.assert_array_equal(decoded.array(), array)
    assert decoded.sha256 == content_hash(data) and decoded.format == "PNG"
    assert (decoded.width, decoded.height) == (7, 5) and decoded.pixels.mode == "RGB"


def test_grayscale_becomes_three_equal_channels() -> None:
    gray = _rgb(2)[..., 0]
    decoded = decode_image(_save(Image.fromarray(gray, mode="L"), "PNG"), max_pixels=LIMIT)
    np.testing.assert_array_equal(decoded.array(), np.stack([gray] * 3, axis=-1))


def test_rgba_is_composited_on_white() -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (200, 100, 0, 255)  # opaque
    rgba[0, 1] = (0, 0, 0, 0)  # transparent → white
    rgba[1, 0] = (0, 0, 0, 128)  # half black over white
    rgba[1, 1] = (255, 0, 0, 64)
    out = decode_image(_save(Image.fromarray(rgba, mode="RGBA"), "PNG"), max_pixels=LIMIT).array()
    alpha = rgba[..., 3:].astype(np.float64) / 255
    want = rgba[..., :3] * alpha + 255 * (1 - alpha)
    np.testing.assert_allclose(out, want, atol=1.01)
    assert tuple(out[0, 1]) == (255, 255, 255) and tuple(out[0, 0]) == (200, 100, 0)


def test_palette_images_with_and_without_transparency() -> None:
    array = _rgb(3)
    palette = Image.fromarray(array).quantize(colors=16)
    decoded = decode_image(_save(palette, "PNG"), max_pixels=LIMIT)
    np.testing.assert_array_equal(decoded.array(), np.asarray(palette.convert("RGB")))
    palette.info["transparency"] = 0
    out = decode_image(_save(palette, "PNG", transparency=0), max_pixels=LIMIT).array()
    index = np.asarray(palette)
    assert (out[index == 0] == 255).all()
    np.testing.assert_array_equal(out[index != 0], np.asarray(palette.convert("RGB"))[index != 0])


def test_sixteen_bit_grayscale_is_rescaled() -> None:
    values = np.array([[0, 257, 32768], [65535, 1000, 12850]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    out = decode_image(_save(image, "PNG"), max_pixels=LIMIT).array()
    want = np.clip(np.floor(values / 65535 * 255 + 0.5), 0, 255)
    np.testing.assert_array_equal(out[..., 0], want)
    assert (out[..., 0] == out[..., 2]).all()


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (8, 6), (0, 255, 255, 0))  # pure red in CMYK
    decoded = decode_image(_save(cmyk, "JPEG", quality=100), max_pixels=LIMIT)
    assert decoded.pixels.mode == "RGB"
    mean = decoded.array().reshape(-1, 3).mean(0)
    assert mean[0] > 240 and mean[1] < 15 and mean[2] < 15


@pytest.mark.parametrize(
    ("orientation", "size"), [(1, (7, 5)), (3, (7, 5)), (6, (5, 7)), (8, (5, 7))]
)
def test_exif_orientation_is_applied(orientation: int, size: tuple[int, int]) -> None:
    array = _rgb(4)  # stored 7 wide, 5 high
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _save(Image.fromarray(array), "PNG", exif=exif.tobytes())
    decoded = decode_image(data, max_pixels=LIMIT)
    assert (decoded.width, decoded.height) == size
    want = {1: array, 3: np.rot90(array, 2), 6: np.rot90(array, -1), 8: np.rot90(array, 1)}
    np.testing.assert_array_equal(decoded.array(), want[orientation])
