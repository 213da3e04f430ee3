"""Decode budgets count bytes (bit depth × channels × pixels), not only pixels."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from app import images
from app.errors import LimitExceeded
from app.images import decode_image, decoded_bytes

LIMIT = 10**8


def _png16(width: int, height: int, seed: int = 0) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 65536, (height, width), dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), values


def test_decoded_bytes_count_depth_and_channels() -> None:
    # 16-bit grey: 2 bytes a pixel, twice (decoded, oriented copy), plus 4 for Pillow's RGB
    assert decoded_bytes(6300, 6300, "I;16") == 6300 * 6300 * (2 * 2 + 4)
    assert decoded_bytes(100, 30, "L") == 100 * 30 * (2 * 1 + 4)
    assert decoded_bytes(100, 30, "RGBA") == 100 * 30 * (2 * 4 + 4)


def test_a_sixteen_bit_png_past_the_byte_budget_is_refused_naming_the_setting() -> None:
    data, _ = _png16(301, 257)
    needed = 301 * 257 * 8
    with pytest.raises(LimitExceeded, match="FEATUREGAP_MAX_DECODED_BYTES"):
        decode_image(data, max_pixels=LIMIT, max_bytes=needed - 1)
    # the pixel count alone (77,357) is far below any pixel limit: the bytes decide
    decode_image(data, max_pixels=LIMIT, max_bytes=needed)


def test_sixteen_bit_rescaling_in_row_chunks_matches_float64(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(images, "_ROWS_PER_CHUNK", 7)  # many chunks and a ragged last one
    data, values = _png16(53, 45, seed=3)
    out = decode_image(data, max_pixels=LIMIT, max_bytes=10**7).array()
    want = np.clip(np.floor(values.astype(np.float64) / 65535.0 * 255.0 + 0.5), 0, 255)
    np.testing.assert_array_equal(out[..., 0], want.astype(np.uint8))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_concurrent_decodes_stay_under_the_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    data, _ = _png16(640, 480)
    one = decoded_bytes(640, 480, "I;16")
    budget = one * 2 + one // 2  # room for two at once, not three
    gate = images._ByteGate()
    seen: list[int] = []
    real_hold = gate.hold

    def watched(nbytes: int, limit: int):  # type: ignore[no-untyped-def]
        with real_hold(nbytes, limit):
            seen.append(gate.held)
            time.sleep(0.05)  # keep it held so others overlap
            yield

    from contextlib import contextmanager

    monkeypatch.setattr(gate, "hold", contextmanager(watched))
    monkeypatch.setattr(images, "DECODING", gate)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            decode_image(data, max_pixels=LIMIT, max_bytes=budget)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(seen) == 8
    assert max(seen) <= budget  # never three at once
    assert max(seen) == 2 * one  # but two did overlap
    assert gate.held == 0


def test_a_lone_decode_is_never_starved_and_the_gate_empties() -> None:
    gate = images._ByteGate()
    with gate.hold(10, 100):
        done = threading.Event()

        def second() -> None:
            with gate.hold(95, 100):
                done.set()

        t = threading.Thread(target=second)
        t.start()
        assert not done.wait(0.1)  # 10 + 95 > 100: it waits
    t.join(5)
    assert done.is_set() and gate.held == 0
