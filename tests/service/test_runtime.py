"""Torch's thread count follows the settings at app start and in the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from app.config import Settings
from app.service.runtime import apply_torch_threads


@pytest.fixture
def threads() -> Iterator[int]:
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_settings_set_the_thread_count_and_none_leaves_it(threads: int, tmp_path: Path) -> None:
    other = 1 if threads != 1 else 2
    apply_torch_threads(Settings(data_dir=tmp_path, torch_threads=other))
    assert torch.get_num_threads() == other
    apply_torch_threads(Settings(data_dir=tmp_path, torch_threads=None))
    assert torch.get_num_threads() == other


def test_the_app_applies_them_when_created(threads: int, tmp_path: Path) -> None:
    from app.main import create_app

    other = 1 if threads != 1 else 2
    create_app(Settings(data_dir=tmp_path / "data", torch_threads=other))
    assert torch.get_num_threads() == other


def test_the_cli_applies_them_before_loading_a_model(
    threads: int,
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from app.cli import main

    other = 1 if threads != 1 else 2
    monkeypatch.setenv("FEATUREGAP_TORCH_THREADS", str(other))
    assert main(["layers", "--model", "nope"]) == 2  # fails after the settings are applied
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert torch.get_num_threads() == other
