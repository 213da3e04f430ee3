"""Box regions equal the naive "upsample to H×W, then crop" on small awkward sizes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from app.boxes import Box, check_box, pixel_span
from app.engine.regions import batch_region_descriptors, region_descriptors, upsample_to_image

# (channels, h, w, image width, image height): non-square maps, scales up and down, 1-pixel maps
SIZES = [(3, 5, 7, 37, 23), (2, 4, 3, 17, 29), (1, 1, 1, 9, 6), (4, 6, 5, 5, 6), (5, 7, 11, 61, 40)]


def _naive(fmap: torch.Tensor, width: int, height: int) -> torch.Tensor:
    return F.interpolate(fmap[None], size=(height, width), mode="bilinear", align_corners=False)[0]


def _boxes(width: int, height: int, count: int, gen: torch.Generator) -> list[Box]:
    out = []
    for _ in range(count):
        w = int(torch.randint(1, width + 1, (1,), generator=gen))
        h = int(torch.randint(1, height + 1, (1,), generator=gen))
        x = int(torch.randint(0, width - w + 1, (1,), generator=gen))
        y = int(torch.randint(0, height - h + 1, (1,), generator=gen))
        out.append(Box(x, y, w, h))
    return [*out, Box(0, 0, width, height)]


@pytest.mark.parametrize(("c", "h", "w", "width", "height"), SIZES)
def test_roi_align_at_box_size_equals_upsample_and_crop(
    c: int, h: int, w: int, width: int, height: int
) -> None:
    gen = torch.Generator().manual_seed(c * 100 + h)
    fmap = torch.randn(c, h, w, dtype=torch.float64, generator=gen)
    big = _naive(fmap, width, height)
    for box in _boxes(width, height, 6, gen):
        rois = torch.tensor(
            [
                [
                    0,
                    box.x * w / width,
                    box.y * h / height,
                    (box.x + box.w) * w / width,
                    (box.y + box.h) * h / height,
                ]
            ],
            dtype=torch.float64,
        )
        got = roi_align(
            fmap[None],
            rois,
            output_size=(int(box.h), int(box.w)),
            spatial_scale=1.0,
            sampling_ratio=1,
            aligned=True,
        )[0]
        want = big[:, int(box.y) : int(box.y + box.h), int(box.x) : int(box.x + box.w)]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("c", "h", "w", "width", "height"), SIZES)
def test_gap_equals_mean_of_naive_crop(c: int, h: int, w: int, width: int, height: int) -> None:
    gen = torch.Generator().manual_seed(7 + w)
    fmap = torch.randn(c, h, w, dtype=torch.float64, generator=gen)
    big = _naive(fmap, width, height)
    boxes = _boxes(width, height, 8, gen)
    got = region_descriptors(fmap, (width, height), boxes, "gap")
    for box, vector in zip(boxes, got, strict=True):
        want = big[:, int(box.y) : int(box.y + box.h), int(box.x) : int(box.x + box.w)].mean((1, 2))
        assert vector.shape == (c,)
        torch.testing.assert_close(vector, want, rtol=0, atol=1e-5)


def test_gap_of_fractional_box_averages_pixels_whose_centres_are_inside() -> None:
    gen = torch.Generator().manual_seed(3)
    fmap = torch.randn(3, 4, 6, dtype=torch.float64, generator=gen)
    big = _naive(fmap, 31, 19)
    box = Box(2.4, 3.6, 10.3, 7.2)  # centres 2.5..12.5 → columns 2..12; 4.5..10.5 → rows 4..10
    assert pixel_span(box.x, box.w) == (2, 13)
    assert pixel_span(box.y, box.h) == (4, 11)
    (got,) = region_descriptors(fmap, (31, 19), [box], "gap")
    torch.testing.assert_close(got, big[:, 4:11, 2:13].mean((1, 2)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("s", [1, 2, 3])
@pytest.mark.parametrize(("c", "h", "w", "width", "height"), SIZES[:2] + SIZES[4:])
def test_grid_and_pixels_equal_naive_values_at_bin_centres(
    s: int, c: int, h: int, w: int, width: int, height: int
) -> None:
    gen = torch.Generator().manual_seed(s * 10 + c)
    fmap = torch.randn(c, h, w, dtype=torch.float64, generator=gen)
    big = _naive(fmap, width, height)
    # Boxes whose sides are odd multiples of s put every bin centre on a pixel centre.
    boxes = [Box(1, 2, 3 * s, 5 * s), Box(0, 0, s, s), Box(width - 3 * s, height - s, 3 * s, s)]
    boxes = [b for b in boxes if b.x >= 0 and b.y >= 0 and b.w <= width and b.h <= height]
    grids = region_descriptors(fmap, (width, height), boxes, "grid", grid_size=s)
    samples = region_descriptors(fmap, (width, height), boxes, "pixels", grid_size=s)
    for box, grid, pixels in zip(boxes, grids, samples, strict=True):
        step_x, step_y = int(box.w) // s, int(box.h) // s
        cols = [int(box.x) + step_x * j + step_x // 2 for j in range(s)]
        rows = [int(box.y) + step_y * i + step_y // 2 for i in range(s)]
        want = big[:, rows][:, :, cols]  # C×s×s
        assert grid.shape == (c * s * s,) and pixels.shape == (s * s, c)
        torch.testing.assert_close(grid, want.reshape(-1), rtol=0, atol=1e-5)
        torch.testing.assert_close(pixels, want.reshape(c, -1).T, rtol=0, atol=1e-5)


def test_upsample_to_image_matches_interpolate() -> None:
    gen = torch.Generator().manual_seed(0)
    small = torch.randn(3, 5, dtype=torch.float64, generator=gen)
    out = upsample_to_image(small, (11, 7))
    assert out.shape == (7, 11)
    torch.testing.assert_close(out, _naive(small[None], 11, 7)[0])
    with pytest.raises(ValueError, match="h×w"):
        upsample_to_image(torch.zeros(1, 3, 5), (11, 7))


def test_check_box_rejects_and_clips() -> None:
    assert check_box(Box(-5, 2, 10, 200), 20, 30) == Box(0, 2, 5, 28)
    assert check_box(Box(1, 1, 3, 3), 20, 30) == Box(1, 1, 3, 3)
    for bad, message in [
        (Box(1, 1, 0, 3), "positive"),
        (Box(1, 1, 3, -2), "positive"),
        (Box(math.nan, 1, 3, 3), "non-finite"),
        (Box(1, 1, math.inf, 3), "non-finite"),
        (Box(25, 1, 3, 3), "outside"),
        (Box(-9, -9, 9, 9), "outside"),
        (Box(19.5, 1, 3, 3), "less than one pixel"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_box(bad, 20, 30)


def test_clipped_box_region_equals_region_of_clipped_box() -> None:
    fmap = torch.randn(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a = region_descriptors(fmap, (16, 12), [Box(-4, 6, 12, 40)], "gap")[0]
    b = region_descriptors(fmap, (16, 12), [Box(0, 6, 8, 6)], "gap")[0]
    torch.testing.assert_close(a, b)


def test_bad_arguments() -> None:
    fmap = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="descriptor"):
        region_descriptors(fmap, (8, 8), [Box(0, 0, 2, 2)], "mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="C×h×w"):
        region_descriptors(fmap[0], (8, 8), [Box(0, 0, 2, 2)], "gap")
    with pytest.raises(ValueError, match="grid_size"):
        region_descriptors(fmap, (8, 8), [Box(0, 0, 2, 2)], "grid", grid_size=0)
    assert region_descriptors(fmap, (8, 8), [], "gap") == []


@pytest.mark.parametrize("kind", ["gap", "grid", "pixels"])
def test_a_batch_of_maps_gives_each_image_s_regions(kind: str) -> None:
    gen = torch.Generator().manual_seed(7)
    # one map size, images of other sizes (up and down), one image without boxes
    images = [(37, 23), (9, 6), (61, 40), (17, 29)]
    counts = [3, 1, 0, 5]
    fmaps = torch.randn(len(images), 3, 5, 7, generator=gen, dtype=torch.float64)
    boxes = [_boxes(w, h, n, gen) if n else [] for (w, h), n in zip(images, counts, strict=True)]
    got = batch_region_descriptors(fmaps, images, boxes, kind, grid_size=3)  # type: ignore[arg-type]
    assert [len(part) for part in got] == [n + 1 if n else 0 for n in counts]  # + whole image
    for fmap, (w, h), image_boxes, part in zip(fmaps, images, boxes, got, strict=True):
        if kind == "gap":  # region_descriptors is this very function on one map: the naive crop
            big = _naive(fmap, w, h)
            want = [
                big[:, int(b.y) : int(b.y + b.h), int(b.x) : int(b.x + b.w)].mean((1, 2))
                for b in image_boxes
            ]
        else:  # one roi_align for the batch against one per image (the batch index)
            want = region_descriptors(fmap, (w, h), image_boxes, kind, grid_size=3)  # type: ignore[arg-type]
        for a, b in zip(part, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
