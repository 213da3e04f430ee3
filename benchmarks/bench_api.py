"""API latency against a running server (uvicorn in a subprocess), features cached.

Each row prints p50 and p95 over its requests and, where it has one, the ratio of the p50
to its goal (issue 15: the answer should be all compute):

* ``GET /api/health``: goal p50 ≤ 2 ms.
* ``POST /api/distances``, 2 groups × 50 boxes, euclidean on ``gap``, features cached:
  each request uses another ``seed``, so the results table cannot answer it and the
  descriptors and the measure are recomputed. Goal: p50 ≤ 20 ms. The same with MMD on
  ``pixels``: goal p50 < 150 ms.
* ``POST /api/heatmaps`` for a cached image (Grad-CAM map in memory): one box moves before
  each request, so the scores and the figure are recomputed; goal: p50 ≤ 10 ms. Also
  shown: the same request repeated (answered by the results table).
* A Grad-CAM heat map computed from scratch (another target class each time), as a
  ratio to a bare forward plus backward of the same model, as loaded, and input in this
  process (goal ≤ 1.5×). Also shown: its ratio to a bare pass with no autograd graph
  before the layer, as the app runs it. Both references run the model as loaded; the app
  folds its batch norms (``app.engine.fold``), which a user's own bare pass would not.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from benchmarks.live_server import live_server

LAYER = "conv_head"


def _png(name: str) -> bytes:
    import io

    import numpy as np
    from PIL import Image
    from skimage import data

    image = np.asarray(getattr(data, name)())
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(image[..., :3].astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _times(fn: Callable[[int], httpx.Response], n: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        response = fn(i)
        out.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
    return out


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _report(
    name: str, ms: list[float], goal: float | None, *, reference: tuple[str, float] | None = None
) -> None:
    """One row: p50, p95 and the p50's ratio to its goal (or to a reference time)."""
    ordered = sorted(ms)
    p50 = statistics.median(ordered)
    line = f"{name}: n={len(ms)} p50 {p50:.1f} ms, p95 {_percentile(ordered, 0.95):.1f} ms"
    if reference is not None:
        what, ref_ms = reference
        ratio = p50 / ref_ms
        line += f", p50 = {ratio:.2f}× {what} ({ref_ms:.1f} ms)"
        if goal is not None:
            line += f", goal ≤ {goal:g}× ({'met' if ratio <= goal else 'MISSED'})"
    elif goal is not None:
        met = "met" if p50 <= goal else "MISSED"
        line += f", p50/goal {p50 / goal:.2f} (goal {goal:g} ms, {met})"
    print(line, flush=True)


def _bare_forward_backward(image_png: bytes, *, from_layer: bool = False) -> Callable[[int], float]:
    """A timer of the compute a Grad-CAM request cannot avoid, on the server's model in this
    process: one forward to the logits with the input's autograd graph, and the target
    logit's gradient with respect to ``LAYER``'s output; ``from_layer``: the graph recorded
    from ``LAYER``'s output on only. Returns ``target → milliseconds``."""
    import io

    import torch
    from PIL import Image

    from app.config import get_settings
    from app.engine.models import get_model
    from app.engine.preprocess import to_input

    settings = get_settings()
    model = get_model(settings.default_model, settings.models_dir)
    picture = Image.open(io.BytesIO(image_png)).convert("RGB")
    x = to_input(picture, model.spec, "resize")[None]
    module = model.module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    layer = module.get_submodule(LAYER)

    taken: list[torch.Tensor] = []

    def keep(_m: object, _i: object, out: torch.Tensor) -> torch.Tensor:
        if from_layer:  # the graph starts here: gradients on, the output a fresh leaf
            torch.set_grad_enabled(True)
            out = out.detach().requires_grad_(True)
        taken.append(out)
        return out

    def run(target: int) -> float:
        taken.clear()
        hook = layer.register_forward_hook(keep)
        try:
            start = time.perf_counter()
            with torch.set_grad_enabled(not from_layer):
                logits = module(x.detach().clone().requires_grad_(not from_layer))
                torch.autograd.grad(logits[0, target], taken[0])
            return (time.perf_counter() - start) * 1000
        finally:
            hook.remove()

    run(0)
    return run


def main() -> None:
    """Start a server on a temporary data directory and time each row."""
    with tempfile.TemporaryDirectory() as tmp:
        with live_server(Path(tmp) / "data", start_timeout=120, client_timeout=300) as client:
            _run(client)


