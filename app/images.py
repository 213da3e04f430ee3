"""Decode uploaded bytes into an RGB picture as displayed, with clear errors for bad files."""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import cast

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import LimitExceeded

__all__ = ["DecodedImage", "decode_image", "decoded_bytes", "content_hash", "DECODING"]

# Bytes per pixel as Pillow holds a mode in memory (multi-band modes take 4 bytes a pixel).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_RGB_BYTES = 4  # Pillow keeps RGB as 4 bytes a pixel
_ROWS_PER_CHUNK = 256  # high-bit-depth images are rescaled this many rows at a time


def decoded_bytes(width: int, height: int, mode: str) -> int:
    """Peak bytes that decoding a ``width × height`` image of Pillow ``mode`` holds.

    Counts the decoded source (bit depth × channels × pixels, as Pillow stores it), its
    oriented copy and the 8-bit RGB result. A 6300×6300 16-bit PNG of 75 kB is 2 × 79 MB +
    159 MB = 318 MB, not 75 kB.
    """
    source = _MODE_BYTES.get(mode, 4)
    return width * height * (2 * source + _RGB_BYTES)


class _ByteGate:
    """Counts the bytes decodes in flight hold; a decode waits until its bytes fit."""

    def __init__(self) -> None:
        self._held = 0
        self._free = threading.Condition()

    @property
    def held(self) -> int:
        """Bytes reserved by decodes running now."""
        with self._free:
            return self._held

    @contextmanager
    def hold(self, nbytes: int, budget: int) -> Iterator[None]:
        """Reserve ``nbytes`` of ``budget`` for the length of the block (waits for room)."""
        with self._free:
            self._free.wait_for(lambda: self._held == 0 or self._held + nbytes <= budget)
            self._held += nbytes
        try:
            yield
        finally:
            with self._free:
                self._held -= nbytes
                self._free.notify_all()


DECODING = _ByteGate()
"""The process-wide count of bytes held by decodes in flight (``max_bytes`` bounds it)."""


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image as it is displayed (EXIF orientation applied), with its content hash."""

    pixels: Image.Image
    sha256: str
    format: str

    @property
    def width(self) -> int:
        return self.pixels.width

    @property
    def height(self) -> int:
        return self.pixels.height

    def array(self) -> np.ndarray:
        """The image as an ``H×W×3`` uint8 array."""
        return np.asarray(self.pixels, dtype=np.uint8)


def content_hash(data: bytes) -> str:
    """The SHA-256 of the raw bytes: an image is stored once per content."""
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, *, max_pixels: int, max_bytes: int | None = None) -> DecodedImage:
    """Decode image bytes to RGB as displayed.

    Grayscale, palette, RGBA (composited on white), 16-bit and CMYK images become 8-bit RGB;
    the EXIF orientation is applied, so box coordinates always refer to the image as a
    viewer shows it.

    Args:
        data: the file's bytes.
        max_pixels: refuse images with more pixels than this (decompression bombs).
        max_bytes: refuse an image whose decoding needs more bytes than this (see
            :func:`decoded_bytes`); decodes running at once together stay under it (a
            decode waits for others to finish). ``None``: no byte budget.

    Returns:
        The decoded image.

    Raises:
        ValueError: empty, unreadable, truncated or non-image data, or too many pixels.
        LimitExceeded: decoding would need more than ``max_bytes``.
    """
    if not data:
        raise ValueError("the file is empty; upload a PNG, JPEG, WebP, BMP, GIF or TIFF image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format or "unknown"
                width, height = probe.size
                if width * height > max_pixels:
                    raise ValueError(
                        f"image is {width}×{height} = {width * height} pixels, above the limit "
                        f"of {max_pixels} (setting FEATUREGAP_MAX_IMAGE_PIXELS); downscale it"
                    )
                needed = decoded_bytes(width, height, probe.mode)
                if max_bytes is not None and needed > max_bytes:
                    raise LimitExceeded(
                        f"decoding this {width}×{height} {probe.mode} image needs about "
                        f"{needed / 2**20:.0f} MiB, above max_decoded_bytes = "
                        f"{max_bytes / 2**20:.0f} MiB (setting FEATUREGAP_MAX_DECODED_BYTES); "
                        "downscale it or save it with 8 bits per channel"
                    )
                gate: AbstractContextManager[None] = (
                    nullcontext() if max_bytes is None else DECODING.hold(needed, max_bytes)
                )
                with gate:
                    probe.load()
                    image = ImageOps.exif_transpose(probe)
                    rgb = _to_rgb(image)
                    del image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL refuses huge canvases while opening, before our own check can run.
        raise ValueError(
            f"image has too many pixels, above the limit ({exc}); downscale it "
            f"(setting FEATUREGAP_MAX_IMAGE_PIXELS: {max_pixels})"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ValueError(f"not a readable image ({exc}); upload a PNG, JPEG, WebP or TIFF") from exc
    except (OSError, SyntaxError, EOFError) as exc:
        raise ValueError(f"the image file is damaged or truncated ({exc})") from exc
    return DecodedImage(pixels=rgb, sha256=content_hash(data), format=fmt)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparency is composited on white, 16-bit is rescaled."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        if image.mode.startswith("I;16"):
            low, top = 0.0, 65535.0
        else:
            lo, hi = cast(tuple[float, float], image.getextrema())  # one band: (min, max)
            low, top = min(float(lo), 0.0), max(float(hi), 1.0)
        # a few rows at a time: a float64 copy of a 6300×6300 image alone is 318 MB
        scaled = np.empty((image.height, image.width), dtype=np.uint8)
        for r0 in range(0, image.height, _ROWS_PER_CHUNK):
            r1 = min(image.height, r0 + _ROWS_PER_CHUNK)
            values = np.asarray(image.crop((0, r0, image.width, r1)), dtype=np.float64)
            scaled[r0:r1] = np.clip((values - low) / (top - low) * 255.0 + 0.5, 0, 255)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
