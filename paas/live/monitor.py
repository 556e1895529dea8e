"""Keeping app states true over time: the health monitor, and the check after a restart.

The monitor runs ``status.yml`` for every app every ``PAAS_MONITOR_INTERVAL`` seconds (one runner
call) and moves apps between ``running``, ``unhealthy`` and ``failed``, never for an app with a job
queued or running, and never with a result older than the app's last job (its ``generation``).

After a restart, the apps touched by jobs the server was killed in (and the ``pending`` ones) are
checked live by one ``check`` job, before any new job of theirs runs.
"""

from __future__ import annotations

import logging
import threading

from paas.apps.model import App
from paas.contract import LIVE_STATES
from paas.core.clock import now
from paas.core.jobs import JobContext, JobOutcome, JobSpec, JobStatus
from paas.core.store import ACTIVE_JOB_STATUSES, Doc, Store
from paas.core.workers import JobManager
from paas.live.status import LiveStatus, apply_live

log = logging.getLogger(__name__)

# Keys of job queues are app names or this; app names cannot contain '@'.
CHECK_KEY = "@check"
MONITOR_IDENT = "monitor"


class Monitor:
    """The health monitor thread and the restart check."""

    def __init__(self, store: Store, jobs: JobManager, live: LiveStatus, interval: float) -> None:
        self._store = store
        self._jobs = jobs
        self._live = live
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._interval > 0:
            self._thread = threading.Thread(target=self._loop, name="paas-monitor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check_health()
            except Exception:
                log.exception("health monitor: the check failed")

    def _busy_apps(self) -> set[str]:
        return {j["app"] for j in self._store.list_jobs(statuses=ACTIVE_JOB_STATUSES) if j.get("app")}

    def check_health(self) -> None:
        """One round of the health monitor: status.yml for every app, one runner call."""
        with self._lock:
            with self._store.transaction():
                busy = self._busy_apps()
                snapshot = {
                    d["name"]: d.get("generation", 0)
                    for d in self._store.list_apps()
                    if d["state"] in LIVE_STATES and not d.get("deleting") and d["name"] not in busy
                }
            if not snapshot:
                return
            live = self._live.check(None, ident=MONITOR_IDENT, should_cancel=self._stop.is_set)
            if live is None or self._stop.is_set():
                return
            with self._store.transaction():
                busy = self._busy_apps()
                for name, generation in snapshot.items():
                    doc = self._store.get_app(name)
                    # A job of this app was submitted during the check: its result wins.
                    if doc is None or doc.get("generation", 0) != generation or name in busy:
                        continue
                    app = App.from_doc(doc)
                    before = app.state
                    apply_live(app, {name: live.get(name)})
                    if app.state != before:
                        log.info("health monitor: app %s is now %s (was %s)", name, app.state, before)
                        app.updated_at = now()
                    self._store.put_app(app.to_doc())

    # ---- after a restart ----
    def after_restart(self, interrupted: list[Doc]) -> list[str]:
        """Bring the apps touched by interrupted jobs in line; returns them and the apps still
        ``pending``: what :meth:`check_live` must check once the workers run."""
        names: set[str] = set()
        with self._store.transaction():
            for job in interrupted:
                name = job.get("app")
                doc = self._store.get_app(name) if name else None
                if doc is None:
                    continue
                app = App.from_doc(doc)
                if job["kind"] == "delete" and app.deleting == job["id"]:
                    app.deleting = None
                app.set_last_deploy(job)
                self._store.put_app(app.to_doc())
                names.add(app.name)
            names.update(d["name"] for d in self._store.list_apps() if d["state"] == "pending")
        return sorted(names)

    def check_live(self, names: list[str]) -> None:
        """Queue a job that checks ``names`` live (exclusive: before any other job of theirs runs)."""
        if not names:
            return

        def work(ctx: JobContext) -> JobOutcome:
            live = self._live.check(None, ident=ctx.job_id, on_event=ctx.record)

            def commit(job: Doc) -> None:
                for name in names:
                    doc = self._store.get_app(name)
                    if doc is not None:
                        app = App.from_doc(doc)
                        apply_live(app, None if live is None else {name: live.get(name)})
                        app.updated_at = now()
                        self._store.put_app(app.to_doc())

            if live is None:
                return JobOutcome(JobStatus.FAILED, message="the status check failed", commit=commit)
            return JobOutcome(JobStatus.SUCCEEDED, commit=commit)

        self._jobs.submit(JobSpec(kind="check", app=None, key=CHECK_KEY, exclusive=True, work=work))