def _run(client: httpx.Client) -> None:
    _times(lambda i: client.get("/api/health"), 20)
    _report("health", _times(lambda i: client.get("/api/health"), 200), 2)

    rng = random.Random(0)
    groups: dict[str, list[int]] = {}
    for name in ("brick", "grass"):
        image = client.post(
            "/api/images", files={"file": (f"{name}.png", _png(name), "image/png")}
        ).json()
        groups[name] = [
            client.post(
                f"/api/images/{image['id']}/boxes",
                json={
                    "x": rng.uniform(0, 380),
                    "y": rng.uniform(0, 380),
                    "w": rng.uniform(40, 130),
                    "h": rng.uniform(40, 130),
                    "label": name,
                },
            ).json()["id"]
            for _ in range(50)
        ]
    for measure, descriptor, goal in (("euclidean", "gap", 20), ("mmd", "pixels", 150)):
        body = {"groups": groups, "layer": LAYER, "measure": measure, "descriptor": descriptor}
        _times(lambda i, b=body: client.post("/api/distances", json={**b, "seed": 10_000 + i}), 3)  # type: ignore[misc]
        _report(
            f"distances 2×50 boxes, {measure} on {descriptor}, features cached",
            _times(lambda i, b=body: client.post("/api/distances", json={**b, "seed": i}), 30),  # type: ignore[misc]
            goal,
        )

    chelsea = _png("chelsea")
    cat = client.post("/api/images", files={"file": ("chelsea.png", chelsea, "image/png")}).json()
    box = client.post(
        f"/api/images/{cat['id']}/boxes",
        json={"x": 140, "y": 20, "w": 180, "h": 210, "label": "cat"},
    ).json()
    client.post(
        f"/api/images/{cat['id']}/boxes", json={"x": 0, "y": 0, "w": 60, "h": 60, "label": "corner"}
    )
    heat = {"image_id": cat["id"], "layer": LAYER, "method": "gradcam"}
    client.post("/api/heatmaps", json=heat)
    elapsed: list[float] = []

    def moved(i: int) -> httpx.Response:
        client.patch(f"/api/boxes/{box['id']}", json={"x": 100 + i})
        start = time.perf_counter()
        response = client.post("/api/heatmaps", json=heat)
        elapsed.append((time.perf_counter() - start) * 1000)
        return response

    _times(moved, 40)
    _report("heat map, cached image, a box moved (rescored)", elapsed[5:], 10)
    _report(
        "heat map, same request again (results table)",
        _times(lambda i: client.post("/api/heatmaps", json=heat), 30),
        None,
    )
    # The bare compute runs between the requests, so both see the same load on the machine,
    # and on a worker thread as the server runs its model. Measured on this 2-core machine
    # under load: the first thread to start a torch parallel region ran a forward+backward
    # 5-15× slower (0.3-1.1 s) than any thread after it (60 ms), so this thread starts one
    # first.
    import torch

    torch.ones(1 << 20).add(1).sum()
    fresh: list[float] = []
    bare_ms: list[float] = []
    least_ms: list[float] = []
    with ThreadPoolExecutor(1) as worker:
        bare = worker.submit(_bare_forward_backward, chelsea).result()
        least = worker.submit(_bare_forward_backward, chelsea, from_layer=True).result()
        for i in range(12):
            target = {**heat, "target": 300 + i}
            fresh += _times(lambda _: client.post("/api/heatmaps", json=target), 1)  # noqa: B023
            bare_ms.append(worker.submit(bare, 300 + i).result())
            least_ms.append(worker.submit(least, 300 + i).result())
    _report(
        "Grad-CAM heat map computed (another target each time)",
        fresh[2:],
        1.5,
        reference=("a bare forward+backward", statistics.median(bare_ms[2:])),
    )
    _report(
        "  the same requests",
        fresh[2:],
        None,
        reference=("the graph from the layer on only", statistics.median(least_ms[2:])),
    )
    # the least disturbed of each: on a busy machine a few requests meet a torch stall
    best, best_bare, best_least = min(fresh[2:]), min(bare_ms[2:]), min(least_ms[2:])
    print(
        f"  fastest request / fastest bare forward+backward: {best:.1f} / {best_bare:.1f} ms "
        f"= {best / best_bare:.2f}× (/ fastest graph from the layer on: {best_least:.1f} ms "
        f"= {best / best_least:.2f}×)",
        flush=True,
    )


if __name__ == "__main__":
    main()
