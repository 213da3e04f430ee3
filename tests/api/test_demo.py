"""The demo project and ``featuregap serve --demo`` on a real port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.config import Settings
from app.demo import DEMO_BOXES, load_demo
from app.store import Store


def test_demo_loads_once_into_an_empty_store(tmp_path: Path) -> None:
    store = Store(Settings(data_dir=tmp_path / "data"))
    assert load_demo(store) == 7
    images = {i.filename: i for i in store.images()}
    assert set(images) == {f"{name}.png" for name in DEMO_BOXES}
    assert (images["chelsea.png"].width, images["chelsea.png"].height) == (451, 300)
    assert images["brick.png"].format == "PNG"
    assert store.load_decoded(images["brick.png"]).pixels.mode == "RGB"
    labels = store.labels()
    assert {"cat", "cup", "face", "helmet", "rocket"} <= set(labels)
    assert min(labels["brick"], labels["grass"], labels["gravel"]) >= 4
    for name, boxes in DEMO_BOXES.items():  # stored as placed: none was clipped
        stored = store.boxes(image_id=images[f"{name}.png"].id)
        assert [(b.x, b.y, b.w, b.h, b.label) for b in stored] == [
            (float(x), float(y), float(w), float(h), label) for x, y, w, h, label in boxes
        ]
    assert load_demo(store) == 0
    assert len(store.boxes()) == sum(len(b) for b in DEMO_BOXES.values())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_demo_answers_on_a_real_port(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATUREGAP_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from app.cli import main; raise SystemExit(main())",
            "serve",
            "--demo",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert health.json()["images"] == 7
        labels = httpx.get(f"http://127.0.0.1:{port}/api/labels").json()
        assert {x["label"] for x in labels} >= {"cat", "cup", "brick", "grass", "gravel"}
        assert (tmp_path / "data" / "featuregap.db").exists()
    finally:
        process.terminate()
        process.wait(timeout=20)
        if process.stderr is not None:
            process.stderr.close()
