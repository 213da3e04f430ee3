"""A real server (uvicorn, real embedded model, isolated data dir) and headless Chromium.

Every page the tests open records its requests and console errors; a test fails if any
request leaves the app's origin or the console logs an error.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"
ROOT = Path(__file__).resolve().parents[2]
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every browser test; without Chromium, fail them in CI and skip them elsewhere."""
    for item in items:
        if "tests/browser" not in str(item.path).replace(os.sep, "/"):
            continue
        item.add_marker(pytest.mark.browser)
        item.add_marker(pytest.mark.slow)
        if not CHROMIUM.exists() and not os.environ.get("CI"):
            item.add_marker(pytest.mark.skip(reason=f"no {CHROMIUM}: apt-get install chromium"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(data_dir: Path, **env_extra: str) -> Iterator[str]:
    """Run the app with uvicorn in a subprocess on a free port; yields its origin."""
    port = _free_port()
    env = {**os.environ, "FEATUREGAP_DATA_DIR": str(data_dir)}
    env.pop("FEATUREGAP_API_TOKEN", None)
    # Small enough that a distance matrix with permutations goes through the jobs API.
    env["FEATUREGAP_ANALYSIS_JOB_THRESHOLD"] = "100"
    env.update(env_extra)
    log = (data_dir.parent / f"server-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    origin = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{origin}/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {log.name}")
            time.sleep(0.2)
        yield origin
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app with the real embedded model on an isolated data dir; yields its origin."""
    with serve(tmp_path_factory.mktemp("browser") / "data") as origin:
        yield origin


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Headless Debian Chromium driven by Playwright (never a downloaded browser)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=LAUNCH_ARGS)
        yield browser
        browser.close()


@dataclass
class Watch:
    """What a page did: every request URL and every console error."""

    origin: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def foreign(self) -> list[str]:
        """Requests that left the app's origin (blob:/data: URLs of the page itself are local)."""
        local = (self.origin + "/", f"blob:{self.origin}/", "data:")
        return [url for url in self.requests if not url.startswith(local)]


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> object:
    """``shot(page, "step")`` saves artifacts/browser/<test>-<n>-<step>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    counter = iter(range(1, 100))

    def save(page: object, step: str) -> Path:
        path = ARTIFACTS / f"{request.node.name}-{next(counter):02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
        return path

    return save


@contextmanager
def _watched(browser: Any, origin: str) -> Iterator[tuple[Any, Watch]]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    watch = Watch(origin)
    page.on("request", lambda req: watch.requests.append(req.url))
    page.on("console", lambda msg: watch.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: watch.errors.append(f"page error: {exc}"))
    page.set_default_timeout(30_000)
    try:
        yield page, watch
    finally:
        context.close()
    assert watch.foreign() == [], "requests left the app's origin"
    assert watch.errors == [], "the console logged errors"


@pytest.fixture
def watched_page(browser: Any, server: str) -> Iterator[tuple[Any, Watch]]:
    """A 1280×800 page on the app, checked afterwards for foreign requests and console errors."""
    with _watched(browser, server) as pair:
        yield pair


@pytest.fixture
def token_page(browser: Any, tmp_path: Path) -> Iterator[tuple[Any, Watch]]:
    """A watched page on a second server that requires the API token ``s3cret-token``."""
    with serve(tmp_path / "data", FEATUREGAP_API_TOKEN="s3cret-token") as origin:
        with _watched(browser, origin) as pair:
            yield pair
