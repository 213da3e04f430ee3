"""Decode uploaded bytes into an RGB picture as displayed, with clear errors for bad files."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["DecodedImage", "decode_image", "content_hash"]


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


def decode_image(data: bytes, *, max_pixels: int) -> DecodedImage:
    """Decode image bytes to RGB as displayed.

    Grayscale, palette, RGBA (composited on white), 16-bit and CMYK images become 8-bit RGB;
    the EXIF orientation is applied, so box coordinates always refer to the image as a
    viewer shows it.

    Args:
        data: the file's bytes.
        max_pixels: refuse images with more pixels than this (decompression bombs).

    Returns:
        The decoded image.

    Raises:
        ValueError: empty, unreadable, truncated or non-image data, or too many pixels.
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
                probe.load()
                image = ImageOps.exif_transpose(probe)
                rgb = _to_rgb(image)
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
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        low = 0.0 if image.mode.startswith("I;16") else min(float(values.min()), 0.0)
        scaled = np.clip((values - low) / (top - low) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
