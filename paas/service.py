"""The service layer: what each API call does, between the routes and the jobs, store and runner.

An app's ``state`` tells what serves now:

- ``pending``: a new app whose first deploy has not finished;
- ``running``: the serving container answers its health probe;
- ``unhealthy``: the serving container runs but its probe fails (after retries);
- ``failed``: nothing serves (first deploy failed, container gone...).

A successful deploy makes the app ``running``; after any deploy that did not succeed, a live status
check (``playbooks/status.yml``) sets the truth, so a failed redeploy of a serving app leaves it
``running`` with the failure in ``last_deploy``. The health monitor moves apps between
``running``, ``unhealthy`` and ``failed``, never for an app with a job queued or running.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paas.clock import now
from paas.config import Settings
from paas.errors import ConflictError, NotFoundError
from paas.infra import CommandStep, Environment, PlaybookStep, environment_for
from paas.jobs import JobContext, JobManager, JobOutcome, JobSpec, JobStatus, public_job
from paas.runner import (
    PlaybookRequest,
    PlaybookResult,
    Runner,
    RunStatus,
    TaskEvent,
    prune_artifacts,
    scrub_artifacts,
)
from paas.store import ACTIVE_JOB_STATUSES, Doc, Store
from paas.validation import DeploySpec, check_name, parse_deploy, parse_destroy, parse_empty

log = logging.getLogger(__name__)

DEPLOY_PLAYBOOK = "playbooks/deploy.yml"
REMOVE_PLAYBOOK = "playbooks/remove.yml"
STATUS_PLAYBOOK = "playbooks/status.yml"
INFRA_KEY = "infra"
# Keys of job queues are app names or this; app names cannot contain '@'.
CHECK_KEY = "@check"
STATUS_CHECK_TIMEOUT = 300.0
FAILURE_RE = re.compile(r"^deploy of '[^']*' failed at step '([a-z]+)': ?(.*)$", re.DOTALL)
NOT_DEPLOYED_RE = re.compile(r"^app '[^']*' is not deployed on this host")
MONITORED_STATES = frozenset({"running", "unhealthy", "failed"})


def _health(entry: dict[str, Any] | None) -> dict[str, Any]:
    """``{checked_at, attempts: [{code, latency_ms}]}`` from a probe result or a status report entry."""
    source = entry or {}
    if "health" in source and isinstance(source["health"], dict):
        source = source["health"]
    raw = source.get("attempts")
    attempts: list[Any] = raw if isinstance(raw, list) else []
    return {
        "checked_at": source.get("checked_at"),
        "attempts": [
            {"code": a.get("code"), "latency_ms": a.get("latency_ms")}
            for a in attempts
            if isinstance(a, dict)
        ],
    }


def _deploy_record(job: Doc) -> dict[str, Any]:
    return {
        "job_id": job["id"],
        "status": job["status"],
        "started_at": job.get("started_at"),
        "finished_at": job.get("finished_at"),
        "failed_step": job.get("failed_step"),
        "message": job.get("message"),
    }


def _spec_fields(spec: DeploySpec) -> dict[str, Any]:
    """What the store keeps of a deploy request: everything but the env values."""
    return {
        "repo": spec.repo,
        "ref": spec.ref,
        "port": spec.port,
        "container_port": spec.container_port,
        "health_path": spec.health_path,
        "context": spec.context,
        "env_keys": sorted(spec.env),
    }


def split_failure(result: PlaybookResult) -> tuple[str | None, str | None]:
    """``(failed_step, message)`` of a deploy run that did not succeed.

    A canceled or timed out run has neither: the job manager words why it stopped.
    """
    if result.status in (RunStatus.CANCELED, RunStatus.TIMEOUT):
        return None, None
    message = result.message or f"the deploy {result.status.value}"
    match = FAILURE_RE.match(message)
    if match:
        return match.group(1), message
    return None, message


class Service:
    """Everything the API can ask. Thread-safe; start it once, stop it once."""

    def __init__(self, settings: Settings, runner: Runner, store: Store | None = None) -> None:
        self.settings = settings
        self.runner = runner
        self.store = store or Store(settings.db_path, keep_jobs=settings.keep_jobs)
        self.environment: Environment = environment_for(settings)
        self.jobs = JobManager(
            self.store,
            workers=settings.workers,
            job_timeout=settings.job_timeout,
            max_events=settings.max_events,
            on_finished=self._job_finished,
        )
        self._monitor_stop = threading.Event()
        self._monitor_thread: threading.Thread | None = None
        self._monitor_lock = threading.Lock()

    # ---- life cycle ----
    def start(self) -> None:
        """Recover from a previous run, start the workers and the health monitor."""
        scrub_artifacts(self.settings.artifacts_dir)
        interrupted = self.jobs.recover()
        apps_to_check = self._after_interruption(interrupted)
        self.jobs.start()
        if apps_to_check:
            self._submit_check(sorted(apps_to_check))
        if self.settings.monitor_interval > 0:
            self._monitor_thread = threading.Thread(
                target=self._monitor_loop, name="paas-monitor", daemon=True
            )
            self._monitor_thread.start()

    def stop(self) -> None:
        """Stop the monitor, let running jobs finish (or cancel them after the grace period)."""
        self._monitor_stop.set()
        self.jobs.shutdown(self.settings.shutdown_grace)
        if self._monitor_thread is not None:
            self._monitor_thread.join(timeout=30)
        self.store.close()

    # ---- apps ----
    def public_app(self, doc: Doc) -> dict[str, Any]:
        shown = doc.get("served") or doc["desired"]
        served = doc.get("served") or {}
        port = int(shown["port"])
        return {
            "name": doc["name"],
            "state": doc["state"],
            "repo": shown["repo"],
            "ref": shown["ref"],
            "commit": served.get("commit"),
            "port": port,
            "container_port": int(shown["container_port"]),
            "health_path": shown["health_path"],
            "url": f"http://{self.settings.public_host}:{port}/",
            "created_at": doc["created_at"],
            "updated_at": doc["updated_at"],
            "last_deploy": doc.get("last_deploy"),
            "health": doc.get("health") or {"checked_at": None, "attempts": []},
        }

    def list_apps(self) -> list[dict[str, Any]]:
        return [self.public_app(doc) for doc in self.store.list_apps()]

    def app_status(self, name: str) -> dict[str, Any]:
        return self.public_app(self._get_app(name))

    def _get_app(self, name: str) -> Doc:
        doc = self.store.get_app(name) if check_name(name) is None else None
        if doc is None:
            raise NotFoundError(f"no app named {name!r}" if len(name) <= 64 else "no such app")
        return doc

    def deploy(self, body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Queue a deploy (new app or redeploy). Returns the app and the job, both as stored."""
        spec = parse_deploy(body)
        stored: dict[str, Doc] = {}

        def prepare(job: Doc) -> None:
            for other in self.store.list_apps():
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
            doc = self.store.get_app(spec.name)
            if doc is None:
                doc = {
                    "name": spec.name,
                    "state": "pending",
                    "created_at": at,
                    "served": None,
                    "health": {"checked_at": None, "attempts": []},
                    "generation": 0,
                    "deleting": None,
                }
            elif doc.get("deleting"):
                raise ConflictError(
                    f"app {spec.name!r} is being deleted (job {doc['deleting']})", code="app_deleting"
                )
            doc["desired"] = _spec_fields(spec)
            doc["updated_at"] = at
            doc["last_deploy"] = _deploy_record(job)
            doc["generation"] = int(doc.get("generation", 0)) + 1
            self.store.put_app(doc)
            stored["app"] = doc

        job = self.jobs.submit(
            JobSpec(
                kind="deploy",
                app=spec.name,
                key=spec.name,
                work=lambda ctx: self._run_deploy(ctx, spec),
                prepare=prepare,
                on_skipped=lambda job: self._deploy_skipped(spec.name, job),
            )
        )
        return self.public_app(stored["app"]), public_job(job)

    def _set_last_deploy(self, doc: Doc, job: Doc) -> None:
        if (doc.get("last_deploy") or {}).get("job_id") == job["id"]:
            doc["last_deploy"] = _deploy_record(job)

    def _run_deploy(self, ctx: JobContext, spec: DeploySpec) -> JobOutcome:
        def mark_running(doc: Doc) -> None:
            if (doc.get("last_deploy") or {}).get("job_id") == ctx.job_id:
                doc["last_deploy"]["status"] = JobStatus.RUNNING.value
                doc["last_deploy"]["started_at"] = now()

        if self.store.update_app(spec.name, mark_running) is None:
            return JobOutcome(
                JobStatus.FAILED, message=f"app {spec.name!r} was deleted before the deploy ran"
            )
        result = self.runner.run(
            PlaybookRequest(
                ident=ctx.job_id,
                playbook=DEPLOY_PLAYBOOK,
                extravars=spec.extra_vars(),
                capture_facts=("app_source_commit",),
                capture_actions=("app_health_probe", "app_record"),
            ),
            on_event=ctx.record,
            should_cancel=ctx.should_stop,
        )
        if result.ok:
            record = result.actions.get("app_record", {}).get("record") or {}
            active = record.get("active") or {}
            served = _spec_fields(spec) | {
                "commit": active.get("commit") or result.facts.get("app_source_commit"),
                "image": active.get("image"),
                "slot": active.get("slot"),
            }
            health = _health(result.actions.get("app_health_probe"))

            def succeeded(job: Doc) -> None:
                doc = self.store.get_app(spec.name)
                if doc is None:
                    return
                doc.update(state="running", served=served, health=health, updated_at=now())
                self._set_last_deploy(doc, job)
                self.store.put_app(doc)
                self.store.add_release(
                    {
                        "app": spec.name,
                        "job_id": job["id"],
                        "commit": served["commit"],
                        "image": served["image"],
                        "slot": served["slot"],
                        "deployed_at": job["finished_at"],
                    }
                )

            return JobOutcome(JobStatus.SUCCEEDED, commit=succeeded)

        step, message = split_failure(result)
        log.info(
            "job %s (app %s): deploy %s; checking the app live", ctx.job_id, spec.name, result.status.value
        )
        live = self._live_status([spec.name])

        def failed(job: Doc) -> None:
            doc = self.store.get_app(spec.name)
            if doc is None:
                return
            self._apply_live(doc, live)
            self._set_last_deploy(doc, job)
            doc["updated_at"] = now()
            self.store.put_app(doc)

        status = (
            JobStatus.CANCELED if result.status is RunStatus.CANCELED and ctx.canceled else JobStatus.FAILED
        )
        return JobOutcome(status, failed_step=step, message=message, commit=failed)

    def _deploy_skipped(self, name: str, job: Doc) -> None:
        """A queued deploy was canceled: it never touched the host."""
        doc = self.store.get_app(name)
        if doc is None:
            return
        self._set_last_deploy(doc, job)
        others = [
            j
            for j in self.store.list_jobs(statuses=ACTIVE_JOB_STATUSES, app=name)
            if j["id"] != job["id"] and j["kind"] == "deploy"
        ]
        if doc["state"] == "pending" and not others:
            doc["state"] = "failed"
        doc["updated_at"] = now()
        self.store.put_app(doc)

    def delete_app(self, name: str) -> dict[str, Any]:
        self._get_app(name)

        def prepare(job: Doc) -> None:
            doc = self._get_app(name)
            if doc.get("deleting"):
                raise ConflictError(
                    f"app {name!r} is already being deleted (job {doc['deleting']})", code="app_deleting"
                )
            doc["deleting"] = job["id"]
            doc["generation"] = int(doc.get("generation", 0)) + 1
            self.store.put_app(doc)

        def skipped(job: Doc) -> None:
            doc = self.store.get_app(name)
            if doc is not None and doc.get("deleting") == job["id"]:
                doc["deleting"] = None
                self.store.put_app(doc)

        job = self.jobs.submit(
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

    def _run_delete(self, ctx: JobContext, name: str) -> JobOutcome:
        result = self._run_playbook(ctx, REMOVE_PLAYBOOK, {"app_name": name})
        if result.ok:
            return JobOutcome(JobStatus.SUCCEEDED, commit=lambda job: self.store.delete_app(name))

        def failed(job: Doc) -> None:
            doc = self.store.get_app(name)
            if doc is not None:
                doc["deleting"] = None
                doc["updated_at"] = now()
                self.store.put_app(doc)

        status = (
            JobStatus.CANCELED if result.status is RunStatus.CANCELED and ctx.canceled else JobStatus.FAILED
        )
        return JobOutcome(status, message=result.message, commit=failed)

    # ---- infra ----
    def infra(self) -> dict[str, Any]:
        doc = self.store.get_infra() or {}
        return {
            "environment": self.environment.name,
            "state": doc.get("state", "absent"),
            "hosts": self.environment.hosts(),
            "outputs": self.environment.outputs(),
        }

    def _infra_busy(self) -> Doc | None:
        for job in self.store.list_jobs(statuses=ACTIVE_JOB_STATUSES):
            if job["kind"] in ("provision", "destroy"):
                return job
        return None

    def _submit_infra(
        self, kind: str, state: str, work: Callable[[JobContext], JobOutcome], check: Any
    ) -> Doc:
        def prepare(job: Doc) -> None:
            busy = self._infra_busy()
            if busy is not None:
                raise ConflictError(
                    f"the infrastructure is busy: job {busy['id']} ({busy['kind']}) is {busy['status']}",
                    code="infra_busy",
                )
            check()
            doc = self.store.get_infra() or {"state": "absent"}
            doc.update(
                previous_state=doc.get("state", "absent"), state=state, job_id=job["id"], updated_at=now()
            )
            self.store.put_infra(doc)

        def skipped(job: Doc) -> None:
            doc = self.store.get_infra() or {}
            if doc.get("job_id") == job["id"]:
                doc["state"] = doc.get("previous_state", "absent")
                self.store.put_infra(doc)

        job = self.jobs.submit(
            JobSpec(
                kind=kind,
                app=None,
                key=INFRA_KEY,
                exclusive=True,
                work=work,
                prepare=prepare,
                on_skipped=skipped,
            )
        )
        return public_job(job)

    def provision(self, body: Any) -> dict[str, Any]:
        parse_empty(body)
        return self._submit_infra("provision", "provisioning", self._run_provision, lambda: None)

    def destroy(self, body: Any) -> dict[str, Any]:
        force = parse_destroy(body)

        def check() -> None:
            names = [a["name"] for a in self.store.list_apps()]
            if names and not force:
                raise ConflictError(
                    f"{len(names)} app(s) exist ({', '.join(names[:10])}): delete them first or send "
                    '{"force": true}',
                    code="apps_exist",
                )

        return self._submit_infra("destroy", "destroying", lambda ctx: self._run_destroy(ctx, force), check)

    def _set_infra_state(self, job: Doc, state: str) -> None:
        doc = self.store.get_infra() or {}
        if doc.get("job_id") == job["id"]:
            doc.update(state=state, updated_at=now())
            self.store.put_infra(doc)

    def _run_steps(
        self, ctx: JobContext, steps: list[PlaybookStep | CommandStep], first: int
    ) -> PlaybookResult | None:
        """Run the steps in order; returns the first result that did not succeed (None: all did)."""
        for number, step in enumerate(steps, start=first):
            if isinstance(step, CommandStep):
                return PlaybookResult(
                    RunStatus.FAILED, message=f"{step.description}: command steps are not supported yet"
                )
            log.info("job %s: %s", ctx.job_id, step.description)
            result = self._run_playbook(
                ctx, step.playbook, dict(step.extravars), number=number, inventory=step.inventory
            )
            if not result.ok:
                return result
        return None

    def _run_provision(self, ctx: JobContext) -> JobOutcome:
        failure = self._run_steps(ctx, self.environment.provision_steps(), 0)
        if failure is None:
            return JobOutcome(JobStatus.SUCCEEDED, commit=lambda job: self._set_infra_state(job, "ready"))
        status = (
            JobStatus.CANCELED if failure.status is RunStatus.CANCELED and ctx.canceled else JobStatus.FAILED
        )
        return JobOutcome(
            status, message=failure.message, commit=lambda job: self._set_infra_state(job, "failed")
        )

    def _run_destroy(self, ctx: JobContext, force: bool) -> JobOutcome:
        number = 0
        problems: list[str] = []
        if force:
            for app in self.store.list_apps():
                if ctx.should_stop():
                    break
                name = app["name"]
                log.info("job %s: removing app %s before destroying the environment", ctx.job_id, name)
                result = self._run_playbook(ctx, REMOVE_PLAYBOOK, {"app_name": name}, number=number)
                number += 1
                if result.ok:
                    self.store.delete_app(name)
                else:
                    problems.append(f"removing {name}: {result.message}")
        failure = (
            None
            if problems or ctx.should_stop()
            else self._run_steps(ctx, self.environment.destroy_steps(), number)
        )
        if failure is not None:
            problems.append(failure.message or "a destroy step failed")
        if not problems and not ctx.should_stop():
            return JobOutcome(JobStatus.SUCCEEDED, commit=lambda job: self._set_infra_state(job, "absent"))
        status = JobStatus.CANCELED if ctx.canceled else JobStatus.FAILED
        return JobOutcome(
            status,
            message="; ".join(problems) or None,
            commit=lambda job: self._set_infra_state(job, "failed"),
        )

    # ---- jobs ----
    def job(self, job_id: str) -> dict[str, Any]:
        doc = self.store.get_job(job_id) if re.fullmatch(r"[0-9a-f]{32}", job_id) else None
        if doc is None:
            raise NotFoundError("no such job")
        return public_job(doc)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        if not re.fullmatch(r"[0-9a-f]{32}", job_id):
            raise NotFoundError("no such job")
        return public_job(self.jobs.cancel(job_id))

    # ---- running playbooks ----
    def _run_playbook(
        self,
        ctx: JobContext,
        playbook: str,
        extravars: dict[str, Any],
        *,
        number: int = 0,
        inventory: Path | None = None,
    ) -> PlaybookResult:
        return self.runner.run(
            PlaybookRequest(
                ident=ctx.job_id if number == 0 else f"{ctx.job_id}.{number}",
                playbook=playbook,
                extravars=extravars,
                inventory=inventory,
            ),
            on_event=ctx.record,
            should_cancel=ctx.should_stop,
        )

    def _live_status(
        self,
        names: list[str] | None,
        *,
        ident: str | None = None,
        on_event: Callable[[TaskEvent], None] | None = None,
    ) -> dict[str, dict[str, Any] | None] | None:
        """Live status of some apps (None: every app) from status.yml.

        Returns ``{name: report entry, or None when the app is not on the host}``, or None when the
        check itself failed (the truth is unknown).
        """
        extravars: dict[str, Any] = {"app_name": names[0]} if names and len(names) == 1 else {}
        result = self.runner.run(
            PlaybookRequest(
                ident=ident or f"status-{threading.get_ident()}",
                playbook=STATUS_PLAYBOOK,
                extravars=extravars,
                capture_facts=("app_status_report",),
                keep_artifacts=False,
                timeout=STATUS_CHECK_TIMEOUT,
            ),
            on_event=on_event or (lambda event: None),
            should_cancel=self._monitor_stop.is_set if ident == "monitor" else (lambda: False),
        )
        report = result.facts.get("app_status_report")
        if not result.ok and report is None:
            if names and len(names) == 1 and NOT_DEPLOYED_RE.match(result.message or ""):
                return {names[0]: None}
            log.warning("status check failed: %s", (result.message or "")[:500])
            return None
        entries = {str(e.get("name")): e for e in (report or []) if isinstance(e, dict)}
        wanted = names if names is not None else list(entries)
        return {name: entries.get(name) for name in wanted}

    def _apply_live(self, doc: Doc, live: dict[str, dict[str, Any] | None] | None) -> None:
        """Set an app's state and health from a live check (unknown truth: nothing serves for sure
        only if nothing ever did)."""
        if live is None or doc["name"] not in live:
            if doc["state"] == "pending":
                doc["state"] = "failed"
            return
        entry = live[doc["name"]]
        if entry is None:
            doc["state"] = "failed"
            return
        state = entry.get("state")
        doc["state"] = state if state in MONITORED_STATES else "failed"
        doc["health"] = _health(entry)
        if doc.get("served"):
            doc["served"].update(
                commit=entry.get("commit") or doc["served"].get("commit"),
                image=entry.get("image") or doc["served"].get("image"),
                slot=entry.get("slot") or doc["served"].get("slot"),
            )

    # ---- after a restart ----
    def _after_interruption(self, interrupted: list[Doc]) -> set[str]:
        """Bring the records touched by interrupted jobs in line; returns the apps to check live."""
        apps: set[str] = set()
        with self.store.transaction():
            for job in interrupted:
                if job["kind"] in ("provision", "destroy"):
                    self._set_infra_state(job, "failed")
                    continue
                name = job.get("app")
                if not name:
                    continue
                doc = self.store.get_app(name)
                if doc is None:
                    continue
                if job["kind"] == "delete" and doc.get("deleting") == job["id"]:
                    doc["deleting"] = None
                self._set_last_deploy(doc, job)
                self.store.put_app(doc)
                apps.add(name)
            for doc in self.store.list_apps():
                if doc["state"] == "pending":
                    apps.add(doc["name"])
        return apps

    def _submit_check(self, names: list[str]) -> None:
        """A job that checks apps live after a restart, before any new job of theirs runs."""

        def work(ctx: JobContext) -> JobOutcome:
            live = self._live_status(None, ident=ctx.job_id, on_event=ctx.record)

            def commit(job: Doc) -> None:
                for name in names:
                    doc = self.store.get_app(name)
                    if doc is not None:
                        self._apply_live(doc, None if live is None else {name: live.get(name)})
                        doc["updated_at"] = now()
                        self.store.put_app(doc)

            if live is None:
                return JobOutcome(JobStatus.FAILED, message="the status check failed", commit=commit)
            return JobOutcome(JobStatus.SUCCEEDED, commit=commit)

        self.jobs.submit(JobSpec(kind="check", app=None, key=CHECK_KEY, exclusive=True, work=work))

    def _job_finished(self, job: Doc) -> None:
        running = {j["id"] for j in self.store.list_jobs(statuses=ACTIVE_JOB_STATUSES)}
        prune_artifacts(self.settings.artifacts_dir, self.settings.keep_jobs, in_use=running | {"monitor"})

    # ---- health monitor ----
    def _monitor_loop(self) -> None:
        interval = self.settings.monitor_interval
        while not self._monitor_stop.wait(interval):
            try:
                self.check_health()
            except Exception:
                log.exception("health monitor: the check failed")

    def check_health(self) -> None:
        """One round of the health monitor: status.yml for every app, one runner call."""
        with self._monitor_lock:
            with self.store.transaction():
                busy = {j["app"] for j in self.store.list_jobs(statuses=ACTIVE_JOB_STATUSES) if j.get("app")}
                snapshot = {
                    d["name"]: d.get("generation", 0)
                    for d in self.store.list_apps()
                    if d["state"] in MONITORED_STATES and not d.get("deleting") and d["name"] not in busy
                }
            if not snapshot:
                return
            live = self._live_status(None, ident="monitor")
            if live is None or self._monitor_stop.is_set():
                return
            with self.store.transaction():
                busy = {j["app"] for j in self.store.list_jobs(statuses=ACTIVE_JOB_STATUSES) if j.get("app")}
                for name, generation in snapshot.items():
                    doc = self.store.get_app(name)
                    # A job of this app was submitted during the check: its result wins.
                    if doc is None or doc.get("generation", 0) != generation or name in busy:
                        continue
                    before = doc["state"]
                    self._apply_live(doc, {name: live.get(name)})
                    if doc["state"] != before:
                        log.info("health monitor: app %s is now %s (was %s)", name, doc["state"], before)
                        doc["updated_at"] = now()
                    self.store.put_app(doc)
