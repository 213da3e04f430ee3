"""Feature extraction: several layers in one batched forward pass, with a byte-budget cache."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from app.engine.graph import Extractor, traced
from app.engine.layers import check_layer
from app.engine.models import LoadedModel
from app.engine.preprocess import DEFAULT_NATIVE_MAX_SIDE, InputMode, to_input
from app.images import DecodedImage
from app.lru import LRU

__all__ = [
    "CacheStats",
    "FeatureCache",
    "default_cache",
    "extract",
    "forward_maps",
    "prepare_input",
    "LOGITS",
]

LOGITS = "logits"
CacheKey = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class CacheStats:
    """Counters of a :class:`FeatureCache`."""

    hits: int
    misses: int
    bytes: int
    entries: int


def _nbytes(value: torch.Tensor) -> int:
    return value.element_size() * value.nelement()


class FeatureCache:
    """A thread-safe LRU of tensors with a byte budget.

    Keys are ``(model, weights hash, layer, image hash, input mode)``. A tensor larger than
    the whole budget is not stored.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be ≥ 0, got {max_bytes}")
        self._items: LRU[CacheKey, torch.Tensor] = LRU(max_bytes, _nbytes)

    @property
    def max_bytes(self) -> int:
        """The byte budget; lowering it evicts the least recently used entries."""
        return self._items.max_size

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"max_bytes must be ≥ 0, got {value}")
        self._items.max_size = value

    def get(self, key: CacheKey) -> torch.Tensor | None:
        """The cached tensor for ``key`` (marked most recent), or ``None``."""
        return self._items.get(key)

    def put(self, key: CacheKey, value: torch.Tensor) -> None:
        """Store ``value``, evicting the least recently used entries to fit the budget."""
        self._items.put(key, value)

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        self._items.clear()

    @property
    def stats(self) -> CacheStats:
        """Hits, misses, bytes held and number of entries."""
        raw = self._items.stats
        return CacheStats(raw.hits, raw.misses, raw.size, raw.entries)


_DEFAULT: FeatureCache | None = None
_DEFAULT_LOCK = threading.Lock()


def default_cache(max_bytes: int) -> FeatureCache:
    """The process-wide cache, with a budget of ``max_bytes``.

    The caller passes its setting (``Settings.feature_cache_bytes``) on every call; a
    changed value resizes the one cache rather than making another.

    Raises:
        ValueError: a negative ``max_bytes``.
    """
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = FeatureCache(max_bytes)
        elif _DEFAULT.max_bytes != max_bytes:
            _DEFAULT.max_bytes = max_bytes
        return _DEFAULT


def _extractor(model: LoadedModel, nodes: tuple[str, ...]) -> Extractor:
    """The model's traced extractor for ``nodes`` (kept by :func:`app.engine.graph.traced`),
    batch norms folded: these passes only read feature maps (and logits)."""
    return traced(model.module).extractor(nodes, folded=True)


def _prepare(
    model: LoadedModel, images: Sequence[DecodedImage], mode: InputMode, max_side: int
) -> list[torch.Tensor]:
    """Preprocess images in threads: PIL's resampling releases the GIL."""

    def one(image: DecodedImage) -> torch.Tensor:
        return to_input(image.pixels, model.spec, mode, max_side, model.max_stride)

    workers = min(len(images), os.cpu_count() or 1, 8)
    if workers <= 1:
        return [one(image) for image in images]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, images))


def _fast_layout(batch: torch.Tensor) -> torch.Tensor:
    """``batch`` in ``channels_last`` layout: on CPU the convolutions of the models here run
    faster on it (EfficientNet-Lite0, 224², batch 16: about 1.6× on one core), and the
    model's own parameters need not change. Outputs are made contiguous again after."""
    if batch.dim() != 4:
        return batch
    return batch.contiguous(memory_format=torch.channels_last)


def prepare_input(
    model: LoadedModel,
    image: DecodedImage,
    mode: InputMode = "resize",
    native_max_side: int = DEFAULT_NATIVE_MAX_SIDE,
) -> torch.Tensor:
    """The ``3×h×w`` model input of one image, as :func:`extract` makes it (thread-safe:
    callers prepare the next batch in threads while a forward runs)."""
    return to_input(image.pixels, model.spec, mode, native_max_side, model.max_stride)


