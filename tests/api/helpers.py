"""What several API test modules share: an app of their own for the whole module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient


@contextmanager
def module_app(
    tmp_path_factory: pytest.TempPathFactory, name: str, **settings: str
) -> Iterator[TestClient]:
    """A client of a new app on a data directory of its own (the model loads once a module).

    Args:
        tmp_path_factory: pytest's, for the data directory.
        name: the directory's stem.
        settings: ``KEY=value`` set as ``FEATUREGAP_KEY`` while the app lives.
    """
    from app.config import get_settings
    from app.main import create_app

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEATUREGAP_DATA_DIR", str(tmp_path_factory.mktemp(name) / "data"))
        for key, value in settings.items():
            patch.setenv(f"FEATUREGAP_{key}", value)
        get_settings.cache_clear()
        try:
            with TestClient(create_app(get_settings())) as client:
                yield client
        finally:
            get_settings.cache_clear()
