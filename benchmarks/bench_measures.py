"""Measures: MMD cost relative to one matrix product, peak memory, permutation cost."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import torch

from app.engine.inference import Design, bootstrap_interval, permutation_test
from app.engine.inference.permutation import _native_bfloat16
from app.engine.measures import get_measure, mmd, seed_mmd
from benchmarks._timing import best_time

# The 50k run goes to a fresh interpreter and reads its own VmHWM: ru_maxrss would not do,
# because Linux folds the parent's peak into the child's at exec (subprocess starts it with
# vfork), so inside `make bench` the child reported the parent's 3.86 GiB, not its own.
_PEAK_SCRIPT = """
import time, torch
from app.engine.measures import mmd

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

g = torch.Generator().manual_seed(0)
x = torch.randn({n}, 512, generator=g)
y = torch.randn({n}, 512, generator=g) + 0.1
start = time.perf_counter()
mmd(x, y, kernel="multi")
took, peak = time.perf_counter() - start, hwm()
# The references: every block of z @ z.T (2n x 2n, not storable), by torch.mm into one
# reused buffer and by oneDNN (a 1x1 convolution, as the MMD's Gram runs on the CPU).
z = torch.cat([x, y])
out = torch.empty(2048, 2048)
start = time.perf_counter()
for i in range(0, z.shape[0], 2048):
    for j in range(0, z.shape[0], 2048):
        a, b = z[i : i + 2048], z[j : j + 2048]
        torch.mm(a, b.T, out=out[: a.shape[0], : b.shape[0]])
mm = time.perf_counter() - start
start = time.perf_counter()
for j in range(0, z.shape[0], 1024):
    columns = z[j : j + 1024].T.contiguous()[None, :, :, None]
    for i in range(0, z.shape[0], 1024):
        torch.nn.functional.conv2d(columns, z[i : i + 1024, :, None, None])
print(took, mm, time.perf_counter() - start, peak)
"""


def _cpu_and_wall(fn: Callable[[], object]) -> tuple[float, float]:
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def _seed_reference(x: torch.Tensor, y: torch.Tensor) -> float:
    # The seed note's algorithm: the full n×n×d difference tensor, then five exps.
    total = torch.cat([x, y])
    d2 = ((total.unsqueeze(0) - total.unsqueeze(1)) ** 2).sum(2)
    n2 = total.shape[0]
    bw = d2.sum() / (n2 * n2 - n2) / 4
    k = sum(torch.exp(-d2 / (bw * 2**i)) for i in range(5))
    n = x.shape[0]
    return float((k[:n, :n] + k[n:, n:] - k[:n, n:] - k[n:, :n]).mean())


def _resampler_speed(
    x: torch.Tensor, y: torch.Tensor, design: Design, resamples: int
) -> tuple[float, float]:
    """Seconds of MMD's default interval through its resampler, and calling the measure."""
    measure = get_measure("mmd")
    through = best_time(
        lambda: bootstrap_interval(measure, x, y, design, resamples=resamples), repeats=1
    )
    called = best_time(
        lambda: bootstrap_interval(lambda a, b: measure(a, b), x, y, design, resamples=resamples),
        repeats=1,
    )
    return through, called


def _onednn_gram(z: torch.Tensor) -> torch.Tensor:
    """``z @ z.T`` through oneDNN (the 1×1 convolution the MMD's Gram uses on the CPU)."""
    return torch.nn.functional.conv2d(z.T.contiguous()[None, :, :, None], z[:, :, None, None])


