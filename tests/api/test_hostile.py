"""Hostile input at the HTTP edge: every case answers a 4xx (or 507/503) with a message.

Errors as types, a full disk, bodies that never end or nest 100,000 levels, requests from
other sites and other host names, the API token checked before a byte of body is read,
security headers, offline API docs, path abuse, and labels that try to be HTML in figures.
"""

from __future__ import annotations

import asyncio
import errno
import html
import itertools
import json
import os
import random
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from app.config import Settings


def _client(data_dir: Path, **settings: Any) -> TestClient:
    from app.main import create_app

    return TestClient(create_app(Settings(data_dir=data_dir, **settings)))


# -- errors as types ------------------------------------------------------------------------


def test_error_types_keep_the_builtin_bases_that_existing_code_catches() -> None:
    from app import errors

    assert isinstance(errors.NotFound("x"), KeyError)
    assert isinstance(errors.InvalidInput("x"), ValueError)
    assert str(errors.NotFound("no box with id 3")) == "no box with id 3"  # no KeyError quotes
    assert errors.Unavailable("busy", retry_after=0).retry_after == 1
    from app.api.errors import LimitExceeded

    assert LimitExceeded is errors.LimitExceeded


def test_every_error_type_and_builtin_maps_to_its_status(data_dir: Path) -> None:
    from app import errors

    cases: list[tuple[Exception, int]] = [
        (errors.NotFound("no image with id 9; GET /api/images lists them"), 404),
        (errors.InvalidInput("bins must be at most 256"), 422),
        (errors.LimitExceeded("too many boxes (setting FEATUREGAP_MAX_X)"), 413),
        (errors.Conflict("the image is being deleted"), 409),
        (errors.InsufficientStorage("no room"), 507),
        (errors.Unavailable("the worker pool is full; retry", retry_after=7), 503),
        (ValueError("use a positive number"), 422),
        (KeyError("unknown layer 'x'; use one of ['a']"), 404),
    ]
    router = APIRouter()

    def raiser(exc: Exception) -> Any:
        def route() -> None:
            raise exc

        return route

    for index, (exc, _status) in enumerate(cases):
        router.add_api_route(f"/api/_raise/{index}", raiser(exc))
    with _client(data_dir) as client:
        client.app.include_router(router)  # type: ignore[attr-defined]
        for index, (exc, status) in enumerate(cases):
            response = client.get(f"/api/_raise/{index}")
            assert response.status_code == status, exc
            message = exc.args[0]
            assert response.json() == {"detail": message}
            assert response.headers.get("retry-after") == ("7" if status == 503 else None)


