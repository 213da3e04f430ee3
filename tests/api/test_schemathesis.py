"""schemathesis against /openapi.json, in process: no 5xx, every response fits its schema."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

pytestmark = pytest.mark.slow


_DATA = Path(tempfile.mkdtemp(prefix="featuregap-schemathesis-"))


def _app() -> Any:
    from app.config import Settings
    from app.main import create_app

    # The schema is built at import, before fixtures exist: the app gets its own data dir.
    return create_app(Settings(data_dir=_DATA / "data"))


APP = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def seeded(photo: Any) -> Iterator[None]:
    """One photo with one box, so ids 1 exist; the data dir is removed afterwards."""
    from fastapi.testclient import TestClient

    with TestClient(APP) as client:
        image = client.post(
            "/api/images", files={"file": ("chelsea.png", photo.png("chelsea"), "image/png")}
        ).json()
        client.post(
            f"/api/images/{image['id']}/boxes",
            json={"x": 140, "y": 20, "w": 180, "h": 210, "label": "cat"},
        )
        yield
    shutil.rmtree(_DATA, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_never_fails_and_matches_its_schema(case: Any) -> None:
    case.call_and_validate(
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance]
    )