def main() -> None:
    """Print the speed/memory goals of the measures as ratios from this run."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10_000, 512, generator=g)
    y = torch.randn(10_000, 512, generator=g) + 0.1
    z = torch.cat([x, y])
    # Interleaved, best of each: the machine's load then hits both alike.
    t_mm = t_dnn = t_mmd = float("inf")
    for _ in range(2):
        t_mm = min(t_mm, best_time(lambda: z @ z.T, repeats=1))
        t_dnn = min(t_dnn, best_time(lambda: _onednn_gram(z), repeats=1))
        t_mmd = min(t_mmd, best_time(lambda: mmd(x, y, kernel="multi"), repeats=1))
    # One Gram block as the MMD computes it: 1024 rows x 1024 columns of d + 2 = 1,282.
    rows, cols = torch.randn(1024, 1282, generator=g), torch.randn(1282, 1024, generator=g)
    flops = 2 * 1024 * 1024 * 1282 / 1e9
    t_block_mm = best_time(lambda: torch.mm(rows, cols), repeats=5)
    t_block_dnn = best_time(
        lambda: torch.nn.functional.conv2d(cols[None, :, :, None], rows[:, :, None, None]),
        repeats=5,
    )
    print(
        f"one 1024x1282 @ 1282x1024 Gram block: torch.mm {flops / t_block_mm:.0f} GFLOP/s, "
        f"oneDNN (1x1 convolution) {flops / t_block_dnn:.0f} GFLOP/s"
    )
    print(
        f"5-kernel MMD 2x10,000x512 f32: {t_mmd:.2f} s = {t_mmd / t_mm:.2f}x one "
        f"20,000x512 @ 512x20,000 torch.mm ({t_mm:.2f} s), {t_mmd / t_dnn:.2f}x the same "
        f"product through oneDNN ({t_dnn:.2f} s); goal <= 1.2x"
    )

    xs, ys = x[:2000], y[:2000]
    design = Design.independent(2000, 2000)
    one = perm = (float("inf"), float("inf"))
    for _ in range(2):
        one = min(one, _cpu_and_wall(lambda: mmd(xs, ys)))
        perm = min(
            perm,
            _cpu_and_wall(
                lambda: permutation_test(get_measure("mmd"), xs, ys, design, permutations=1000)
            ),
        )
    products = "bfloat16" if _native_bfloat16() else "float32"
    print(
        f"1,000 permutations 2x2,000x512: {perm[0]:.2f} s = {perm[0] / one[0]:.2f}x one MMD "
        f"({one[0]:.3f} s; CPU seconds {perm[1] / one[1]:.2f}x; forms' products in "
        f"{products}); goal <= 2x"
    )

    xa, ya = x[:400], y[:400]
    t_seed = best_time(lambda: _seed_reference(xa, ya), repeats=1)
    t_ours = best_time(lambda: seed_mmd(xa, ya), repeats=3)
    print(
        f"seed_mmd 2x400x512: seed algorithm {t_seed:.2f} s, ours {t_ours:.4f} s "
        f"({t_seed / t_ours:.0f}x faster)"
    )

    # The default interval of a matrix cell: studentized, 26 evaluations a resample; then
    # the same boxes' `pixels` (16 rows a box, box units): 1,280 pooled rows, past the
    # median heuristic's 1,024, so each resample's median takes its seeded subset.
    sixteen = tuple(r // 16 for r in range(640))
    for what, xb, yb, design, resamples in (
        ("40 vs 40 x 1,536", x[:40], y[:40], Design.independent(40, 40), 200),
        (
            "their pixels, 1,280 pooled rows x 1,536",
            x[:640],
            y[:640],
            Design(
                sixteen, sixteen, tuple(100 + b for b in sixteen), tuple(100 + b for b in sixteen)
            ),
            10,
        ),
    ):
        through, called = _resampler_speed(xb.repeat(1, 3), yb.repeat(1, 3), design, resamples)
        print(
            f"studentized MMD interval, {what} f32, {resamples} resamples x 26 evaluations: "
            f"{through:.2f} s through the pooled rows' distances, {called:.2f} s calling the "
            f"measure on every resample ({called / through:.1f}x)"
        )

    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT.format(n=50_000)],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, gemm, dnn, peak = out.stdout.split()[-4:]
    print(
        f"5-kernel MMD 2x50,000x512 f32: {float(seconds):.0f} s = "
        f"{float(seconds) / float(gemm):.2f}x every block of the 100,000x100,000 torch.mm "
        f"({float(gemm):.0f} s), {float(seconds) / float(dnn):.2f}x through oneDNN "
        f"({float(dnn):.0f} s), peak RSS {int(peak) / 2**30:.2f} GiB (VmHWM of a fresh "
        "process: torch, inputs, blocks); goals <= 1.2x, < 2 GiB"
    )
