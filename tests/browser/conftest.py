"""A real server (uvicorn, real embedded model, isolated data dir) and headless Chromium.

Every page the tests open records its requests and console errors; a test fails if any
request leaves the app's origin or the console logs an error.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from benchmarks.live_server import live_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DOC_SIZES = ((1280, 800), (900, 700))
BIG_STORE_IMAGES = 10_000
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every browser test; without Chromium, fail them in CI and skip them elsewhere."""
    for item in items:
        if "tests/browser" not in str(item.path).replace(os.sep, "/"):
            continue
        item.add_marker(pytest.mark.browser)
        item.add_marker(pytest.mark.slow)
        if not CHROMIUM.exists() and not os.environ.get("CI"):
            item.add_marker(pytest.mark.skip(reason=f"no {CHROMIUM}: apt-get install chromium"))


@contextmanager
def serve(data_dir: Path, **env_extra: str) -> Iterator[str]:
    """Run the app with uvicorn in a subprocess on a free port; yields its origin."""
    # Small enough that a distance matrix with permutations goes through the jobs API; the
    # models a test trains land beside the data dir, never in the repository's models/.
    env = {
        "FEATUREGAP_ANALYSIS_JOB_THRESHOLD": "100",
        "FEATUREGAP_MODELS_DIR": str(data_dir.parent / "models"),
        **env_extra,
    }
    with live_server(data_dir, unset=["FEATUREGAP_API_TOKEN"], ready_path="/", **env) as client:
        yield str(client.base_url).rstrip("/")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app with the real embedded model on a data dir of its own; yields its origin.

    One per test module: a module's tests see only the images, boxes and labels that the
    module made, whatever ran before it (the suite passes in any order of its files).
    """
    with serve(tmp_path_factory.mktemp("browser") / "data") as origin:
        yield origin


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Headless Debian Chromium driven by Playwright (never a downloaded browser)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
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


@pytest.fixture
def doc_shot() -> object:
    """``doc_shot(page, name, anchor, block, prepare)``: with ``FEATUREGAP_DOC_SCREENSHOTS=1``,
    the README's screenshot ``docs/screenshots/<name>-<w>x<h>.png`` at 1280×800 and 900×700,
    scrolled to the element ``anchor``, as a palette PNG under 300 KB; otherwise nothing.

    ``prepare(page)``, if given, runs after each resize and before the scroll (to fit and
    zoom the editor to the new stage, say). The page is left at 1280×800.
    """

    def save(
        page: Any,
        name: str,
        anchor: str,
        block: str = "start",
        prepare: Callable[[Any], None] | None = None,
    ) -> None:
        if not os.environ.get("FEATUREGAP_DOC_SCREENSHOTS"):
            return
        DOCS.mkdir(parents=True, exist_ok=True)
        for width, height in DOC_SIZES:
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(400)  # Plotly's responsive resize
            if prepare is not None:
                prepare(page)
            page.mouse.move(0, 0)  # no hover label or Plotly mode bar in the picture
            page.evaluate(
                "([sel, block]) => document.querySelector(sel).scrollIntoView({block})",
                [anchor, block],
            )
            page.wait_for_timeout(200)
            shot = Image.open(io.BytesIO(page.screenshot()))
            path = DOCS / f"{name}-{width}x{height}.png"
            shot.convert("RGB").quantize(colors=128).save(path, optimize=True)
            assert path.stat().st_size < 300_000, path
        page.set_viewport_size({"width": 1280, "height": 800})
        page.wait_for_timeout(300)

    return save


@contextmanager
def _watched(browser: Any, origin: str, device_scale: float = 1) -> Iterator[tuple[Any, Watch]]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, device_scale_factor=device_scale
    )
    page = context.new_page()
    watch = Watch(origin)
    page.on("request", lambda req: watch.requests.append(req.url))
    page.on("console", lambda msg: watch.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: watch.errors.append(f"page error: {exc} {exc.stack}"))
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
def hidpi_page(browser: Any, server: str) -> Iterator[tuple[Any, Watch]]:
    """:func:`watched_page` on a screen of 1.5 device pixels per CSS pixel (a laptop at 150 %)."""
    with _watched(browser, server, device_scale=1.5) as pair:
        yield pair


@pytest.fixture
def token_page(browser: Any, tmp_path: Path) -> Iterator[tuple[Any, Watch]]:
    """A watched page on a second server that requires the API token ``s3cret-token``."""
    with serve(tmp_path / "data", FEATUREGAP_API_TOKEN="s3cret-token") as origin:
        with _watched(browser, origin) as pair:
            yield pair


_SCATTER_POINTS = """(id) => {
  const gd = document.getElementById(id);
  const layout = gd._fullLayout, xa = layout.xaxis, ya = layout.yaxis;
  const frame = gd.getBoundingClientRect();
  const points = [];
  for (const trace of gd._fullData) {
    if (trace.visible !== true) continue;
    for (let i = 0; i < trace.customdata.length; i += 1) {
      points.push({ label: trace.name, box_id: trace.customdata[i][0],
                    image_id: trace.customdata[i][1],
                    x: frame.left + xa._offset + xa.l2p(trace.x[i]),
                    y: frame.top + ya._offset + ya.l2p(trace.y[i]) });
    }
  }
  return points;
}"""


@pytest.fixture
def scatter_points() -> object:
    """``scatter_points(page, "embedding-plot")``: every drawn point of a WebGL scatter with
    its label, ``box_id``, ``image_id`` and its centre in viewport pixels (for the mouse).

    A ``scattergl`` trace draws on a canvas, so there are no SVG points to locate; the
    positions come from Plotly's own axes, read through ``page.evaluate`` (the page's CSP
    refuses in-page eval).
    """

    def points(page: Any, plot_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = page.evaluate(_SCATTER_POINTS, plot_id)
        return found

    return points


def _tiny_png(index: int) -> bytes:
    pixels = np.full((12, 16, 3), (index * 37 % 256, index * 91 % 256, 160), np.uint8)
    pixels[0, 0] = (index & 255, (index >> 8) & 255, (index >> 16) & 255)  # distinct bytes
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _fill_store(data_dir: Path, count: int) -> None:
    """``count`` distinct tiny images written straight into a new store, in one transaction.

    Store.add_image stores one image per transaction with an fsync (about 10 ms each); the
    same rows and files written in bulk take a few seconds for 10,000.
    """
    from app.config import Settings
    from app.images import content_hash
    from app.store import ImageRecord, Store
    from app.store.tables import ImageRow

    store = Store(Settings(data_dir=data_dir))
    try:
        rows = []
        for index in range(count):
            data = _tiny_png(index)
            sha = content_hash(data)
            record = ImageRecord(0, sha, "", 16, 12, "PNG", None, datetime.now(UTC))
            path = store.image_path(record)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            rows.append(
                ImageRow(
                    sha256=sha, filename=f"tiny-{index:05d}.png", width=16, height=12, format="PNG"
                )
            )
        with store.session() as session, session.begin():
            session.add_all(rows)
        assert store.count_images() == count
    finally:
        store.close()


@pytest.fixture(scope="session")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server over a store of 10,000 tiny images named ``tiny-00000.png`` … in id order."""
    data_dir = tmp_path_factory.mktemp("big") / "data"
    _fill_store(data_dir, BIG_STORE_IMAGES)
    with serve(data_dir) as origin:
        yield origin


@pytest.fixture
def big_page(browser: Any, big_server: str) -> Iterator[tuple[Any, Watch]]:
    """A watched 1280×800 page on :func:`big_server`."""
    with _watched(browser, big_server) as pair:
        yield pair
