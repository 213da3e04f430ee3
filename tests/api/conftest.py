"""Fixtures for API tests: a fresh app on an isolated data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def client(data_dir: Path) -> Iterator[TestClient]:
    """A TestClient of a new app whose store lives in the test's own data directory."""
    from app.config import get_settings
    from app.main import create_app

    with TestClient(create_app(get_settings())) as test_client:
        yield test_client


@pytest.fixture
def upload(client: TestClient, photo: object) -> object:
    """``upload("chelsea")`` → the JSON of the uploaded real photo (PNG)."""

    def _upload(name: str, label: str | None = None) -> dict[str, object]:
        data = {"label": label} if label else None
        response = client.post(
            "/api/images",
            files={
                "file": (
                    f"{name}.png",
                    photo.png(name),  # type: ignore[attr-defined]
                    "image/png",
                )
            },
            data=data,
        )
        assert response.status_code == 201, response.text
        body: dict[str, object] = response.json()
        return body

    return _upload
