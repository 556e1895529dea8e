"""Jobs: a queue, a bounded pool of workers, per-app ordering, timeouts, cancel, terminal states.

A job has a *key* (the app's name, or ``"infra"``) and may be *exclusive* (infrastructure changes).
A job starts only when no job it conflicts with runs or waits before it in the queue; two jobs
conflict when they share a key or either is exclusive. So the jobs of one app run one after another
in the order they were submitted, different apps run in parallel (up to ``workers``), and deploys
wait while the infrastructure changes, and the other way round.

The queue is bounded: at most ``max_queued`` jobs wait (one more is refused with 429,
:class:`~paas.core.errors.TooManyRequestsError`), and a job submitted with ``replace_queued`` (deploys)
replaces the queued job of the same key and kind, which ends ``canceled`` ("superseded by <id>"),
so an app has at most one deploy waiting. A running job is never replaced.

Every job ends ``succeeded``, ``failed`` or ``canceled``: work that raises is a failed job, a job past
its timeout is stopped and failed, shutdown cancels what is left, and :meth:`JobManager.recover`
fails the jobs a killed server left queued or running.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from paas.core.clock import now
from paas.core.errors import ConflictError, NotFoundError, TooManyRequestsError, UnavailableError
from paas.core.jobs import (
    EVENT_FLUSH_SECONDS,
    INTERRUPTED_MESSAGE,
    QUEUE_FULL_RETRY_AFTER,
    JobContext,
    JobOutcome,
    JobSpec,
    JobStatus,
)
from paas.core.store import ACTIVE_JOB_STATUSES, TERMINAL_JOB_STATUSES, Doc, Store

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    job_id: str
    spec: JobSpec
    context: JobContext
    running: bool = False
    thread_name: str = field(default="")

    def conflicts(self, other: _Entry) -> bool:
        return self.spec.exclusive or other.spec.exclusive or self.spec.key == other.spec.key


class JobManager:
    """Queue and worker pool. Lock order: the manager's lock, then the store's (never the reverse)."""

    def __init__(
        self,
        store: Store,
        *,
        workers: int = 4,
        job_timeout: float = 1800.0,
        max_events: int = 500,
        max_queued: int | None = None,
        on_finished: Callable[[Doc], None] | None = None,
    ) -> None:
        self.store = store
        self.max_events = max_events
        self._max_queued = max_queued
        self._workers = workers
        self._job_timeout = job_timeout
        self._on_finished = on_finished
        self._cond = threading.Condition()
        self._queue: list[_Entry] = []
        self._running: list[_Entry] = []
        self._threads: list[threading.Thread] = []
        self._accepting = True
        self._stopping = False
        self._seq = 0

    # ---- life cycle ----
    def start(self) -> None:
        for number in range(self._workers):
            thread = threading.Thread(target=self._worker, name=f"paas-job-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        threading.Thread(target=self._flusher, name="paas-job-events", daemon=True).start()

    def _flusher(self) -> None:
        """Write the task events of running jobs that arrived since their last write."""
        while True:
            with self._cond:
                if self._stopping and not self._running:
                    return
                contexts = [entry.context for entry in self._running]
            for ctx in contexts:
                try:
                    ctx.flush_if_dirty()
                except Exception:
                    log.exception("job %s (app %s): could not store its events", ctx.job_id, ctx.app)
            time.sleep(EVENT_FLUSH_SECONDS)

    def recover(self) -> list[Doc]:
        """Fail the jobs a previous server left queued or running; returns them (after the change)."""
        failed: list[Doc] = []
        with self.store.transaction():
            for doc in self.store.list_jobs(statuses=ACTIVE_JOB_STATUSES):
                doc.update(status=JobStatus.FAILED.value, finished_at=now(), message=INTERRUPTED_MESSAGE)
                self.store.put_job(doc)
                failed.append(doc)
        for doc in failed:
            log.warning(
                "job %s (%s, app %s) failed: interrupted by restart", doc["id"], doc["kind"], doc["app"]
            )
        return failed

    def shutdown(self, grace: float, cancel_wait: float = 20.0) -> None:
        """Stop accepting jobs, cancel the queued ones, let running ones finish for ``grace`` seconds,
        then cancel them and wait ``cancel_wait`` more seconds for the workers."""
        with self._cond:
            self._accepting = False
            queued, self._queue = self._queue, []
            self._cond.notify_all()
        for entry in queued:
            self._skip(entry, "canceled: the server stopped before the job ran")
        deadline = time.monotonic() + grace
        with self._cond:
            while self._running and time.monotonic() < deadline:
                self._cond.wait(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
            for entry in self._running:
                log.warning(
                    "job %s (app %s): canceling, the server is stopping", entry.job_id, entry.spec.app
                )
                entry.context.cancel("canceled: the server stopped")
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=cancel_wait)

    # ---- submit / cancel / query ----
    def submit(self, spec: JobSpec) -> Doc:
        """Store a new queued job (with ``spec.prepare``'s changes) and queue it. Returns the job.

        429 when ``max_queued`` jobs wait already, unless this one replaces a queued job
        (``spec.replace_queued``): the replaced job ends ``canceled`` ("superseded by <id>").
        """
        with self._cond:
            if not self._accepting:
                raise UnavailableError("the server is shutting down and accepts no new jobs")
            replaced = [
                entry
                for entry in self._queue
                if spec.replace_queued and entry.spec.key == spec.key and entry.spec.kind == spec.kind
            ]
            if not replaced and self._max_queued is not None and len(self._queue) >= self._max_queued:
                raise TooManyRequestsError(
                    f"{len(self._queue)} jobs are queued already (at most {self._max_queued}): "
                    "retry when some have run",
                    retry_after=QUEUE_FULL_RETRY_AFTER,
                    code="too_many_jobs",
                )
            self._seq += 1
            job: Doc = {
                "id": uuid.uuid4().hex,
                "kind": spec.kind,
                "app": spec.app,
                "status": JobStatus.QUEUED.value,
                "created_at": now(),
                "started_at": None,
                "finished_at": None,
                "failed_step": None,
                "message": None,
                "events": [],
                "seq": self._seq,
            }
            superseded = f"superseded by {job['id']}"
            with self.store.transaction():
                if spec.prepare is not None:
                    spec.prepare(job)
                self.store.put_job(job)
                # After the new job is stored: the replaced job's on_skipped sees it queued.
                ended = [(entry, self._mark_skipped(entry, superseded)) for entry in replaced]
            for entry in replaced:
                self._queue.remove(entry)
            context = JobContext(self.store, job["id"], spec.app, self._job_timeout, self.max_events)
            self._queue.append(_Entry(job_id=job["id"], spec=spec, context=context))
            self._cond.notify_all()
        log.info("job %s (%s, app %s) queued", job["id"], spec.kind, spec.app)
        for entry, doc in ended:
            self._skipped(entry, doc, superseded)
        return job

    def cancel(self, job_id: str) -> Doc:
        """Cancel a job: a queued one at once, a running one as soon as its work stops."""
        with self._cond:
            for entry in self._queue:
                if entry.job_id == job_id:
                    self._queue.remove(entry)
                    self._cond.notify_all()
                    break
            else:
                entry = None
                for running in self._running:
                    if running.job_id == job_id:
                        running.context.cancel("canceled on request")
                        log.info("job %s (app %s): cancel requested", job_id, running.spec.app)
        if entry is not None:
            return self._skip(entry, "canceled before it started")
        doc = self.store.get_job(job_id)
        if doc is None:
            raise NotFoundError(f"no job {job_id}")
        if doc["status"] in TERMINAL_JOB_STATUSES:
            raise ConflictError(f"job {job_id} already ended ({doc['status']})", code="job_finished")
        return doc

    def active_keys(self) -> set[str]:
        """Keys of the jobs queued or running in this process."""
        with self._cond:
            return {e.spec.key for e in (*self._queue, *self._running)}

    def waiting_on(self, job_id: str) -> list[str]:
        """Ids of the jobs that queued job ``job_id`` waits for (it conflicts with them and they run or
        wait before it); empty when it is not queued or is free to start."""
        with self._cond:
            for index, entry in enumerate(self._queue):
                if entry.job_id == job_id:
                    before = [*self._running, *self._queue[:index]]
                    return [other.job_id for other in before if entry.conflicts(other)]
            return []

    def idle(self) -> bool:
        with self._cond:
            return not self._queue and not self._running

    # ---- internals ----
    def _skip(self, entry: _Entry, message: str) -> Doc:
        """End a job that never ran as canceled."""
        with self.store.transaction():
            result = self._mark_skipped(entry, message)
        self._skipped(entry, result, message)
        return result

    def _mark_skipped(self, entry: _Entry, message: str) -> Doc:
        """In a store transaction: the job that never ran ends canceled, with its ``on_skipped``."""
        doc = self.store.get_job(entry.job_id)
        if doc is None:
            return {}
        doc.update(status=JobStatus.CANCELED.value, finished_at=now(), message=message)
        if entry.spec.on_skipped is not None:
            entry.spec.on_skipped(doc)
        self.store.put_job(doc)
        return doc

    def _skipped(self, entry: _Entry, doc: Doc, message: str) -> None:
        """After the transaction of :meth:`_mark_skipped` (outside the manager's lock)."""
        if not doc:
            return
        log.info("job %s (%s, app %s) canceled: %s", entry.job_id, entry.spec.kind, entry.spec.app, message)
        self._finished(doc)

    def _next_runnable(self) -> _Entry | None:
        for index, candidate in enumerate(self._queue):
            if any(candidate.conflicts(r) for r in self._running):
                continue
            if any(candidate.conflicts(q) for q in self._queue[:index]):
                continue
            return candidate
        return None

    def _worker(self) -> None:
        while True:
            with self._cond:
                entry = None
                while entry is None:
                    if self._stopping and not self._queue:
                        return
                    entry = self._next_runnable()
                    if entry is None:
                        self._cond.wait(timeout=1.0)
                self._queue.remove(entry)
                entry.running = True
                self._running.append(entry)
            try:
                self._run(entry)
            except Exception:
                log.exception("job %s (app %s): the job manager failed", entry.job_id, entry.spec.app)
            finally:
                with self._cond:
                    self._running.remove(entry)
                    self._cond.notify_all()

    def _run(self, entry: _Entry) -> None:
        ctx, spec = entry.context, entry.spec
        ctx.start_clock()
        started = self.store.update_job(
            entry.job_id, lambda doc: doc.update(status=JobStatus.RUNNING.value, started_at=now())
        )
        if started is None:
            return
        log.info("job %s (%s, app %s) running", entry.job_id, spec.kind, spec.app)
        began = time.monotonic()
        try:
            outcome = spec.work(ctx)
        except Exception:
            log.exception("job %s (%s, app %s) raised", entry.job_id, spec.kind, spec.app)
            outcome = JobOutcome(JobStatus.FAILED, message="internal error (see the server log)")
        if outcome.status is not JobStatus.SUCCEEDED:
            if ctx.timed_out and not ctx.canceled:
                outcome.status = JobStatus.FAILED
                outcome.message = f"timed out after {ctx.timeout:g} s" + (
                    f": {outcome.message}" if outcome.message else ""
                )
            elif ctx.canceled and outcome.status is JobStatus.CANCELED:
                outcome.message = outcome.message or ctx.cancel_reason
        events = ctx.events()
        final: Doc = {}
        with self.store.transaction():
            doc = self.store.get_job(entry.job_id)
            if doc is None:
                return
            doc.update(
                status=outcome.status.value,
                finished_at=now(),
                failed_step=outcome.failed_step,
                message=outcome.message,
                events=events,
            )
            if outcome.commit is not None:
                outcome.commit(doc)
            self.store.put_job(doc)
            final = doc
        log.info(
            "job %s (%s, app %s) %s in %.1f s%s",
            entry.job_id,
            spec.kind,
            spec.app,
            outcome.status.value,
            time.monotonic() - began,
            f" at step {outcome.failed_step}" if outcome.failed_step else "",
        )
        self._finished(final)

    def _finished(self, doc: Doc) -> None:
        if not doc:
            return
        try:
            self.store.prune_jobs()
            if self._on_finished is not None:
                self._on_finished(doc)
        except Exception:
            log.exception("job %s: clean-up after the job failed", doc.get("id"))
