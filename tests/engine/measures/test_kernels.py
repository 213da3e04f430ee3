"""Gram blocks of the blocked MMD against a float64 kernel matrix, by both product paths."""

from __future__ import annotations

import pytest
import torch

from app.engine.measures._kernels import Kernel, _onednn_product, block_sums, upper_pairs


def _reference(z: torch.Tensor, kernel: Kernel) -> torch.Tensor:
    d = torch.cdist(z.double(), z.double()).square()
    return kernel.weight * sum(torch.exp(-d / s) for s in kernel.scales)


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize(("rows", "n", "block"), [(37, 20, 8), (301, 150, 64), (130, 1, 1024)])
def test_upper_blocks_tile_the_float64_kernel_matrix(
    onednn: bool, rows: int, n: int, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = torch.Generator().manual_seed(rows)
    z = torch.randn(rows, 67, generator=g) * 0.3 + torch.rand(67, generator=g)
    kernel = Kernel(scales=(40.0, 20.0, 10.0, 5.0, 2.5), weight=0.2)
    want = _reference(z, kernel)
    seen = torch.zeros(rows, rows, dtype=torch.int64)
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", onednn)  # restored after the test
    assert _onednn_product(z) is onednn
    for (i0, i1), (j0, j1), k in upper_pairs(z, n, kernel, block):
        assert i0 <= j0 and not (i0 < n < i1 or j0 < n < j1)  # a block never straddles n
        torch.testing.assert_close(k.double(), want[i0:i1, j0:j1], rtol=2e-5, atol=2e-6)
        seen[i0:i1, j0:j1] += 1
    sums = block_sums(z, n, kernel, block)
    # No entry twice, and every pair (i, j) as itself or its transpose.
    assert int(seen.max()) == 1 and bool((seen + seen.T >= 1).all())
    expected = (want[:n, :n].sum(), want[n:, n:].sum(), want[:n, n:].sum())
    assert sums == pytest.approx([float(v) for v in expected], rel=1e-5)


def test_oneDNN_is_for_float32_on_the_cpu_only() -> None:
    assert not _onednn_product(torch.zeros(2, 2, dtype=torch.float64))
