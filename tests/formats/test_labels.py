"""clean_label: NFC, stripped, control and format characters refused, length kept."""

from __future__ import annotations

import unicodedata

import pytest

from app.formats.labels import MAX_LABEL_LENGTH, clean_label, normalize_label


def test_nfc_and_strip() -> None:
    decomposed = "cafe\u0301"  # e + combining acute
    assert len(decomposed) == 5
    assert clean_label(f"  {decomposed}\n") == "caf\u00e9"
    assert clean_label("\u212b") == "\u00c5"  # Angstrom sign → A with ring (NFC)
    assert normalize_label(" cafe\u0301 ") == "caf\u00e9"
    assert clean_label("a <b> & 'c' \"d\"") == "a <b> & 'c' \"d\""


@pytest.mark.parametrize(
    "char",
    [
        "\x00",
        "\x07",
        "\x1b",
        "\x7f",
        "\x85",
        "\u200b",
        "\u200d",
        "\u202e",
        "\ufeff",
        "\u00ad",
        "\t",
        "\n",
        "\ud800",
    ],
)
def test_control_and_format_characters_are_refused(char: str) -> None:
    assert unicodedata.category(char) in {"Cc", "Cf", "Cs"}
    with pytest.raises(ValueError, match=f"U\\+{ord(char):04X} at position 1"):
        clean_label(f"a{char}b")


def test_empty_long_and_non_string() -> None:
    with pytest.raises(ValueError, match="empty"):
        clean_label(" \u3000 ")  # ideographic space strips too
    assert clean_label("x" * MAX_LABEL_LENGTH) == "x" * MAX_LABEL_LENGTH
    with pytest.raises(ValueError, match=f"at most {MAX_LABEL_LENGTH} characters, got 201"):
        clean_label("x" * (MAX_LABEL_LENGTH + 1))
    with pytest.raises(ValueError, match="category 3's name must be a string, got list"):
        clean_label(["cat"], "category 3's name")  # type: ignore[arg-type]
