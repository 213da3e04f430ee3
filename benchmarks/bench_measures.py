"""Measures: MMD cost relative to one matrix product, peak memory, permutation cost."""

from __future__ import annotations

import subprocess
import sys

import torch

from app.engine.inference import Design, permutation_test
from app.engine.measures import get_measure, mmd, seed_mmd
from benchmarks._timing import best_time

_PEAK_SCRIPT = """
import resource, time, torch
from app.engine.measures import mmd
g = torch.Generator().manual_seed(0)
x = torch.randn({n}, 512, generator=g)
y = torch.randn({n}, 512, generator=g) + 0.1
start = time.perf_counter()
mmd(x, y, kernel="multi")
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _seed_reference(x: torch.Tensor, y: torch.Tensor) -> float:
    # The seed note's algorithm: the full n×n×d difference tensor, then five exps.
    total = torch.cat([x, y])
    d2 = ((total.unsqueeze(0) - total.unsqueeze(1)) ** 2).sum(2)
    n2 = total.shape[0]
    bw = d2.sum() / (n2 * n2 - n2) / 4
    k = sum(torch.exp(-d2 / (bw * 2**i)) for i in range(5))
    n = x.shape[0]
    return float((k[:n, :n] + k[n:, n:] - k[:n, n:] - k[n:, :n]).mean())


def main() -> None:
    """Print the three speed/memory goals of the measures as ratios from this run."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10_000, 512, generator=g)
    y = torch.randn(10_000, 512, generator=g) + 0.1
    z = torch.cat([x, y])
    t_mm = best_time(lambda: z @ z.T, repeats=2)
    t_mmd = best_time(lambda: mmd(x, y, kernel="multi"), repeats=2)
    print(
        f"5-kernel MMD 2x10,000x512 f32: {t_mmd:.2f} s = {t_mmd / t_mm:.2f}x one "
        f"20,000x512 @ 512x20,000 matmul ({t_mm:.2f} s); goal <= 1.5x"
    )

    xs, ys = x[:2000], y[:2000]
    t_one = best_time(lambda: mmd(xs, ys), repeats=3)
    t_perm = best_time(
        lambda: permutation_test(
            get_measure("mmd"), xs, ys, Design.independent(2000, 2000), permutations=1000
        ),
        repeats=1,
    )
    print(
        f"1,000 permutations 2x2,000x512: {t_perm:.2f} s = {t_perm / t_one:.2f}x one MMD "
        f"({t_one:.3f} s); goal <= 3x"
    )

    xa, ya = x[:400], y[:400]
    t_seed = best_time(lambda: _seed_reference(xa, ya), repeats=1)
    t_ours = best_time(lambda: seed_mmd(xa, ya), repeats=3)
    print(
        f"seed_mmd 2x400x512: seed algorithm {t_seed:.2f} s, ours {t_ours:.4f} s "
        f"({t_seed / t_ours:.0f}x faster)"
    )

    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT.format(n=50_000)],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, rss = out.stdout.split()[-2:]
    peak_gib = int(rss) / 2**20  # ru_maxrss is KiB on Linux
    print(
        f"5-kernel MMD 2x50,000x512 f32: {float(seconds):.0f} s, peak RSS {peak_gib:.2f} GiB "
        "(whole process: torch, inputs, blocks); goal < 2 GiB"
    )
