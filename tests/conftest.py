"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from app.engine.models import LoadedModel
    from app.images import DecodedImage

os.environ.setdefault("FEATUREGAP_TORCH_THREADS", "2")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh data directory, with the settings cache cleared around the test."""
    from app.config import get_settings

    monkeypatch.setenv("FEATUREGAP_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def photo() -> PhotoLoader:
    """Real photos shipped inside scikit-image's wheel, as ``H×W×3`` uint8 arrays."""
    return PhotoLoader()


class PhotoLoader:
    """``photo("chelsea")`` → the array; ``photo.png("chelsea")`` → PNG bytes."""

    def __call__(self, name: str) -> np.ndarray:
        from skimage import data

        image = np.asarray(getattr(data, name)())
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        return image[..., :3].astype(np.uint8)

    def decoded(self, image: str | np.ndarray) -> DecodedImage:
        """A photo (by name) or an ``H×W×3`` array as the engine sees an upload of its PNG."""
        from app.images import decode_image

        png = self.png(image) if isinstance(image, str) else _png(image)
        return decode_image(png, max_pixels=10**8)

    def png(self, name: str) -> bytes:
        return _png(self(name))


def _png(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the real model through ``embedded_model`` are ``slow``."""
    for item in items:
        if "embedded_model" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


class _RealModelsRefused(dict[tuple[str, str], "LoadedModel"]):
    """The loaded-model table as a test without the ``slow`` marker sees it: asking for a
    built-in (real) model fails the test, naming the marker to add."""

    def __contains__(self, key: object) -> bool:
        from app.engine.models import BUILTIN_MODELS

        if isinstance(key, tuple) and key and key[0] in BUILTIN_MODELS:
            raise AssertionError(
                f"this test loads the real model {key[0]!r}: mark it @pytest.mark.slow"
            )
        return super().__contains__(key)


@pytest.fixture(autouse=True)
def _real_model_needs_slow(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test that loads the real model carries ``slow`` (so ``-m "not slow"`` is fast)."""
    if request.node.get_closest_marker("slow") is not None:
        return
    from app.engine import models

    monkeypatch.setattr(models, "_LOADED", _RealModelsRefused(models._LOADED))


@pytest.fixture(scope="session")
def embedded_model() -> LoadedModel:
    """The embedded default model, loaded once per test session."""
    from app.engine.models import get_model

    return get_model("efficientnet_lite0")
