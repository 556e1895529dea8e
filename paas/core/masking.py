"""Masking of secret values wherever the platform prints: job events, messages, log tails, logs.

A value is masked as ``***`` when it is at least :data:`MASK_MIN` characters long (shorter values,
``1`` or ``true``, would mask half of every text). Longer values are masked first, so a secret that
holds another is masked whole.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = "***"
MASK_MIN = 6


class Masker:
    """Replaces each of some secret values in a text by ``***``."""

    def __init__(self, values: Iterable[str], minimum: int = MASK_MIN) -> None:
        self._values = sorted({v for v in values if len(v) >= minimum}, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._values)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def optional(self, text: str | None) -> str | None:
        return None if text is None else self(text)
