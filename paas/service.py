"""The service: composes the parts of the control plane, starts and stops them.

- :attr:`Service.apps` (:mod:`paas.apps.service`): deploy, delete, status of apps;
- :attr:`Service.infra` (:mod:`paas.infra.service`): provision and destroy the environment;
- :attr:`Service.jobs` (:mod:`paas.core.workers`): the job queue, and :meth:`job`/:meth:`cancel_job`;
- the live state (:mod:`paas.live`): the health monitor and the check after a restart.

Nothing else lives here: the API asks the part it needs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from paas.apps.service import Apps
from paas.contract import is_job_id
from paas.core.config import Settings
from paas.core.errors import NotFoundError
from paas.core.jobs import public_job
from paas.core.processes import DataDirLock, reap_orphans
from paas.core.store import ACTIVE_JOB_STATUSES, Doc, Store
from paas.core.workers import JobManager
from paas.execution.commands import CommandExecutor, SubprocessExecutor
from paas.execution.runner import Runner, prune_artifacts, scrub_artifacts
from paas.infra.environments import scrub_runs
from paas.infra.service import Infra
from paas.infra.steps import StepRunner
from paas.infra.target import Target
from paas.live.monitor import MONITOR_IDENT, Monitor
from paas.live.status import LiveStatus

log = logging.getLogger(__name__)


class Service:
    """Everything the API can ask. Thread-safe; start it once, stop it once."""

    def __init__(
        self,
        settings: Settings,
        runner: Runner,
        store: Store | None = None,
        *,
        executor: CommandExecutor | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        # One server per data dir: taken before the store is opened, held until stop().
        self._data_lock = DataDirLock(settings.data_dir)
        self._data_lock.acquire()
        self.store = store or Store(settings.db_path, keep_jobs=settings.keep_jobs)
        self.jobs = JobManager(
            self.store,
            workers=settings.workers,
            job_timeout=settings.job_timeout,
            max_events=settings.max_events,
            max_queued=settings.max_queued,
            on_finished=self._job_finished,
        )
        target = Target(settings, self.store, runner, environ)
        self.live = LiveStatus(target)
        self.monitor = Monitor(self.store, self.jobs, self.live, settings.monitor_interval)
        self.apps = Apps(settings, self.store, self.jobs, target, self.live)
        steps = StepRunner(runner, executor or SubprocessExecutor())
        self.infra = Infra(target, self.jobs, steps, self.apps)

    def start(self) -> None:
        """Recover from a previous run, start the workers and the health monitor."""
        # Processes a server killed mid-job left behind would keep changing hosts: stop them first.
        reap_orphans(self.settings.data_dir)
        scrub_artifacts(self.settings.artifacts_dir)
        scrub_runs(self.settings.data_dir)
        interrupted = self.jobs.recover()
        self.infra.recover(interrupted)
        to_check = self.monitor.after_restart(interrupted)
        self.jobs.start()
        self.monitor.check_live(to_check)
        self.monitor.start()

    def stop(self) -> None:
        """Stop the monitor, let running jobs finish (or cancel them after the grace period)."""
        self.monitor.stop()
        self.jobs.shutdown(self.settings.shutdown_grace)
        self.monitor.join()
        self.store.close()
        self._data_lock.release()

    def job(self, job_id: str) -> dict[str, Any]:
        doc = self.store.get_job(job_id) if is_job_id(job_id) else None
        if doc is None:
            raise NotFoundError("no such job")
        return public_job(doc)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        if not is_job_id(job_id):
            raise NotFoundError("no such job")
        return public_job(self.jobs.cancel(job_id))

    def _job_finished(self, job: Doc) -> None:
        running = {j["id"] for j in self.store.list_jobs(statuses=ACTIVE_JOB_STATUSES)}
        prune_artifacts(
            self.settings.artifacts_dir, self.settings.keep_jobs, in_use=running | {MONITOR_IDENT}
        )
