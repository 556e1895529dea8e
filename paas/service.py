"""The service layer: what each API call does, between the routes and the jobs, store, runner and
command executor.

An app's ``state`` tells what serves now:

- ``pending``: a new app whose first deploy has not finished;
- ``running``: the serving container answers its health probe;
- ``unhealthy``: the serving container runs but its probe fails (after retries);
- ``failed``: nothing serves (first deploy failed, container gone...).

A successful deploy makes the app ``running``; after any deploy that did not succeed, a live status
check (``playbooks/status.yml``) sets the truth, so a failed redeploy of a serving app leaves it
``running`` with the failure in ``last_deploy``. The health monitor moves apps between
``running``, ``unhealthy`` and ``failed``, never for an app with a job queued or running.

The infrastructure record (one document) holds the *current environment*: the Terraform environment
provisioned last (``local``, ``ssh`` or ``aws``), its state (``absent``, ``provisioning``, ``ready``,
``failed``, ``destroying``), whether Terraform may hold resources of it (``applied``: set when an
apply starts, cleared by a successful destroy), its hosts and outputs, and the variables of its last
apply (never the secret ones). App jobs (deploy, delete, status checks, the monitor) run against the
current environment's dynamic inventory once it was applied; before any apply, ``local`` means the
server's own inventory (``PAAS_INVENTORY``), and a remote environment has no hosts (deploys are
refused). The record survives restarts, so does the choice. Another environment can be provisioned
only after the current one is destroyed (which needs its apps gone).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from paas.apps.spec import (
    DeploySpec,
    RepoPolicy,
    Resources,
    check_name,
    parse_deploy,
    parse_destroy,
    parse_provision,
)
from paas.core.clock import now
from paas.core.config import Settings
from paas.core.errors import ConflictError, NotFoundError, ValidationError
from paas.core.jobs import JobContext, JobManager, JobOutcome, JobSpec, JobStatus, public_job
from paas.core.masking import Masker
from paas.core.processes import DataDirLock, reap_orphans
from paas.core.runs import RunStatus, TaskEvent
from paas.core.store import ACTIVE_JOB_STATUSES, Doc, Store
from paas.execution.commands import CommandExecutor, CommandRequest, SubprocessExecutor
from paas.execution.runner import PlaybookRequest, PlaybookResult, Runner, prune_artifacts, scrub_artifacts
from paas.infra.environments import (
    CommandStep,
    StaticEnvironment,
    Step,
    StepError,
    TerraformEnvironment,
    scrub_runs,
)
from paas.infra.terraform import split_variables, summarise_error

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
# The host of the events of commands the server runs itself (Terraform, the inventory script).
CONTROLLER = "controller"
COMMAND_EVENTS_MAX = 200
STDERR_SHOWN_LINES = 5


@dataclasses.dataclass(frozen=True)
class StepFailure:
    """How an infrastructure step did not succeed."""

    status: JobStatus
    failed_step: str | None
    message: str | None


def _stderr_tail(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return " / ".join(lines[-STDERR_SHOWN_LINES:])[:1000]


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
        "resources": spec.resources.given(),
    }


def split_failure(result: PlaybookResult) -> tuple[str | None, str | None]:
    """``(failed_step, message)`` of a deploy run that did not succeed.

    A canceled or timed out run has neither: the job manager words why it stopped.
    """
    if result.status in (RunStatus.CANCELED, RunStatus.TIMEOUT):
        return None, None
    if result.failed_step:
        return result.failed_step, result.message
    message = result.message or f"the deploy {result.status.value}"
    match = FAILURE_RE.match(message)
    if match:
        return match.group(1), message
    return None, message


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
        self.runner = runner
        self.executor: CommandExecutor = executor or SubprocessExecutor()
        # The environment Terraform runs with (cloud credentials come from it): the process's.
        self._environ = environ
        # One server per data dir: taken before the store is opened, held until stop().
        self._data_lock = DataDirLock(settings.data_dir)
        self._data_lock.acquire()
        self.store = store or Store(settings.db_path, keep_jobs=settings.keep_jobs)
        self.static = StaticEnvironment(settings)
        self.jobs = JobManager(
            self.store,
            workers=settings.workers,
            job_timeout=settings.job_timeout,
            max_events=settings.max_events,
            max_queued=settings.max_queued,
            on_finished=self._job_finished,
        )
        self._monitor_stop = threading.Event()
        self._monitor_thread: threading.Thread | None = None
        self._monitor_lock = threading.Lock()

    # ---- life cycle ----
    def start(self) -> None:
        """Recover from a previous run, start the workers and the health monitor."""
        # Processes a server killed mid-job left behind would keep changing hosts: stop them first.
        reap_orphans(self.settings.data_dir)
        scrub_artifacts(self.settings.artifacts_dir)
        scrub_runs(self.settings.data_dir)
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
        self._data_lock.release()

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
            "resources": Resources(**(shown.get("resources") or {})).effective(self.settings),
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
        spec = parse_deploy(body, RepoPolicy.of(self.settings))
        stored: dict[str, Doc] = {}

        def prepare(job: Doc) -> None:
            if self._infra_busy() is None:
                self._app_target()  # 409 when the current environment has no hosts
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
            if doc is None and len(self.store.list_apps()) >= self.settings.max_apps:
                raise ConflictError(
                    f"the server holds {self.settings.max_apps} apps, its maximum (PAAS_MAX_APPS): "
                    "delete one first, or redeploy an existing app",
                    code="too_many_apps",
                    fields={"name": f"is a new app and {self.settings.max_apps} apps exist already"},
                )
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
                # A newer deploy of the app replaces its queued one (never the running one).
                replace_queued=True,
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
        # The app's env values never show in its job: an app may print them when it crashes.
        mask = Masker(spec.env.values())
        result = self._run_app_playbook(
            PlaybookRequest(
                ident=ctx.job_id,
                playbook=DEPLOY_PLAYBOOK,
                extravars=spec.extra_vars(self.settings),
                capture_facts=("app_source_commit",),
                capture_actions=("app_health_probe", "app_record"),
            ),
            on_event=lambda event: ctx.record(dataclasses.replace(event, task=mask(event.task))),
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
        message = mask.optional(message)
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
        return JobOutcome(status, failed_step=result.failed_step, message=result.message, commit=failed)

    # ---- infra ----
    def _infra_doc(self) -> Doc:
        return self.store.get_infra() or {"state": "absent"}

    def current_environment(self, doc: Doc | None = None) -> str:
        """The environment the apps run on: the one provisioned last (kept across restarts in the
        infra record, until another is provisioned), else ``PAAS_ENVIRONMENT``."""
        record = self._infra_doc() if doc is None else doc
        return str(record.get("environment") or self.settings.environment)

    def _terraform(self, name: str) -> TerraformEnvironment:
        return TerraformEnvironment(self.settings, name, self._environ)

    def _app_target(self) -> tuple[Path | None, dict[str, str]]:
        """The inventory of app jobs (None: the server's) and the variables it needs.

        Once a Terraform environment was applied, its dynamic inventory; before that, the server's
        own inventory for ``local``. A remote environment that is not provisioned has no hosts.
        """
        doc = self._infra_doc()
        if doc.get("applied"):
            environment = self._terraform(str(doc["environment"]))
            return environment.inventory, environment.inventory_env()
        name = self.current_environment(doc)
        if name == "local":
            return None, {}
        raise ConflictError(
            f"the {name} environment is not provisioned: provision it first "
            f"(POST /infra/provision, paas infra provision --environment {name})",
            code="infra_absent",
        )

    def infra(self) -> dict[str, Any]:
        doc = self._infra_doc()
        name = self.current_environment(doc)
        if doc.get("applied") or doc.get("hosts"):
            hosts = list(doc.get("hosts") or [])
        else:
            hosts = self.static.hosts() if name == "local" else []
        return {
            "environment": name,
            "state": doc.get("state", "absent"),
            "hosts": hosts,
            "outputs": dict(doc.get("outputs") or {}),
            "variables": dict(doc.get("variables") or {}),
            "secret_variables": list(doc.get("secret_variables") or []),
            "job_id": doc.get("job_id"),
            "updated_at": doc.get("updated_at"),
        }

    def _infra_busy(self) -> Doc | None:
        for job in self.store.list_jobs(statuses=ACTIVE_JOB_STATUSES):
            if job["kind"] in ("provision", "destroy"):
                return job
        return None

    def _submit_infra(
        self,
        kind: str,
        state: str,
        work: Callable[[JobContext], JobOutcome],
        check: Callable[[Doc], None],
    ) -> Doc:
        """Queue an infrastructure job. ``check(doc)`` runs in the transaction that stores the job: it
        may refuse it (raise) or change the infra record."""

        def prepare(job: Doc) -> None:
            busy = self._infra_busy()
            if busy is not None:
                raise ConflictError(
                    f"the infrastructure is busy: job {busy['id']} ({busy['kind']}) is {busy['status']}",
                    code="infra_busy",
                )
            doc = self._infra_doc()
            previous = {"state": doc.get("state", "absent"), "environment": doc.get("environment")}
            check(doc)
            doc.update(previous=previous, state=state, job_id=job["id"], updated_at=now())
            self.store.put_infra(doc)

        def skipped(job: Doc) -> None:
            doc = self._infra_doc()
            if doc.get("job_id") == job["id"]:
                previous = doc.get("previous") or {}
                doc.update(state=previous.get("state", "absent"), environment=previous.get("environment"))
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
        """Queue a provision of ``body.environment`` (default ``PAAS_ENVIRONMENT``) with its variables.

        The variables apply over those stored by the last provision of the same environment. Switching
        to another environment needs the current one destroyed (and so no apps). 400 names each bad
        variable (unknown to the module, set by the server, or a secret one given last time and missing
        now: secret values are never stored).
        """
        spec = parse_provision(body, self.settings.environment)
        environment = self._terraform(spec.environment)
        planned: dict[str, Any] = {}

        def check(doc: Doc) -> None:
            current = self.current_environment(doc)
            if spec.environment != current:
                if doc.get("applied"):
                    raise ConflictError(
                        f"the {current} environment is provisioned: destroy it first (POST /infra/destroy), "
                        f"then provision {spec.environment}",
                        code="environment_in_use",
                    )
                names = [a["name"] for a in self.store.list_apps()]
                if names:
                    raise ConflictError(
                        f"{len(names)} app(s) run on the {current} environment ({', '.join(names[:10])}): "
                        f"delete them before provisioning {spec.environment}",
                        code="apps_exist",
                    )
            same = doc.get("environment") == spec.environment
            declared = environment.declared_variables()
            stored = {k: v for k, v in (doc.get("variables") or {}).items() if k in declared} if same else {}
            secret_before = list(doc.get("secret_variables") or []) if same and doc.get("applied") else []
            fields = {
                f"variables.{name}": "was given at the last provision of this environment and is never "
                "stored (its name marks it secret): send it again"
                for name in secret_before
                if name not in spec.variables
            }
            variables = {**stored, **spec.variables}
            fields.update(environment.check_variables(variables))
            if fields:
                raise ValidationError(
                    "the provision request is invalid: " + ", ".join(sorted(fields)), fields=fields
                )
            planned["variables"] = variables
            doc["environment"] = spec.environment

        return self._submit_infra(
            "provision",
            "provisioning",
            lambda ctx: self._run_provision(ctx, spec.environment, planned["variables"]),
            check,
        )

    def destroy(self, body: Any) -> dict[str, Any]:
        """Queue the destroy of the current environment (409 while apps exist, unless ``force``: then
        the apps are removed first)."""
        force = parse_destroy(body)
        target: dict[str, str] = {}

        def check(doc: Doc) -> None:
            names = [a["name"] for a in self.store.list_apps()]
            if names and not force:
                raise ConflictError(
                    f"{len(names)} app(s) exist ({', '.join(names[:10])}): delete them first or send "
                    '{"force": true}',
                    code="apps_exist",
                )
            target["environment"] = self.current_environment(doc)
            doc["environment"] = target["environment"]

        return self._submit_infra(
            "destroy",
            "destroying",
            lambda ctx: self._run_destroy(ctx, force, target["environment"]),
            check,
        )

    def _update_infra(self, job_id: str, **changes: Any) -> None:
        """Change the infra record, if the job ``job_id`` still owns it."""
        with self.store.transaction():
            doc = self._infra_doc()
            if doc.get("job_id") == job_id:
                doc.update(changes, updated_at=now())
                self.store.put_infra(doc)

    def _set_infra_state(self, job: Doc, state: str, **changes: Any) -> None:
        self._update_infra(job["id"], state=state, **changes)

    def _run_steps(
        self,
        ctx: JobContext,
        steps: list[Step],
        first: int,
        redact: Callable[[str], str] = str,
        applying: Callable[[], None] | None = None,
    ) -> StepFailure | None:
        """Run the steps in order; returns how the first one that did not succeed failed (None: all
        did). Playbook steps are numbered from ``first`` (their artifact dirs); ``applying()`` runs
        just before an ``apply`` step."""
        number = first
        for step in steps:
            if ctx.should_stop():
                return StepFailure(JobStatus.CANCELED if ctx.canceled else JobStatus.FAILED, None, None)
            log.info("job %s: %s", ctx.job_id, step.description)
            if isinstance(step, CommandStep):
                if step.name == "apply" and applying is not None:
                    applying()
                failure = self._run_command(ctx, step, redact)
            else:
                result = self._run_playbook(
                    ctx,
                    step.playbook,
                    dict(step.extravars),
                    number=number,
                    inventory=step.inventory,
                    env=step.env,
                    capture_facts=step.capture_facts,
                )
                number += 1
                failure = None
                if step.after is not None:
                    # Whatever the playbook's outcome: it may have changed the hosts (e.g. a host key).
                    try:
                        task, outcome = step.after(result), "ok"
                    except (StepError, OSError) as exc:
                        task, outcome = step.description, "failed"
                        message = redact(f"{step.description}: {exc}")
                        failure = StepFailure(JobStatus.FAILED, step.name, message)
                    if task is not None:
                        ctx.record(TaskEvent(at=now(), task=redact(task), host=CONTROLLER, result=outcome))
                if failure is None and not result.ok:
                    canceled = result.status is RunStatus.CANCELED and ctx.canceled
                    failure = StepFailure(
                        JobStatus.CANCELED if canceled else JobStatus.FAILED,
                        None if canceled else result.failed_step or step.name,
                        result.message or f"{step.description}: {result.status.value}",
                    )
            if failure is not None:
                return failure
        return None

    def _run_command(
        self, ctx: JobContext, step: CommandStep, redact: Callable[[str], str]
    ) -> StepFailure | None:
        """One command step: its progress lines as events (bounded), then its closing event."""
        shown = 0

        def on_line(line: str) -> None:
            nonlocal shown
            event = step.progress(line) if step.progress is not None else None
            if event is None or shown >= COMMAND_EVENTS_MAX:
                return
            shown += 1
            ctx.record(TaskEvent(at=now(), task=redact(event[0]), host=CONTROLLER, result=event[1]))

        result = self.executor.run(
            CommandRequest(step.argv, env=step.env, cwd=step.cwd, timeout=step.timeout, capture=step.capture),
            on_line=on_line,
            should_cancel=ctx.should_stop,
        )
        if result.ok:
            try:
                task = step.after(result.stdout) if step.after is not None else None
            except (StepError, OSError) as exc:
                ctx.record(TaskEvent(at=now(), task=step.description, host=CONTROLLER, result="failed"))
                return StepFailure(JobStatus.FAILED, step.name, redact(f"{step.description}: {exc}"))
            if task is not None or shown == 0:
                ctx.record(
                    TaskEvent(at=now(), task=redact(task or step.description), host=CONTROLLER, result="ok")
                )
            return None
        ctx.record(TaskEvent(at=now(), task=step.description, host=CONTROLLER, result="failed"))
        if result.status is RunStatus.CANCELED:
            if ctx.canceled:
                return StepFailure(JobStatus.CANCELED, None, None)
            return StepFailure(JobStatus.FAILED, step.name, f"{step.description} was stopped")
        if result.status is RunStatus.TIMEOUT:
            return StepFailure(
                JobStatus.FAILED, step.name, f"{step.description} timed out after {step.timeout:g} s"
            )
        detail = result.message or summarise_error(result.stderr) or _stderr_tail(result.stderr)
        return StepFailure(
            JobStatus.FAILED,
            step.name,
            redact(
                f"{step.description} failed (exit {result.rc}): {detail}"
                if detail
                else f"{step.description} failed (exit {result.rc})"
            ),
        )

    def _run_provision(self, ctx: JobContext, name: str, variables: dict[str, Any]) -> JobOutcome:
        environment = self._terraform(name)
        plain, secret = split_variables(variables)
        found: dict[str, Any] = {}

        def applying() -> None:
            # From the apply on, Terraform may hold resources made with these values: a destroy must
            # run terraform, with them (the secret ones are not kept: their defaults apply then).
            self._update_infra(ctx.job_id, applied=True, variables=plain, secret_variables=secret)

        try:
            with environment.session(variables) as session:
                failure = self._run_steps(ctx, session.provision_steps(), 0, session.redact, applying)
                if session.hosts or session.outputs:
                    found.update(hosts=session.hosts, outputs=session.outputs)
        except (StepError, OSError) as exc:
            failure = StepFailure(JobStatus.FAILED, "init", str(exc))
        if failure is None:
            return JobOutcome(
                JobStatus.SUCCEEDED, commit=lambda job: self._set_infra_state(job, "ready", **found)
            )
        return JobOutcome(
            failure.status,
            failed_step=failure.failed_step,
            message=failure.message,
            commit=lambda job: self._set_infra_state(job, "failed", **found),
        )

    def _run_destroy(self, ctx: JobContext, force: bool, name: str) -> JobOutcome:
        number = 0
        problems: list[str] = []
        if force:
            for app in self.store.list_apps():
                if ctx.should_stop():
                    break
                app_name = app["name"]
                log.info("job %s: removing app %s before destroying the environment", ctx.job_id, app_name)
                result = self._run_playbook(ctx, REMOVE_PLAYBOOK, {"app_name": app_name}, number=number)
                number += 1
                if result.ok:
                    self.store.delete_app(app_name)
                else:
                    problems.append(f"removing {app_name}: {result.message}")
        failure: StepFailure | None = None
        doc = self._infra_doc()
        environment = self._terraform(name)
        if not problems and not ctx.should_stop() and doc.get("applied"):
            try:
                with environment.session(dict(doc.get("variables") or {})) as session:
                    failure = self._run_steps(ctx, session.destroy_steps(), number, session.redact)
            except (StepError, OSError) as exc:
                failure = StepFailure(JobStatus.FAILED, "init", str(exc))
        elif not problems and not ctx.should_stop():
            # Nothing was ever applied here: no Terraform resources, nothing to run.
            environment.forget_host_keys()
        if failure is not None and failure.message:
            problems.append(failure.message)
        if not problems and failure is None and not ctx.should_stop():
            return JobOutcome(
                JobStatus.SUCCEEDED,
                commit=lambda job: self._set_infra_state(
                    job, "absent", applied=False, hosts=[], outputs={}, variables={}, secret_variables=[]
                ),
            )
        status = JobStatus.CANCELED if ctx.canceled else JobStatus.FAILED
        return JobOutcome(
            status,
            failed_step=failure.failed_step if failure is not None else None,
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
        env: Mapping[str, str] | None = None,
        capture_facts: tuple[str, ...] = (),
    ) -> PlaybookResult:
        """Run a playbook of a job: against ``inventory`` (with ``env``) when given, else against the
        current environment's hosts (an app playbook)."""
        request = PlaybookRequest(
            ident=ctx.job_id if number == 0 else f"{ctx.job_id}.{number}",
            playbook=playbook,
            extravars=extravars,
            inventory=inventory,
            env=dict(env or {}),
            capture_facts=capture_facts,
        )
        if inventory is not None:
            return self.runner.run(request, on_event=ctx.record, should_cancel=ctx.should_stop)
        return self._run_app_playbook(request, on_event=ctx.record, should_cancel=ctx.should_stop)

    def _run_app_playbook(
        self,
        request: PlaybookRequest,
        *,
        on_event: Callable[[TaskEvent], None],
        should_cancel: Callable[[], bool],
    ) -> PlaybookResult:
        """Run an app playbook against the current environment's inventory (see :meth:`_app_target`)."""
        try:
            inventory, env = self._app_target()
        except ConflictError as exc:
            return PlaybookResult(RunStatus.FAILED, message=exc.message)
        request = dataclasses.replace(request, inventory=inventory, env={**env, **request.env})
        return self.runner.run(request, on_event=on_event, should_cancel=should_cancel)

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
        result = self._run_app_playbook(
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
