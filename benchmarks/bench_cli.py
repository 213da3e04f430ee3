"""Command-line start: ``featuregap models``, ``layers`` and ``--help`` as a new process.

Goal: under 2 s for the first run on a fresh machine (an empty data folder, no sidecar, an
empty torch hub cache). Three ways are timed, interleaved, best of :data:`REPEATS`, each in
its own fresh data folder: ``seeded`` (the shipped ``app/catalog_seed.json`` answers),
``computed`` (the seed hidden, so the lists import torch, timm and torchvision and load the
model, as every first run did before the seed) and ``warm`` (the on-disk cache answers).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPEATS = 3
COMMANDS = (("models",), ("layers",), ("--help",))
# The CLI as the console script runs it; ``hide_seed`` points the seed at a missing file.
_SCRIPT = """
import sys
import app.catalog
if sys.argv[1] == "1":
    app.catalog.SEED = app.catalog.SEED.with_name("no-such-seed.json")
from app.cli import main
try:
    main(sys.argv[2:])
except SystemExit as exc:  # --help
    sys.exit(exc.code)
"""


def _run(argv: tuple[str, ...], env: dict[str, str], hide_seed: bool) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", _SCRIPT, "1" if hide_seed else "0", *argv],
        check=True,
        capture_output=True,
        env=env,
        timeout=300,
    )
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="featuregap-bench-cli-") as folder:
        root = Path(folder)
        (root / "models").mkdir()
        base = {
            **os.environ,
            "FEATUREGAP_MODELS_DIR": str(root / "models"),
            "TORCH_HOME": str(root / "torch"),
        }
        best: dict[tuple[str, str], float] = {}
        for repeat in range(REPEATS):
            for argv in COMMANDS:
                for way in ("seeded", "computed"):
                    env = {**base, "FEATUREGAP_DATA_DIR": str(root / f"data-{way}-{repeat}")}
                    seconds = _run(argv, env, hide_seed=way == "computed")
                    warm = _run(argv, env, hide_seed=way == "computed")
                    for key, value in (((argv[0], way), seconds), ((argv[0], "warm"), warm)):
                        best[key] = min(best.get(key, float("inf")), value)
    load = os.getloadavg()[0]
    for argv in COMMANDS:
        name = argv[0]
        seeded, computed, warm = (best[name, w] for w in ("seeded", "computed", "warm"))
        print(
            f"featuregap {name:<7} first run: {seeded:.2f}s seeded vs {computed:.2f}s computed "
            f"({computed / seeded:.1f}x; goal < 2 s); warm {warm:.2f}s "
            f"(best of {REPEATS}, load {load:.1f})"
        )


if __name__ == "__main__":
    main()
