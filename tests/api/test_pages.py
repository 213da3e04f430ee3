"""The dashboard's HTML and static files, served by the app itself (no browser needed)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from fastapi.testclient import TestClient

STATIC = Path(__file__).resolve().parents[2] / "static"


class _Controls(HTMLParser):
    """Collects form controls (with ids) and the ids that labels point at."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[str] = []
        self.labelled: set[str] = set()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("input", "select", "textarea", "progress"):
            self.controls.append(a.get("id") or f"<{tag} without id>")
        if tag == "label" and a.get("for"):
            self.labelled.add(str(a["for"]))
        for key in ("src", "href"):
            if a.get(key) and tag in ("script", "link", "img"):
                self.sources.append(str(a[key]))


def test_page_labels_every_control_and_loads_only_local_files(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    parser = _Controls()
    parser.feed(response.text)
    assert len(parser.controls) > 10
    assert [c for c in parser.controls if c not in parser.labelled] == []
    assert parser.sources and all(s.startswith(("/static/", "data:")) for s in parser.sources)


def test_every_module_the_page_imports_is_served(client: TestClient) -> None:
    pending, seen = ["main.js"], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        response = client.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith("text/javascript")
        folder = str(Path(name).parent)
        for target in re.findall(r'from "(\.{1,2}/[^"]+)"', response.text):
            pending.append(str(Path(folder) / target).replace("views/../", ""))
    assert seen == {str(p.relative_to(STATIC)) for p in STATIC.rglob("*.js")}


def test_plotly_is_the_vendored_strict_build_of_the_packages_version(client: TestClient) -> None:
    import plotly

    response = client.get("/static/plotly.min.js")
    assert response.status_code == 200
    vendored = Path(__file__).resolve().parents[2] / "vendor" / "plotly" / "plotly-strict.min.js"
    assert response.content == vendored.read_bytes()
    # The strict build (WebGL code precompiled: no eval) of the plotly.js version the Python
    # package makes its figures for.
    bundled = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    version = re.search(rb"plotly\.js v(\d+\.\d+\.\d+)", bundled.read_bytes()[:300])
    assert version is not None
    assert response.content[:300].startswith(
        b"/**\n* plotly.js (strict - minified) v" + version.group(1) + b"\n"
    )


def test_static_refuses_paths_outside_its_folder_and_unknown_kinds(client: TestClient) -> None:
    for path in (
        "/static/../app/config.py",
        "/static/%2e%2e/app/config.py",
        "/static/..%2fpyproject.toml",
        "/static/missing.js",
        "/static/",
    ):
        assert client.get(path).status_code == 404, path
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
