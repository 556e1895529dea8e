"""Timestamps as the API shows them: UTC, ISO 8601."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> str:
    """The current UTC time, ISO 8601 with microseconds (sortable as text)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")
