"""t-SNE of 50,000 boxes: seconds and whole-process peak RSS in a fresh process.

Descriptors are synthetic stand-ins for ``gap`` at ``conv_head`` (1,280 features): twelve
labels, each a cloud around its own centre on a 32-dimensional latent space mapped into the
1,280 features, plus per-feature noise, non-negative like post-activation averages. The run
uses the service's settings (:func:`app.engine.embed.embed` with the torch thread count).
"""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import time, torch
from app.engine.embed import embed

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

n, d, labels, latent = {n}, 1280, 12, 32
g = torch.Generator().manual_seed(0)
centres = 3.0 * torch.randn(labels, latent, generator=g)
mixing = torch.randn(latent, d, generator=g) / latent**0.5
label = torch.arange(n) % labels
x = torch.empty(n, d)  # float32 like the store's descriptors, made in chunks
for i in range(0, n, 5000):
    codes = centres[label[i : i + 5000]] + torch.randn(min(5000, n - i), latent, generator=g)
    noise = 0.3 * torch.randn(min(5000, n - i), d, generator=g)
    x[i : i + 5000] = torch.relu(codes @ mixing + noise)
start = time.perf_counter()
xy = embed(x, "tsne", threads=torch.get_num_threads())
took = time.perf_counter() - start
# Does the map keep the labels apart? Share of 10 nearest neighbours in the plane with
# the same label, on a subset.
sub = torch.arange(0, n, max(1, n // 2000))
dist = torch.cdist(xy[sub], xy[sub])
near = dist.topk(11, largest=False).indices[:, 1:]
agree = float((label[sub][near] == label[sub][:, None]).double().mean())
print(took, hwm(), agree)
"""


def main() -> None:
    """Print the t-SNE row: 50,000 boxes in under 3 minutes, under 2 GiB."""
    n = 50_000
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(n=n)],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, peak, agree = out.stdout.split()[-3:]
    print(
        f"t-SNE of {n:,} boxes x 1,280 features (PCA to 50, FFT gradients, PCA init): "
        f"{float(seconds):.0f} s (goal < 180 s), peak RSS {int(peak) / 2**30:.2f} GiB "
        f"(goal < 2 GiB), same-label share of 10 nearest points {float(agree):.2f}"
    )


if __name__ == "__main__":
    main()
