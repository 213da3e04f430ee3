"""Turn a PIL picture into the normalised tensor a model expects.

Two input modes:

* ``resize`` (default): the image is resized to ``input_size × input_size`` (bilinear, with
  antialiasing, in float32), whatever its aspect ratio. The feature map then covers the
  whole image, so bringing a map back to the image is a bilinear resize with
  ``align_corners=False``.
* ``native``: the image keeps its own aspect ratio. Its longest side is capped at
  ``native_max_side``, and each side is then rounded to the nearest multiple of
  ``max_stride`` (at least one stride), so every stage's feature grid divides the input
  exactly and the map again covers the whole image: a map maps back with the same bilinear
  resize. The small stretch from rounding (under half a stride per side) is the price of
  that exactness.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from PIL import Image

from app.engine.models import ModelSpec

__all__ = ["DEFAULT_NATIVE_MAX_SIDE", "InputMode", "input_size", "to_input"]

InputMode = Literal["resize", "native"]

DEFAULT_NATIVE_MAX_SIDE = 1024
"""The longest ``native`` side when the caller passes none (``Settings.native_max_side``'s
default)."""


def input_size(
    width: int,
    height: int,
    spec: ModelSpec,
    mode: InputMode = "resize",
    native_max_side: int = DEFAULT_NATIVE_MAX_SIDE,
    max_stride: int = 32,
) -> tuple[int, int]:
    """The ``(height, width)`` of the tensor fed to the model for an image of this size.

    Raises:
        ValueError: unknown mode or a non-positive size.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}×{height}")
    if mode == "resize":
        return spec.input_size, spec.input_size
    if mode != "native":
        raise ValueError(f"unknown input mode {mode!r}; use 'resize' or 'native'")
    scale = min(1.0, native_max_side / max(width, height))

    def snap(side: int) -> int:
        return max(max_stride, int(round(side * scale / max_stride)) * max_stride)

    return snap(height), snap(width)


def to_input(
    image: Image.Image,
    spec: ModelSpec,
    mode: InputMode = "resize",
    native_max_side: int = DEFAULT_NATIVE_MAX_SIDE,
    max_stride: int = 32,
) -> torch.Tensor:
    """Resize and normalise ``image`` for ``spec``'s model.

    Args:
        image: an RGB picture.
        spec: the model's preprocessing (input size, mean, std).
        mode: ``resize`` or ``native`` (see the module docstring).
        native_max_side: longest side in ``native`` mode.
        max_stride: the network's total stride; ``native`` sides are multiples of it.

    Returns:
        A ``3×h×w`` float32 tensor.

    Raises:
        ValueError: unknown mode.
    """
    h, w = input_size(image.width, image.height, spec, mode, native_max_side, max_stride)
    rgb = image.convert("RGB")
    # Antialiased bilinear resampling in float32 per channel: the filter torch's
    # ``interpolate(..., antialias=True)`` reproduces, without its cost on large photos and
    # without rounding to uint8 between resize and normalisation.
    channels = []
    for band in range(3):
        plane = rgb.getchannel(band).convert("F")
        if (h, w) != (rgb.height, rgb.width):
            plane = plane.resize((w, h), Image.Resampling.BILINEAR)
        channels.append(np.asarray(plane, dtype=np.float32))
    # numpy, not torch: the same float32 operations give the same bits, and numpy never
    # starts an OpenMP team, so decode threads do not fight a forward pass for its cores
    x = np.stack(channels)
    x /= np.float32(255.0)
    x -= np.asarray(spec.mean, dtype=np.float32).reshape(3, 1, 1)
    x /= np.asarray(spec.std, dtype=np.float32).reshape(3, 1, 1)
    return torch.from_numpy(x)
