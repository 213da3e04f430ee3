"""`featuregap serve` says where to go once ready; make's doors install what they need."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow  # starts the app in a subprocess
def test_serve_prints_the_url_once_the_page_answers(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("FEATUREGAP_API_TOKEN", None)
    argv = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    argv += ["--data-dir", str(tmp_path / "data")]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    ) as server:
        try:
            assert server.stdout is not None
            deadline = time.monotonic() + 120
            line = ""
            while "ready" not in line:
                assert time.monotonic() < deadline, "no ready line"
                line = server.stdout.readline()
                assert line or server.poll() is None, "the server stopped"
            url = f"http://127.0.0.1:{port}/"
            assert line.strip() == f"FeatureGap is ready: open {url} (Ctrl+C stops it)"
            # Ready means ready: the page answers at once.
            assert httpx.get(url, timeout=10).status_code == 200
        finally:
            server.terminate()
            server.wait(timeout=30)


def _plan(target: str) -> str:
    """What ``make -n TARGET`` would run, in a copy where no virtual environment exists."""
    done = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target, "VENV=/nonexistent/venv"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_demo_installs_only_the_app_and_make_test_adds_the_test_extra() -> None:
    demo = _plan("demo")
    assert "pip install -e .\n" in demo and "[test]" not in demo
    assert "--quiet" not in demo  # pip's progress shows on the first, long install
    assert "featuregap serve --demo --host 127.0.0.1 --port 8000" in demo
    for target in ("test", "lint", "bench"):
        plan = _plan(target)
        assert "pip install -e ." in plan and "pip install --quiet -e '.[test]'" in plan, target
    custom = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "demo", "VENV=/nonexistent/venv", "HOST=0.0.0.0", "PORT=9"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "--host 0.0.0.0 --port 9" in custom