def test_any_other_exception_is_a_logged_500_that_leaks_nothing(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from app.main import create_app

    app = create_app(Settings(data_dir=data_dir))

    @app.get("/api/_bug")
    def bug() -> None:
        raise RuntimeError("secret path /home/alice/.ssh in the message")

    @app.get("/api/_os")
    def other_os_error() -> None:
        raise PermissionError(errno.EACCES, "denied", "/srv/secret")

    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level("ERROR"):
        for path in ("/api/_bug", "/api/_os"):
            response = client.get(path)
            assert response.status_code == 500
            assert "secret" not in response.text and "internal error" in response.json()["detail"]
    logged = "\n".join(r.getMessage() + str(r.exc_info) for r in caplog.records)
    assert "unhandled error in GET /api/_bug" in logged and "RuntimeError" in logged
    assert "unhandled error in GET /api/_os" in logged


def test_nothing_below_the_api_imports_it() -> None:
    import ast

    root = Path(__file__).resolve().parents[2] / "app"
    offenders = []
    for folder in ("service", "store", "engine", "formats"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else []
                )
                offenders += [
                    f"{path.name}: {n}"
                    for n in names
                    if n == "app.api" or n.startswith(("app.api.", "fastapi"))
                ]
    assert offenders == []
    errors_py = (root / "errors.py").read_text()
    assert "import torch" not in errors_py and "fastapi" not in errors_py


# -- a full disk, leftovers -----------------------------------------------------------------


class _FullDisk:
    """A file object whose writes fail as a full disk makes them fail."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_on_upload_is_507_and_leaves_nothing_behind(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, photo: Any
) -> None:
    import app.store.files as files  # where the store writes whole files

    png = photo.png("chelsea")
    real_fdopen = os.fdopen
    with _client(data_dir) as client:
        monkeypatch.setattr(
            files.os, "fdopen", lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k))
        )
        response = client.post("/api/images", files={"file": ("c.png", png, "image/png")})
        assert response.status_code == 507
        assert "disk is full" in response.json()["detail"]
        assert "FEATUREGAP_DATA_DIR" in response.json()["detail"]
        assert client.get("/api/images").json()["items"] == []
        assert [p for p in (data_dir / "images").rglob("*") if p.is_file()] == []
        monkeypatch.setattr(files.os, "fdopen", real_fdopen)
        again = client.post("/api/images", files={"file": ("c.png", png, "image/png")})
        assert again.status_code == 201


def test_database_full_is_507(data_dir: Path) -> None:
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from app.main import create_app

    app = create_app(Settings(data_dir=data_dir))
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]

    @app.get("/api/_full")
    def db_full() -> None:
        raise OperationalError("INSERT ...", {}, full)

    @app.get("/api/_locked")
    def db_locked() -> None:
        raise OperationalError("INSERT ...", {}, locked)

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/api/_full").status_code == 507
        assert client.get("/api/_locked").status_code == 500  # not a full disk: a bug


def test_leftover_temp_files_are_removed_at_start_but_fresh_ones_kept(data_dir: Path) -> None:
    folder = data_dir / "images" / "ab"
    folder.mkdir(parents=True)
    stale, fresh = folder / ".tmp-crashed", folder / ".tmp-writing-now"
    kept = folder / "ab12.png"
    for path in (stale, fresh, kept):
        path.write_bytes(b"x" * 10)
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    os.utime(kept, (hour_ago, hour_ago))
    with _client(data_dir):
        pass
    assert not stale.exists()
    assert fresh.exists() and kept.exists()


# -- bodies: the token first, sizes as they stream, nesting ----------------------------------


class _Asgi:
    """Call an ASGI app directly, feeding the body chunk by chunk and counting the reads."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def __call__(
        self, method: str, path: str, headers: dict[str, str], chunks: Iterator[bytes]
    ) -> tuple[int, dict[str, Any], int]:
        reads = 0
        messages: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal reads
            reads += 1
            chunk = next(chunks, None)
            if chunk is None:
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": chunk, "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "client": ("127.0.0.1", 5000),
            "server": ("testserver", 80),
            "headers": [
                (k.lower().encode(), v.encode())
                for k, v in {"host": "testserver", **headers}.items()
            ],
        }
        # In a thread of its own: a session that ran Playwright's sync API (the browser
        # tests) keeps an event loop running on the main thread, where asyncio.run refuses.
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, self.app(scope, receive, send)).result()
        start = next(m for m in messages if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        return start["status"], json.loads(body), reads


def _endless(size: int) -> Iterator[bytes]:
    while True:
        yield b"[" * size


def test_without_the_token_no_body_byte_is_read(data_dir: Path) -> None:
    from app.main import create_app

    call = _Asgi(create_app(Settings(data_dir=data_dir, api_token="s3cret")))
    for headers in (
        {"content-type": "application/json", "content-length": str(2**30)},
        {"content-type": "application/json", "transfer-encoding": "chunked"},
        {
            "content-type": "multipart/form-data; boundary=x",
            "transfer-encoding": "chunked",
            "authorization": "Bearer wrong",
        },
    ):
        status, body, reads = call("POST", "/api/distances", headers, _endless(1 << 20))
        assert (status, reads) == (401, 0), headers
        assert "FEATUREGAP_API_TOKEN" in body["detail"]


def test_chunked_bodies_are_counted_and_cut_off(data_dir: Path) -> None:
    from app.http import ENVELOPE_BYTES
    from app.main import create_app

    call = _Asgi(
        create_app(Settings(data_dir=data_dir, max_upload_bytes=1000, max_json_bytes=3000))
    )
    chunked = {"transfer-encoding": "chunked"}
    status, body, reads = call(
        "POST", "/api/distances", {**chunked, "content-type": "application/json"}, _endless(1000)
    )
    assert status == 413 and reads == 4  # 3000 bytes fit, the 4th chunk passes the limit
    assert "FEATUREGAP_MAX_JSON_BYTES" in body["detail"]
    chunk = 64 * 1024
    head = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n"
    ).ljust(chunk, b"\0")
    upload = itertools.chain([head], itertools.repeat(b"\0" * chunk))
    status, body, reads = call(
        "POST",
        "/api/images",
        {**chunked, "content-type": "multipart/form-data; boundary=b"},
        upload,
    )
    assert status == 413 and "FEATUREGAP_MAX_UPLOAD_BYTES" in body["detail"]
    assert reads == (1000 + ENVELOPE_BYTES) // chunk + 1
    # A declared length over the limit is refused before reading anything.
    status, _body, reads = call(
        "POST",
        "/api/distances",
        {"content-type": "application/json", "content-length": "3001"},
        _endless(1),
    )
    assert (status, reads) == (413, 0)


