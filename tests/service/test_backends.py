"""Choosing the extraction backend, and Ray staying optional."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.config import Settings
from app.service import ray_extraction
from app.service.backends import ExtractionBackend, backend
from app.service.ray_extraction import RayOptions


def test_the_ray_address_setting_or_argument_picks_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    assert backend(Settings()) == ExtractionBackend(ray=None)
    monkeypatch.setenv("FEATUREGAP_RAY_ADDRESS", "  ")
    assert Settings().ray_address is None  # blank means off, not "connect somewhere"
    monkeypatch.setenv("FEATUREGAP_RAY_ADDRESS", "ray://head:10001")
    monkeypatch.setenv("FEATUREGAP_RAY_ACTORS", "5")
    monkeypatch.setenv("FEATUREGAP_RAY_GPUS_PER_ACTOR", "0.5")
    chosen = backend(Settings())
    assert chosen == ExtractionBackend(RayOptions("ray://head:10001", 5, 1.0, 0.5))
    assert backend(Settings(), "auto") == ExtractionBackend(RayOptions("auto", 5, 1.0, 0.5))
    assert backend(Settings(_env_file=None, ray_actors=2), "auto").ray.actors == 2
    with pytest.raises(ValueError, match="actors must be at least 1"):
        RayOptions(actors=0)


def test_without_ray_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    with pytest.raises(ray_extraction.RayNotInstalled, match=r"pip install -e '\.\[ray\]'"):
        ray_extraction.import_ray()


def test_the_app_and_the_cli_start_without_importing_ray() -> None:
    code = "import sys, app.main, app.cli, app.service.backends; print('ray' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"
