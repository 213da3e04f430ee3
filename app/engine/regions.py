"""Box regions of a feature map, on the image's pixel grid, without building ``C×H×W``.

A feature map ``C×h×w`` covers the whole model input, which covers the whole image, so the
map is brought to the image by a bilinear resize with ``align_corners=False``: image pixel
``i`` (centre ``i + 0.5``) reads the map at ``(i + 0.5)·w/W − 0.5``. A box's region is the
set of pixels whose centres lie inside it (for integer boxes: columns ``x … x+w−1``).

* ``gap``: the mean over those pixels of the upsampled map, computed exactly from two 1-D
  bilinear weight vectors (the upsampling is separable), so cost is ``C·h·w`` a box, all
  boxes of a map in one contraction.
* ``grid`` / ``pixels``: the upsampled map read at the centres of an ``s×s`` split of the
  box, through ``torchvision.ops.roi_align(aligned=True, sampling_ratio=1)`` on the box in
  feature-map coordinates (``x·w/W``, ``y·h/H``): one bilinear sample per bin centre, the
  same point bilinear upsampling gives an image pixel there.

Boxes are checked and clipped by :func:`app.boxes.check_box` first.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from app.boxes import Box, check_box, pixel_span

__all__ = ["Descriptor", "batch_region_descriptors", "region_descriptors", "upsample_to_image"]

Descriptor = Literal["gap", "grid", "pixels"]


def upsample_to_image(map2d: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Bring an ``h×w`` map to the image's ``H×W`` grid (bilinear, ``align_corners=False``).

    Args:
        map2d: the small map.
        image_size: ``(width, height)`` of the image.
    """
    width, height = image_size
    if map2d.dim() != 2:
        raise ValueError(f"expected an h×w map, got shape {tuple(map2d.shape)}")
    out = F.interpolate(
        map2d[None, None], size=(height, width), mode="bilinear", align_corners=False
    )
    return out[0, 0]


@functools.lru_cache(maxsize=64)
def _running_weights(small: int, large: int) -> torch.Tensor:
    """Running sums over the ``large`` output pixels of their 1-D bilinear weights on the
    ``small`` input (``(large+1)×small`` float64, row ``k``: pixels ``0..k-1``), shared
    between calls (a dataset's images have a few sizes): never written to.

    Follows PyTorch's ``align_corners=False`` rule: source ``(i + 0.5)·small/large − 0.5``,
    negative sources clamp to 0, the upper neighbour clamps to ``small − 1``.
    """
    index = torch.arange(large, dtype=torch.float64)
    src = ((index + 0.5) * (small / large) - 0.5).clamp(min=0.0)
    low = src.floor().long().clamp(max=small - 1)
    high = (low + 1).clamp(max=small - 1)
    frac = src - low.to(torch.float64)
    table = torch.zeros(large + 1, small, dtype=torch.float64)  # row k + 1: output pixel k
    table[1:].scatter_add_(1, low[:, None], (1.0 - frac)[:, None])
    table[1:].scatter_add_(1, high[:, None], frac[:, None])
    return table.cumsum(0)


def _span_weights(
    spans: Sequence[tuple[int, int]], small: int, large: int, dtype: torch.dtype
) -> torch.Tensor:
    """Per span ``(first, stop)``: the sum over output pixels ``first..stop-1`` of their 1-D
    bilinear weights on the input (``len(spans)×small``), as two rows of one table of
    running sums (:func:`_running_weights`), so many boxes cost one table, not one loop each.
    """
    running = _running_weights(small, large)
    first, stop = torch.tensor(spans, dtype=torch.long).reshape(-1, 2).unbind(1)
    return (running[stop] - running[first]).to(dtype)


def region_descriptors(
    fmap: torch.Tensor,
    image_size: tuple[int, int],
    boxes: Sequence[Box],
    kind: Descriptor,
    grid_size: int = 4,
) -> list[torch.Tensor]:
    """Descriptors of ``boxes`` from one image's feature map.

    Args:
        fmap: ``C×h×w`` feature map of the image.
        image_size: ``(width, height)`` of the image the boxes refer to.
        boxes: boxes in image pixels (checked and clipped with :func:`check_box`).
        kind: ``gap`` (a ``C`` vector), ``grid`` (a ``C·s²`` vector, channel-major) or
            ``pixels`` (``s²×C`` samples, row-major over the grid).
        grid_size: ``s`` for ``grid`` and ``pixels``.

    Returns:
        One tensor per box, in ``fmap``'s dtype.

    Raises:
        ValueError: a bad box, map shape, kind or grid size.
    """
    if fmap.dim() != 3:
        raise ValueError(f"expected a C×h×w feature map, got shape {tuple(fmap.shape)}")
    # One implementation for one image and a batch: the local pipeline (batches) and Ray's
    # actors (an image at a time) give the same bits.
    return batch_region_descriptors(fmap[None], [image_size], [boxes], kind, grid_size)[0]


