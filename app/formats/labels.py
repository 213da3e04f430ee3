"""Labels as every entry point stores them: NFC, stripped, no control characters.

One function for the boxes API, uploads and every import, so that ``"café"`` typed on one
keyboard (precomposed ``é``) and pasted from another tool (``e`` + combining accent) are
the same group, and no label can carry characters that break XML, CSV or a terminal.
"""

from __future__ import annotations

import unicodedata

__all__ = ["MAX_LABEL_LENGTH", "clean_label", "normalize_label"]

MAX_LABEL_LENGTH = 200
"""The longest label (in characters, after normalisation) a box or image may have."""

# Cc/Cf: control and format characters. Cs: lone surrogates (JSON "\ud800" decodes to one),
# which no UTF-8 database or response can hold.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


def normalize_label(label: str) -> str:
    """The NFC form of ``label`` without surrounding white space (no checks).

    Use it on labels that only look things up (filters), so they match stored labels.
    """
    return unicodedata.normalize("NFC", label).strip()


def clean_label(label: str, what: str = "a box label") -> str:
    """The label as it is stored: NFC-normalised and stripped.

    Args:
        label: the label as given.
        what: how the message names the label (``"a box label"``, ``"category 3's name"``).

    Returns:
        The normalised label.

    Raises:
        ValueError: the label is not a string, is empty once stripped, is longer than
            :data:`MAX_LABEL_LENGTH`, or holds a control or format character (Unicode
            categories Cc and Cf: tabs, newlines, NUL, zero-width and direction marks) or a
            lone surrogate (Cs).
    """
    if not isinstance(label, str):
        raise ValueError(f"{what} must be a string, got {type(label).__name__}")
    text = normalize_label(label)
    if not text:
        raise ValueError(f"{what} must not be empty; give a class or domain name")
    if len(text) > MAX_LABEL_LENGTH:
        raise ValueError(f"{what} has at most {MAX_LABEL_LENGTH} characters, got {len(text)}")
    for position, char in enumerate(text):
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise ValueError(
                f"{what} holds the control character U+{ord(char):04X} at position "
                f"{position}; labels are plain text on one line"
            )
    return text