def test_chunked_upload_over_the_limit_through_a_client(data_dir: Path) -> None:
    boundary = "xyzzy"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()

    def body() -> Iterator[bytes]:  # a generator: httpx sends it chunked, with no length
        yield head
        for _ in range(40):
            yield b"\0" * (64 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    with _client(data_dir, max_upload_bytes=1000) as client:
        response = client.post(
            "/api/images",
            content=body(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status_code == 413
        assert client.get("/api/images").json()["items"] == []
        small = client.post(
            "/api/images", content=iter([b'{"x": 1}']), headers={"content-type": "application/json"}
        )
        assert small.status_code == 422  # under the limit: reaches the route


def _depth(value: Any) -> int:
    """Reference: the nesting depth of a parsed JSON value, recursively."""
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _random_json(rng: random.Random, depth: int) -> Any:
    tricky = ["[", "]]]", '{"', "\\", '"[', "ok", '\\"[[', "}"]
    if depth == 0 or rng.random() < 0.25:
        return rng.choice([rng.choice(tricky) * rng.randint(1, 3), 1.5, None, True])
    if rng.random() < 0.5:
        return [_random_json(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {
        rng.choice(tricky) + str(i): _random_json(rng, depth - 1) for i in range(rng.randint(0, 3))
    }


def test_json_depth_matches_a_recursive_reference_with_brackets_in_strings() -> None:
    from app.http.body import json_depth

    rng = random.Random(7)
    for _ in range(300):
        value = _random_json(rng, rng.randint(0, 9))
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        assert json_depth(text) == _depth(value), text
    assert json_depth(b'"[[[["') == 0 and json_depth(b"3") == 0
    assert json_depth(b"[" * 100_000 + b"]" * 100_000) == 100_000


def test_deep_json_is_a_422_not_a_crash(data_dir: Path) -> None:
    with _client(data_dir) as client:
        for body, content_type in (
            (b"[" * 100_000 + b"]" * 100_000, "application/json"),
            (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, None),
            (b"[" * 500_000, "application/problem+json"),
        ):
            headers = {"content-type": content_type} if content_type else {}
            response = client.post("/api/distances", content=body, headers=headers)
            assert response.status_code == 422, content_type
            assert "FEATUREGAP_MAX_JSON_DEPTH" in response.json()["detail"]
        # 64 levels pass the edge; the route's own validation answers.
        shallow = {
            "labels": ["a", "b"],
            "layer": "conv_head",
            "options": json.loads("[" * 60 + "]" * 60),
        }
        response = client.post("/api/distances", json=shallow)
        assert response.status_code == 422
        assert "FEATUREGAP_MAX_JSON_DEPTH" not in response.text


# -- who may write, which host names answer, the token setting -------------------------------


def test_cross_site_writes_are_refused_without_a_token(data_dir: Path, photo: Any) -> None:
    png = photo.png("chelsea")
    with _client(data_dir, allowed_origins=["http://localhost:5173"]) as client:
        evil = [
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Referer": "http://evil.example/page.html"},
            {"Origin": "http://testserver.evil.example"},
            {"Origin": "http://testserver:8000"},  # another port is another site
            {"Origin": "javascript:alert(1)"},
        ]
        for headers in evil:
            response = client.post(
                "/api/images", files={"file": ("c.png", png, "image/png")}, headers=headers
            )
            assert response.status_code == 403, headers
            assert "FEATUREGAP_ALLOWED_ORIGINS" in response.json()["detail"]
            assert client.delete("/api/images/1", headers=headers).status_code == 403
        assert client.get("/api/images").json()["items"] == []
        allowed = [
            {},
            {"Origin": "http://testserver"},
            {"Origin": "https://TestServer"},
            {"Referer": "http://testserver/#gallery"},
            {"Origin": "http://localhost:5173"},
        ]
        for index, headers in enumerate(allowed):
            response = client.post(
                "/api/images", headers=headers, files={"file": (f"c{index}.png", png, "image/png")}
            )
            assert response.status_code in (200, 201), headers
        # Reading is not refused: the browser's same-origin policy keeps the answer away.
        assert (
            client.get("/api/images", headers={"Origin": "http://evil.example"}).status_code == 200
        )


def test_with_a_token_the_token_decides_not_the_origin(data_dir: Path) -> None:
    with _client(data_dir, api_token="s3cret") as client:
        response = client.post(
            "/api/images/1/boxes",
            json={},
            headers={"Origin": "http://evil.example", "Authorization": "Bearer s3cret"},
        )
        assert response.status_code == 404  # reached the route: no image 1


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("evil.example", 400),
        ("evil.example:8000", 400),
        ("localhost.evil.example", 400),
        ("127.0.0.2", 400),
        ("localhost", 200),
        ("localhost:8000", 200),
        ("LOCALHOST.", 200),
        ("127.0.0.1:80", 200),
        ("[::1]:8000", 200),
        ("testserver", 200),
    ],
)
def test_only_allowed_host_names_answer(data_dir: Path, host: str, status: int) -> None:
    with _client(data_dir) as client:
        for path in ("/", "/api/health", "/static/main.js"):
            response = client.get(path, headers={"Host": host})
            assert response.status_code == status, (host, path)
        if status == 400:
            assert "FEATUREGAP_ALLOWED_HOSTS" in response.json()["detail"]


def test_allowed_hosts_from_the_environment_and_serve_host(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.config import get_settings
    from app.main import create_app

    monkeypatch.setenv("FEATUREGAP_ALLOWED_HOSTS", "featuregap.lab, 10.0.0.5")
    monkeypatch.setenv("FEATUREGAP_SERVE_HOST", "192.168.1.20")
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.hosts == ["featuregap.lab", "10.0.0.5", "192.168.1.20"]
    with TestClient(create_app(settings)) as client:
        for host, status in (
            ("featuregap.lab:8000", 200),
            ("192.168.1.20", 200),
            ("10.0.0.5", 200),
            ("localhost", 400),
        ):
            assert client.get("/api/health", headers={"Host": host}).status_code == status
    monkeypatch.setenv("FEATUREGAP_ALLOWED_HOSTS", '["*"]')
    monkeypatch.setenv("FEATUREGAP_SERVE_HOST", "0.0.0.0")
    get_settings.cache_clear()
    assert get_settings().hosts == ["*"]
    with TestClient(create_app(get_settings())) as client:
        assert client.get("/api/health", headers={"Host": "any.example"}).status_code == 200


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_token_refuses_to_start(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from pydantic import ValidationError

    from app.config import get_settings

    monkeypatch.setenv("FEATUREGAP_API_TOKEN", value)
    get_settings.cache_clear()
    with pytest.raises(ValidationError, match="FEATUREGAP_API_TOKEN is set but empty"):
        get_settings()
    get_settings.cache_clear()


def test_serve_with_an_empty_token_says_why_and_does_not_start(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    from app.cli import main
    from app.config import get_settings

    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(a))
    monkeypatch.setenv("FEATUREGAP_API_TOKEN", "")
    monkeypatch.setenv("FEATUREGAP_SERVE_HOST", "")  # main() sets it; undone afterwards
    assert main(["serve", "--host", "127.0.0.1"]) == 2
    assert started == []
    assert "FEATUREGAP_API_TOKEN is set but empty" in capsys.readouterr().err
    get_settings.cache_clear()


# -- headers, docs, paths --------------------------------------------------------------------


def test_security_headers_on_every_kind_of_response(data_dir: Path) -> None:
    with _client(data_dir, api_token="s3cret", max_json_bytes=100) as client:
        auth = {"Authorization": "Bearer s3cret"}
        responses = [
            client.get("/"),
            client.get("/static/main.js"),
            client.get("/api/health"),
            client.get("/api/health", headers=auth),  # 200
            client.get("/api/images/99", headers=auth),  # 404
            client.post("/api/distances", json={}, headers=auth),  # 422
            client.post("/api/distances", content=b"[" * 200, headers=auth),  # 413
            client.get("/nope"),
            client.get("/", headers={"Host": "evil.example"}),  # 400
        ]
    assert {r.status_code for r in responses} == {200, 400, 401, 404, 413, 422}
    for response in responses:
        policy = response.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'"  # no inline script, no eval
        assert directives["frame-ancestors"] == "'none'"
        assert directives["object-src"] == "'none'"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "same-origin"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_use_only_local_files_that_are_served(client: TestClient, page: str) -> None:
    import base64
    import hashlib

    response = client.get(page)
    assert response.status_code == 200
    text = response.text
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", text)
    urls += re.findall(r"""url:\s*'([^']+)'""", text) + re.findall(r'spec-url="([^"]+)"', text)
    assert urls and "http" not in text.replace("http-equiv", "")
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 100, url
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts and all(
        client.get(u).headers["content-type"].startswith("text/javascript") for u in scripts
    )
    # The page's own policy admits exactly its inline scripts, by hash.
    policy = response.headers["content-security-policy"]
    script_src = next(d for d in policy.split(";") if d.strip().startswith("script-src"))
    inline = re.findall(r"<script>(.*?)</script>", text, re.DOTALL)
    expected = {
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in inline
    }
    assert set(script_src.split()[2:]) == expected
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
    assert client.get("/docs-assets/nope.js").status_code == 404
    assert client.get("/docs-assets/..%2F__init__.py").status_code == 404


def test_path_abuse_is_404_or_4xx_never_500(data_dir: Path) -> None:
    from app.main import create_app

    with TestClient(
        create_app(Settings(data_dir=data_dir)), raise_server_exceptions=False
    ) as client:
        paths = [
            "/static/" + "a/" * 3000 + "x.js",
            "/static/" + "a" * 5000 + ".js",
            "/static/%00.js",
            "/static/x%00.css",
            "/static/..%2F..%2Fapp%2Fconfig.py",
            "/static/../../etc/passwd",
            "/static/" + "../" * 50 + "etc/hosts.css",
            "/static/style.css%2F..%2F..%2Fpyproject.toml",
            "/" + "a/" * 3000,
            "/api/images/" + "9" * 400,
            "/api/images/-1",
            "/api/images/%00",
            "/api/models/" + "m" * 5000 + "/layers",
            "/docs-assets/" + "x" * 5000,
            "/api/boxes/" + "1/" * 3000,
        ]
        for path in paths:
            response = client.get(path)
            assert 400 <= response.status_code < 500, (path[:60], response.status_code)
            assert response.headers["content-type"].startswith("application/json"), path[:60]
        assert client.get("/static/style.css").status_code == 200


# -- labels that try to be HTML in the figures ------------------------------------------------

_HOSTILE = [
    '<a href="https://evil.example/">click me</a>',
    '<span style="font-size:200px">big</span>',
    "%{x} & <b>bold</b>",
    "plain",
]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def _assert_inert(figure: dict[str, Any]) -> list[str]:
    """No string in the figure holds a tag other than the figures' own <br> and <extra>."""
    texts = list(_strings(figure))
    for text in texts:
        tags = re.findall(r"<\s*/?\s*([a-zA-Z]+)", text)
        assert set(tags) <= {"br", "extra"}, text
    return texts


def test_labels_are_escaped_wherever_plotly_renders_text() -> None:
    import numpy as np

    from app import plots

    heat = plots.heatmap_figure(
        np.random.default_rng(0).random((31, 47)),
        [
            {
                "id": i + 1,
                "x": 2,
                "y": 3,
                "w": 10,
                "h": 9,
                "label": label,
                "scores": {"energy": 0.5},
            }
            for i, label in enumerate(_HOSTILE)
        ],
        title=_HOSTILE[0],
    )
    texts = _assert_inert(heat)
    escaped = [html.escape(label, quote=False) for label in _HOSTILE]
    assert heat["layout"]["title"]["text"] == escaped[0]
    names = [t["name"] for t in heat["data"][1:]]
    assert [html.unescape(n) for n in names] == [
        f"#{i + 1} {label}" for i, label in enumerate(_HOSTILE)
    ]
    assert [a["text"].split(" · ")[0] for a in heat["layout"]["annotations"]] == names
    assert all(t["hovertext"].startswith(n) for t, n in zip(heat["data"][1:], names, strict=True))
    assert any("&lt;a href" in t for t in texts)

    matrix = plots.distance_matrix_figure(_HOSTILE, np.eye(4), measure="mmd<i>x</i>")
    _assert_inert(matrix)
    assert matrix["data"][0]["x"] == escaped and matrix["data"][0]["y"] == escaped

    separation = plots.separation_figure(
        _HOSTILE, [1.0] * 4, [2.0] * 4, [2.0] * 4, measure=_HOSTILE[1]
    )
    _assert_inert(separation)
    assert separation["data"][0]["x"] == escaped

    points = [
        {"x": float(i), "y": 1.0, "label": label, "box_id": i, "image_id": 1}
        for i, label in enumerate(_HOSTILE)
    ]
    scatter = plots.embedding_figure(points, title=_HOSTILE[0])
    _assert_inert(scatter)
    assert sorted(t["name"] for t in scatter["data"]) == sorted(escaped)
    for trace in scatter["data"]:
        # The label is never template: "%{x}" in a label is not filled in. The hover box
        # shows it as the trace's (escaped) name, beside the template's text.
        assert "text" not in trace
        assert trace["hovertemplate"] == "box %{customdata[0]} · image %{customdata[1]}"