def batch_region_descriptors(
    fmaps: torch.Tensor,
    image_sizes: Sequence[tuple[int, int]],
    boxes: Sequence[Sequence[Box]],
    kind: Descriptor,
    grid_size: int = 4,
) -> list[list[torch.Tensor]]:
    """:func:`region_descriptors` of a batch's maps: ``gap`` one contraction an image (its
    separable weights stay ``n×(h+w)``), ``grid`` and ``pixels`` one ``roi_align`` for the
    whole batch.

    Args:
        fmaps: ``B×C×h×w`` feature maps of ``B`` images (one input size).
        image_sizes: ``(width, height)`` of each image.
        boxes: each image's boxes.
        kind: as :func:`region_descriptors`.
        grid_size: ``s`` for ``grid`` and ``pixels``.

    Returns:
        Per image, one tensor per box, as :func:`region_descriptors` gives them.

    Raises:
        ValueError: a bad box, map shape, kind or grid size, or lists of other lengths.
    """
    if fmaps.dim() != 4:
        raise ValueError(f"expected B×C×h×w feature maps, got shape {tuple(fmaps.shape)}")
    if not len(fmaps) == len(image_sizes) == len(boxes):
        raise ValueError(
            f"{len(fmaps)} maps, {len(image_sizes)} image sizes and {len(boxes)} box lists; "
            "give one of each per image"
        )
    if kind not in ("gap", "grid", "pixels"):
        raise ValueError(f"unknown descriptor {kind!r}; use 'gap', 'grid' or 'pixels'")
    if grid_size < 1:
        raise ValueError(f"grid_size must be at least 1, got {grid_size}")
    checked = [
        [check_box(box, width, height) for box in image_boxes]
        for (width, height), image_boxes in zip(image_sizes, boxes, strict=True)
    ]
    counts = [len(image_boxes) for image_boxes in checked]
    if not sum(counts):
        return [[] for _ in checked]
    batch, channels, h, w = fmaps.shape
    if kind == "gap":
        return [
            _gap(fmap, size, image_boxes) if image_boxes else []
            for fmap, size, image_boxes in zip(fmaps, image_sizes, checked, strict=True)
        ]
    found = _pooled(fmaps, image_sizes, checked, kind, grid_size)
    out, start = [], 0
    for n in counts:
        out.append(found[start : start + n])
        start += n
    return out


def _gap(fmap: torch.Tensor, image_size: tuple[int, int], boxes: list[Box]) -> list[torch.Tensor]:
    """``gap`` of one image's boxes: the box's mean over the map brought to the image grid,
    as separable span weights (``n×h`` and ``n×w``, never ``n×h·w``: at an early layer in
    native mode that product is hundreds of MB). In float64, one image at a time, so a
    descriptor does not change with the batch it was extracted in."""
    width, height = image_size
    _, h, w = fmap.shape
    cols = [pixel_span(box.x, box.w) for box in boxes]
    rows = [pixel_span(box.y, box.h) for box in boxes]
    wx = _span_weights(cols, w, width, torch.float64)
    wy = _span_weights(rows, h, height, torch.float64)
    area = torch.tensor(
        [(c[1] - c[0]) * (r[1] - r[0]) for c, r in zip(cols, rows, strict=True)],
        dtype=torch.float64,
    )
    sums = torch.einsum("chw,nh,nw->nc", fmap.to(torch.float64), wy, wx)
    return list((sums / area[:, None]).to(fmap.dtype).unbind(0))


def _pooled(
    fmaps: torch.Tensor,
    image_sizes: Sequence[tuple[int, int]],
    checked: list[list[Box]],
    kind: Descriptor,
    grid_size: int,
) -> list[torch.Tensor]:
    """``grid`` or ``pixels`` of every box of a batch through one ``roi_align``."""
    channels, h, w = fmaps.shape[1:]
    rois = []
    for b, ((width, height), image_boxes) in enumerate(zip(image_sizes, checked, strict=True)):
        sx, sy = w / width, h / height  # as region_descriptors scales, to the last bit
        rois += [
            [float(b), box.x * sx, box.y * sy, (box.x + box.w) * sx, (box.y + box.h) * sy]
            for box in image_boxes
        ]
    pooled = roi_align(
        fmaps,
        torch.tensor(rois, dtype=fmaps.dtype),
        output_size=(grid_size, grid_size),
        spatial_scale=1.0,
        sampling_ratio=1,
        aligned=True,
    )
    if kind == "grid":
        return [p.reshape(-1) for p in pooled]
    return [p.reshape(channels, -1).T.contiguous() for p in pooled]
