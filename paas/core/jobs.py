"""Jobs: what a job is (:class:`JobSpec`), what its work sees (:class:`JobContext`), how it ended
(:class:`JobOutcome`) and how the API shows it (:func:`public_job`). :mod:`paas.core.workers` runs them.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from paas.core.runs import TaskEvent
from paas.core.store import Doc, Store

log = logging.getLogger(__name__)

PUBLIC_FIELDS = (
    "id",
    "kind",
    "app",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "failed_step",
    "message",
    "events",
)
EVENT_FLUSH_SECONDS = 1.0
INTERRUPTED_MESSAGE = "interrupted by restart: the server stopped while the job was queued or running"
# Seconds a client refused because the queue is full is told to wait (Retry-After).
QUEUE_FULL_RETRY_AFTER = 30


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


JOB_STATUSES = tuple(status.value for status in JobStatus)


@dataclass
class JobOutcome:
    """How a job's work ended. ``commit`` runs in the same store transaction as the terminal write."""

    status: JobStatus
    failed_step: str | None = None
    message: str | None = None
    commit: Callable[[Doc], None] | None = None


class JobContext:
    """What a job's work sees: its id, a stop signal (cancel or timeout) and an event sink."""

    def __init__(self, store: Store, job_id: str, app: str | None, timeout: float, max_events: int) -> None:
        self.job_id = job_id
        self.app = app
        self.timeout = timeout
        self._store = store
        self._cancel = threading.Event()
        self.cancel_reason = "canceled"
        self._deadline = time.monotonic() + timeout
        self._events: collections.deque[dict[str, str]] = collections.deque(maxlen=max_events)
        self._last_flush = 0.0
        self._dirty = False
        self._events_lock = threading.Lock()

    def start_clock(self) -> None:
        self._deadline = time.monotonic() + self.timeout

    def cancel(self, reason: str = "canceled") -> None:
        if not self._cancel.is_set():
            self.cancel_reason = reason
        self._cancel.set()

    @property
    def canceled(self) -> bool:
        return self._cancel.is_set()

    @property
    def timed_out(self) -> bool:
        return time.monotonic() > self._deadline

    def should_stop(self) -> bool:
        """Whether the work must stop now (checked by the runner about once a second)."""
        return self.canceled or self.timed_out

    def record(self, event: TaskEvent) -> None:
        """Keep a task event (the last ``max_events``); written to the store at most about once a
        second here, the rest by the manager's flusher."""
        with self._events_lock:
            self._events.append(
                {"at": event.at, "task": event.task, "host": event.host, "result": event.result}
            )
            self._dirty = True
            due = time.monotonic() - self._last_flush >= EVENT_FLUSH_SECONDS
        if due:
            self.flush_events()

    def flush_if_dirty(self) -> None:
        with self._events_lock:
            dirty = self._dirty
        if dirty:
            self.flush_events()

    def events(self) -> list[dict[str, str]]:
        with self._events_lock:
            return list(self._events)

    def flush_events(self) -> None:
        with self._events_lock:
            events = list(self._events)
            self._last_flush = time.monotonic()
            self._dirty = False
        self._store.update_job(self.job_id, lambda doc: doc.update(events=events))


Work = Callable[[JobContext], JobOutcome]


@dataclass
class JobSpec:
    """A job to submit.

    ``prepare(job)`` runs in the transaction that stores the new job (it may change other documents or
    raise to refuse the job); ``on_skipped(job)`` runs in the transaction that cancels it while queued
    (the work never ran). With ``replace_queued``, the job replaces a queued (not a running) job of the
    same key and kind, which is canceled in the transaction that stores this one, after ``prepare``.
    """

    kind: str
    app: str | None
    key: str
    work: Work
    exclusive: bool = False
    prepare: Callable[[Doc], None] | None = None
    on_skipped: Callable[[Doc], None] | None = None
    replace_queued: bool = False


def public_job(doc: Doc) -> dict[str, Any]:
    """The job as the API shows it."""
    return {name: doc.get(name) for name in PUBLIC_FIELDS} | {"events": list(doc.get("events") or [])}
