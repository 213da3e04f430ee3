"""Process-wide torch settings, applied where the process starts: the app and the CLI."""

from __future__ import annotations

import torch

from app.config import Settings

__all__ = ["apply_torch_threads"]


def apply_torch_threads(settings: Settings) -> None:
    """Use ``FEATUREGAP_TORCH_THREADS`` intra-op threads; unset leaves torch's default.

    Torch's default is one thread per core, which oversubscribes a machine whose workers
    already run analyses side by side.
    """
    if settings.torch_threads is not None and torch.get_num_threads() != settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
