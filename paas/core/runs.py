"""What every run reports, whatever runs it (a playbook, a command): how it ended and its task events.

:class:`TaskEvent` is the public shape of one step of a job (``GET /jobs/<id>`` shows them); it never
holds a module's arguments or result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class RunStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class TaskEvent:
    """One task result on one host: never the module's arguments or result."""

    at: str
    task: str
    host: str
    result: str


EventSink = Callable[[TaskEvent], None]
CancelCheck = Callable[[], bool]
