"""Apps: deploy, delete, status and the public view of apps (the data of :mod:`paas.apps.model`).

A deploy is validated (:func:`paas.apps.spec.parse_deploy`), stored ``pending`` (a new app) with a
queued job, and answered 202; a worker then runs ``playbooks/deploy.yml`` against the current target
(:class:`paas.infra.target.Target`) and stores the result. A successful deploy makes the app
``running``; after any deploy that did not succeed, a live status check sets the truth, so a failed
redeploy of a serving app leaves it ``running`` with the failure in ``last_deploy``. The app role
hands a failure back as the fact ``app_deploy_failure`` ``{step, reason, log_tail}``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from paas.apps.model import App, PublicApp, deploy_record, desired_of, health_of
from paas.apps.spec import DeploySpec, RepoPolicy, parse_deploy
from paas.contract import check_name
from paas.core.clock import now
from paas.core.config import Settings
from paas.core.errors import ConflictError, NotFoundError
from paas.core.jobs import JobContext, JobOutcome, JobSpec, JobStatus, public_job
from paas.core.masking import Masker
from paas.core.runs import RunStatus
from paas.core.store import ACTIVE_JOB_STATUSES, Doc, Store
from paas.core.workers import JobManager
from paas.execution.runner import PlaybookRequest, PlaybookResult
from paas.infra.target import Target
from paas.live.status import LiveStatus, apply_live

log = logging.getLogger(__name__)

DEPLOY_PLAYBOOK = "playbooks/deploy.yml"
REMOVE_PLAYBOOK = "playbooks/remove.yml"
FAILURE_FACT = "app_deploy_failure"


def deploy_failure(name: str, result: PlaybookResult) -> tuple[str | None, str | None]:
    """``(failed_step, message)`` of a deploy run that did not succeed, from the role's
    ``app_deploy_failure`` fact. A canceled or timed out run has neither: the job manager words why it
    stopped."""
    if result.status in (RunStatus.CANCELED, RunStatus.TIMEOUT):
        return None, None
    failure = result.facts.get(FAILURE_FACT)
    if isinstance(failure, dict) and failure.get("step"):
        step = str(failure["step"])
        message = f"deploy of '{name}' failed at step '{step}': {failure.get('reason') or ''}"
        if failure.get("log_tail"):
            message += "\n" + str(failure["log_tail"])
        return step, message
    # Before the role ran (a host refused, an inventory error): the runner's own words.
    return result.failed_step, result.message or f"the deploy {result.status.value}"


class Apps:
    """Everything the API can ask about apps."""

    def __init__(
        self, settings: Settings, store: Store, jobs: JobManager, target: Target, live: LiveStatus
    ) -> None:
        self._settings = settings
        self._store = store
        self._jobs = jobs
        self._target = target
        self._live = live

    # ---- reading ----
    @property
    def version(self) -> int:
        """Grows with every write of the store: a view of the apps read at one version is current
        while the version stays."""
        return self._store.version

    def list_apps(self) -> list[PublicApp]:
        return [App.from_doc(doc).public(self._settings) for doc in self._store.list_apps()]

    def status(self, name: str) -> PublicApp:
        return self._get(name).public(self._settings)

    def _get(self, name: str) -> App:
        doc = self._store.get_app(name) if check_name(name) is None else None
        if doc is None:
            raise NotFoundError(f"no app named {name!r}" if len(name) <= 64 else "no such app")
        return App.from_doc(doc)

    def _load(self, name: str) -> App | None:
        doc = self._store.get_app(name)
        return None if doc is None else App.from_doc(doc)

    def _save(self, app: App) -> None:
        self._store.put_app(app.to_doc())

    # ---- deploy ----
    def deploy(self, body: Any) -> tuple[PublicApp, dict[str, Any]]:
        """Queue a deploy (new app or redeploy). Returns the app and the job, both as stored."""
        spec = parse_deploy(body, RepoPolicy.of(self._settings))
        stored: dict[str, App] = {}

        def prepare(job: Doc) -> None:
            stored["app"] = self._prepare_deploy(spec, job)

        job = self._jobs.submit(
            JobSpec(
                kind="deploy",
                app=spec.name,
                key=spec.name,
                work=lambda ctx: self._run_deploy(ctx, spec),
                prepare=prepare,
                on_skipped=lambda job: self._deploy_skipped(spec.name, job),
                # A newer deploy of the app replaces its queued one (never the running one).
                replace_queued=True,
            )
        )
        return stored["app"].public(self._settings), public_job(job)

    def _prepare_deploy(self, spec: DeploySpec, job: Doc) -> App:
        """In the transaction that stores the job: refuse it (409) or store the app's new desire."""
        if self._target.busy() is None:
            self._target.inventory()  # 409 when the current environment has no hosts
        for other in self._store.list_apps():
            if other["name"] == spec.name:
                continue
            held = {p.get("port") for p in (other.get("served"), other.get("desired")) if p}
            if spec.port in held:
                raise ConflictError(
                    f"port {spec.port} is held by app {other['name']!r}",
                    code="port_in_use",
                    fields={"port": f"is held by app {other['name']!r}"},
                )
        at = now()
        app = self._load(spec.name)
        if app is None and len(self._store.list_apps()) >= self._settings.max_apps:
            raise ConflictError(
                f"the server holds {self._settings.max_apps} apps, its maximum (PAAS_MAX_APPS): "
                "delete one first, or redeploy an existing app",
                code="too_many_apps",
                fields={"name": f"is a new app and {self._settings.max_apps} apps exist already"},
            )
        if app is None:
            app = App(name=spec.name, state="pending", desired={}, created_at=at, updated_at=at)
        elif app.deleting:
            raise ConflictError(
                f"app {spec.name!r} is being deleted (job {app.deleting})", code="app_deleting"
            )
        app.desired = desired_of(spec)
        app.updated_at = at
        app.last_deploy = deploy_record(job)
        app.generation += 1
        self._save(app)
        return app

    def _run_deploy(self, ctx: JobContext, spec: DeploySpec) -> JobOutcome:
        def mark_running(doc: Doc) -> None:
            if (doc.get("last_deploy") or {}).get("job_id") == ctx.job_id:
                doc["last_deploy"]["status"] = JobStatus.RUNNING.value
                doc["last_deploy"]["started_at"] = now()

        if self._store.update_app(spec.name, mark_running) is None:
            return JobOutcome(
                JobStatus.FAILED, message=f"app {spec.name!r} was deleted before the deploy ran"
            )
        # The app's env values never show in its job: an app may print them when it crashes.
        mask = Masker(spec.env.values())
        result = self._target.run_app_playbook(
            PlaybookRequest(
                ident=ctx.job_id,
                playbook=DEPLOY_PLAYBOOK,
                extravars=spec.extra_vars(self._settings),
                capture_facts=("app_source_commit", FAILURE_FACT),
                capture_actions=("app_health_probe", "app_record"),
            ),
            on_event=lambda event: ctx.record(dataclasses.replace(event, task=mask(event.task))),
            should_cancel=ctx.should_stop,
        )
        if result.ok:
            return JobOutcome(JobStatus.SUCCEEDED, commit=lambda job: self._deployed(spec, result, job))
        step, message = deploy_failure(spec.name, result)
        log.info(
            "job %s (app %s): deploy %s; checking the app live", ctx.job_id, spec.name, result.status.value
        )
        live = self._live.check([spec.name])

        def failed(job: Doc) -> None:
            app = self._load(spec.name)
            if app is not None:
                apply_live(app, live)
                app.set_last_deploy(job)
                app.updated_at = now()
                self._save(app)

        canceled = result.status is RunStatus.CANCELED and ctx.canceled
        return JobOutcome(
            JobStatus.CANCELED if canceled else JobStatus.FAILED,
            failed_step=step,
            message=mask.optional(message),
            commit=failed,
        )

    def _deployed(self, spec: DeploySpec, result: PlaybookResult, job: Doc) -> None:
        """A deploy succeeded: the app serves the new release (commit of the job's transaction)."""
        app = self._load(spec.name)
        if app is None:
            return
        record = result.actions.get("app_record", {}).get("record") or {}
        active = record.get("active") or {}
        app.served = desired_of(spec) | {
            "commit": active.get("commit") or result.facts.get("app_source_commit"),
            "image": active.get("image"),
            "slot": active.get("slot"),
        }
        app.state = "running"
        app.health = health_of(result.actions.get("app_health_probe"))
        app.updated_at = now()
        app.set_last_deploy(job)
        self._save(app)
        self._store.add_release(
            {
                "app": spec.name,
                "job_id": job["id"],
                "commit": app.served["commit"],
                "image": app.served["image"],
                "slot": app.served["slot"],
                "deployed_at": job["finished_at"],
            }
        )

    def _deploy_skipped(self, name: str, job: Doc) -> None:
        """A queued deploy was canceled: it never touched the host."""
        app = self._load(name)
        if app is None:
            return
        app.set_last_deploy(job)
        others = [
            j
            for j in self._store.list_jobs(statuses=ACTIVE_JOB_STATUSES, app=name)
            if j["id"] != job["id"] and j["kind"] == "deploy"
        ]
        if app.state == "pending" and not others:
            app.state = "failed"
        app.updated_at = now()
        self._save(app)

    # ---- delete ----
    def delete(self, name: str) -> dict[str, Any]:
        self._get(name)

        def prepare(job: Doc) -> None:
            app = self._get(name)
            if app.deleting:
                raise ConflictError(
                    f"app {name!r} is already being deleted (job {app.deleting})", code="app_deleting"
                )
            app.deleting = job["id"]
            app.generation += 1
            self._save(app)

        def skipped(job: Doc) -> None:
            app = self._load(name)
            if app is not None and app.deleting == job["id"]:
                app.deleting = None
                self._save(app)

        job = self._jobs.submit(
            JobSpec(
                kind="delete",
                app=name,
                key=name,
                work=lambda ctx: self._run_delete(ctx, name),
                prepare=prepare,
                on_skipped=skipped,
            )
        )
        return public_job(job)

    def _remove(self, ctx: JobContext, name: str, number: int = 0) -> PlaybookResult:
        return self._target.run_app_playbook(
            PlaybookRequest(
                ident=ctx.job_id if number == 0 else f"{ctx.job_id}.{number}",
                playbook=REMOVE_PLAYBOOK,
                extravars={"app_name": name},
            ),
            on_event=ctx.record,
            should_cancel=ctx.should_stop,
        )

    def _run_delete(self, ctx: JobContext, name: str) -> JobOutcome:
        result = self._remove(ctx, name)
        if result.ok:
            return JobOutcome(JobStatus.SUCCEEDED, commit=lambda job: self._store.delete_app(name))

        def failed(job: Doc) -> None:
            app = self._load(name)
            if app is not None:
                app.deleting = None
                app.updated_at = now()
                self._save(app)

        canceled = result.status is RunStatus.CANCELED and ctx.canceled
        return JobOutcome(
            JobStatus.CANCELED if canceled else JobStatus.FAILED,
            failed_step=result.failed_step,
            message=result.message,
            commit=failed,
        )

    def names(self) -> list[str]:
        return [doc["name"] for doc in self._store.list_apps()]

    def remove_all(self, ctx: JobContext) -> tuple[int, list[str]]:
        """Remove every app from the hosts and forget it (a forced destroy). Returns the number of
        playbook runs (artifact dirs ``<job>``, ``<job>.1``...) and what went wrong."""
        number = 0
        problems: list[str] = []
        for name in self.names():
            if ctx.should_stop():
                break
            log.info("job %s: removing app %s before destroying the environment", ctx.job_id, name)
            result = self._remove(ctx, name, number)
            number += 1
            if result.ok:
                self._store.delete_app(name)
            else:
                problems.append(f"removing {name}: {result.message}")
        return number, problems
