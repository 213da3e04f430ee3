"""The app as a whole: health, token, CORS, OpenAPI examples, error mapping, models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient


def _app(monkeypatch: pytest.MonkeyPatch, **env: str) -> TestClient:
    from app.config import get_settings
    from app.main import create_app

    for key, value in env.items():
        monkeypatch.setenv(f"FEATUREGAP_{key}", value)
    get_settings.cache_clear()
    return TestClient(create_app(get_settings()))


def test_health(client: TestClient) -> None:
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["schema_version"] == 1 and body["images"] == 0


def test_objects_alive_at_startup_are_frozen_while_the_app_runs(data_dir: Path) -> None:
    import gc

    from app.config import get_settings
    from app.main import create_app

    with TestClient(create_app(get_settings())) as client:
        assert client.get("/api/health").is_success
        assert gc.get_freeze_count() > 10_000  # torch's and the app's objects, not walked
    assert gc.get_freeze_count() == 0  # closed: collectable again


def test_health_counts_images_from_a_thread_when_the_store_cannot_at_once(
    client: TestClient, photo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.app.state.store  # type: ignore[attr-defined]
    assert client.post("/api/images", files={"file": ("c.png", photo.png("coffee"))}).is_success
    assert client.get("/api/health").json()["images"] == 1 == store.count_images_at_once()
    monkeypatch.setattr(store, "count_images_at_once", lambda: None)  # busy, or not SQLite
    assert client.get("/api/health").json()["images"] == 1


def test_token_guards_every_api_route_but_not_docs(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _app(monkeypatch, API_TOKEN="s3cret") as client:
        import re

        paths = client.get("/openapi.json").json()["paths"]
        assert "/api/images" in paths
        checked = 0
        for path, operations in paths.items():
            for method in operations:
                if path.startswith("/api"):
                    url = re.sub(r"\{[^}]+\}", "1", path)
                    response = client.request(method.upper(), url)
                    assert response.status_code == 401, (method, path)
                    assert "FEATUREGAP_API_TOKEN" in response.json()["detail"]
                    checked += 1
        assert checked >= 20
        wrong = client.get("/api/images", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = client.get("/api/images", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert client.get("/docs").status_code == 200
        assert client.get("/").status_code == 200  # the dashboard asks for the token itself
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/api/jobs/x").status_code == 401  # checked before the lookup


def test_cors_off_by_default_and_on_for_listed_origins(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = {"Origin": "http://example.org", "Access-Control-Request-Method": "GET"}
    with _app(monkeypatch) as client:
        response = client.get("/api/health", headers={"Origin": "http://example.org"})
        assert "access-control-allow-origin" not in response.headers
    with _app(monkeypatch, CORS_ORIGINS='["http://example.org"]') as client:
        preflight = client.options("/api/health", headers=headers)
        assert preflight.headers["access-control-allow-origin"] == "http://example.org"
        other = client.get("/api/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_openapi_has_examples_response_models_and_docstrings(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("description") or operation.get("summary"), (method, path)
            # A success answer is documented (202 for routes that only queue a job).
            assert {"200", "201", "202", "204"} & set(operation["responses"]), (method, path)
            body = operation.get("requestBody", {}).get("content", {})
            for media in body.values():
                ref = media["schema"].get("$ref", "")
                if ref and "application/json" in body:
                    name = ref.rsplit("/", 1)[-1]
                    assert schemas[name].get("examples"), (method, path, name)


def test_engine_errors_become_4xx_json(client: TestClient) -> None:
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/api/_value")
    def value() -> None:
        raise ValueError("use a positive number")

    @router.get("/api/_key")
    def key() -> None:
        raise KeyError("unknown layer 'x'; use one of ['a']")

    client.app.include_router(router)  # type: ignore[attr-defined]
    assert client.get("/api/_value").json() == {"detail": "use a positive number"}
    assert client.get("/api/_value").status_code == 422
    response = client.get("/api/_key")
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown layer 'x'; use one of ['a']"}


def test_models_and_layers(client: TestClient) -> None:
    models = client.get("/api/models").json()
    names = [m["name"] for m in models]
    assert "efficientnet_lite0" in names
    lite = models[names.index("efficientnet_lite0")]
    assert lite["input_size"] == 224 and lite["num_classes"] == 1000
    unknown = client.get("/api/models/nope/layers")
    assert unknown.status_code == 404 and "efficientnet_lite0" in unknown.json()["detail"]


@pytest.mark.slow
def test_layers_of_the_embedded_model(client: TestClient) -> None:
    layers = client.get("/api/models/efficientnet_lite0/layers").json()
    assert len(layers) > 5
    assert set(layers[-1]) == {"name", "channels", "height", "width"}
    shapes = {(x["channels"], x["height"], x["width"]) for x in layers}
    assert (1280, 7, 7) in shapes and (32, 112, 112) in shapes  # EfficientNet-Lite0 at 224


def test_the_servers_default_model_serves_requests_that_name_none(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, photo: Any
) -> None:
    with _app(monkeypatch, DEFAULT_MODEL="house_model") as client:
        assert 'data-default="house_model"' in client.get("/").text  # the page starts on it
        image = client.post(
            "/api/images", files={"file": ("a.png", photo.png("coffee"), "image/png")}
        ).json()
        for label in ("a", "b"):
            client.post(
                f"/api/images/{image['id']}/boxes",
                json={"x": 10, "y": 10, "w": 50, "h": 50, "label": label},
            )
        for path, body in [
            ("/api/heatmaps", {"image_id": image["id"], "layer": "bn2"}),
            ("/api/heatmaps/png", {"image_id": image["id"], "layer": "bn2"}),
            ("/api/predictions", {"image_id": image["id"]}),
            ("/api/distances", {"labels": ["a", "b"], "layer": "bn2"}),
            ("/api/separation", {"layers": ["bn2"]}),
            ("/api/embeddings", {"layer": "bn2"}),
        ]:
            answer = client.post(path, json=body)
            assert answer.status_code == 404, (path, answer.text)
            assert "unknown model 'house_model'" in answer.json()["detail"], path
        csv = client.get(f"/api/images/{image['id']}/scores.csv", params={"layer": "bn2"})
        assert csv.status_code == 404 and "'house_model'" in csv.json()["detail"]