def forward_maps(
    model: LoadedModel, batch: torch.Tensor, layers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Feature maps of ``layers`` for a batch of prepared inputs, in one forward pass.

    Args:
        model: the loaded model.
        batch: ``N×3×h×w`` inputs from :func:`prepare_input` (one size).
        layers: feature-map layer names.

    Returns:
        ``{layer: N×C×h×w float32 tensor}``.

    Raises:
        KeyError: an unknown layer (the message lists valid ones).
    """
    wanted = tuple(dict.fromkeys(layers))
    for layer in wanted:
        check_layer(model, layer)
    run = _extractor(model, wanted)
    with torch.inference_mode():
        out = run(_fast_layout(batch))
    return {layer: out[layer].float().contiguous() for layer in wanted}


def extract(
    model: LoadedModel,
    images: Sequence[DecodedImage],
    layers: Sequence[str],
    mode: InputMode = "resize",
    cache: FeatureCache | None = None,
    batch_size: int = 16,
    with_logits: bool = False,
    progress: Callable[[int, int], None] | None = None,
    native_max_side: int = DEFAULT_NATIVE_MAX_SIDE,
) -> list[dict[str, torch.Tensor]]:
    """Feature maps of ``layers`` for each image, in one forward pass per batch.

    Only entries missing from ``cache`` are computed; images of the same input size share
    a batch (in ``native`` mode sizes differ between images).

    Args:
        model: the loaded model.
        images: decoded images.
        layers: feature-map layer names (see :func:`app.engine.layers.list_layers`).
        mode: ``resize`` or ``native`` (see :mod:`app.engine.preprocess`).
        cache: where to look up and store results; ``None`` computes everything.
        batch_size: images per forward pass.
        with_logits: also return ``"logits"`` (a ``num_classes`` vector) per image.
        progress: called with ``(images done, total)`` as batches finish.
        native_max_side: the longest input side in ``native`` mode (the caller's
            ``Settings.native_max_side``).

    Returns:
        Per image, ``{layer: C×h×w float32 tensor}`` (plus ``"logits"``).

    Raises:
        KeyError: an unknown layer (the message lists valid ones).
        ValueError: a bad mode or batch size.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if mode not in ("resize", "native"):
        raise ValueError(f"unknown input mode {mode!r}; use 'resize' or 'native'")
    wanted = list(dict.fromkeys(layers))
    for layer in wanted:
        check_layer(model, layer)
    head = traced(model.module).output if with_logits else ""
    names = wanted + ([LOGITS] if with_logits else [])
    max_side = native_max_side
    mode_key = mode if mode == "resize" else f"native@{max_side}"

    def key(name: str, image: DecodedImage) -> CacheKey:
        return (model.spec.name, model.weights_sha256, name, image.sha256, mode_key)

    results: list[dict[str, torch.Tensor]] = [{} for _ in images]
    todo: dict[tuple[str, ...], list[int]] = {}
    for i, image in enumerate(images):
        missing: list[str] = []
        for name in names:
            hit = cache.get(key(name, image)) if cache is not None else None
            if hit is None:
                missing.append(name)
            else:
                results[i][name] = hit
        if missing:
            todo.setdefault(tuple(missing), []).append(i)

    total, done = len(images), len(images) - sum(len(v) for v in todo.values())
    if progress is not None and done:
        progress(done, total)
    for names_missing, indices in todo.items():
        nodes = tuple(head if n == LOGITS else n for n in names_missing)
        run = _extractor(model, tuple(dict.fromkeys(nodes)))
        inputs = dict(
            zip(indices, _prepare(model, [images[i] for i in indices], mode, max_side), strict=True)
        )
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i in indices:
            by_shape.setdefault(tuple(inputs[i].shape), []).append(i)
        for group in by_shape.values():
            for start in range(0, len(group), batch_size):
                chunk = group[start : start + batch_size]
                batch = torch.stack([inputs[i] for i in chunk])
                with torch.inference_mode():
                    out = run(_fast_layout(batch))
                for row, i in enumerate(chunk):
                    for name, node in zip(names_missing, nodes, strict=True):
                        value = out[node][row].float().clone(memory_format=torch.contiguous_format)
                        results[i][name] = value
                        if cache is not None:
                            cache.put(key(name, images[i]), value)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    return results
