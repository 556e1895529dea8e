"""Infrastructure: provision and destroy the current environment, and its public view.

Another environment can be provisioned only after the current one is destroyed (which needs its apps
gone, or ``force``: then the apps part removes them first). The record (see :mod:`paas.infra.target`)
survives restarts, so does the choice of environment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from paas.core.clock import now
from paas.core.errors import ConflictError, ValidationError
from paas.core.jobs import JobContext, JobOutcome, JobSpec, JobStatus, public_job
from paas.core.store import Doc
from paas.core.workers import JobManager
from paas.infra.environments import StaticEnvironment
from paas.infra.requests import parse_destroy, parse_provision
from paas.infra.steps import StepError, StepFailure, StepRunner
from paas.infra.target import INFRA_JOB_KINDS, Target
from paas.infra.terraform import split_variables

log = logging.getLogger(__name__)

INFRA_KEY = "infra"


class AppRemover(Protocol):
    """What a forced destroy needs from the apps part."""

    def names(self) -> list[str]: ...

    def remove_all(self, ctx: JobContext) -> tuple[int, list[str]]: ...


class Infra:
    """Everything the API can ask about the infrastructure."""

    def __init__(self, target: Target, jobs: JobManager, steps: StepRunner, apps: AppRemover) -> None:
        self._target = target
        self._store = target.store
        self._jobs = jobs
        self._steps = steps
        self._apps = apps
        self._static = StaticEnvironment(target.settings)

    def view(self) -> dict[str, Any]:
        doc = self._target.record()
        name = self._target.current_environment(doc)
        if doc.get("applied") or doc.get("hosts"):
            hosts = list(doc.get("hosts") or [])
        else:
            hosts = self._static.hosts() if name == "local" else []
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

    def recover(self, interrupted: list[Doc]) -> None:
        """After a restart: an infrastructure job the server was killed in failed."""
        for job in interrupted:
            if job["kind"] in INFRA_JOB_KINDS:
                self._set_state(job, "failed")

    # ---- submitting ----
    def _submit(
        self, kind: str, state: str, work: Callable[[JobContext], JobOutcome], check: Callable[[Doc], None]
    ) -> dict[str, Any]:
        """Queue an infrastructure job. ``check(doc)`` runs in the transaction that stores the job: it
        may refuse it (raise) or change the infra record."""

        def prepare(job: Doc) -> None:
            busy = self._target.busy()
            if busy is not None:
                raise ConflictError(
                    f"the infrastructure is busy: job {busy['id']} ({busy['kind']}) is {busy['status']}",
                    code="infra_busy",
                )
            doc = self._target.record()
            previous = {"state": doc.get("state", "absent"), "environment": doc.get("environment")}
            check(doc)
            doc.update(previous=previous, state=state, job_id=job["id"], updated_at=now())
            self._store.put_infra(doc)

        def skipped(job: Doc) -> None:
            doc = self._target.record()
            if doc.get("job_id") == job["id"]:
                previous = doc.get("previous") or {}
                doc.update(state=previous.get("state", "absent"), environment=previous.get("environment"))
                self._store.put_infra(doc)

        job = self._jobs.submit(
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
        spec = parse_provision(body, self._target.settings.environment)
        environment = self._target.terraform(spec.environment)
        planned: dict[str, Any] = {}

        def check(doc: Doc) -> None:
            current = self._target.current_environment(doc)
            if spec.environment != current:
                if doc.get("applied"):
                    raise ConflictError(
                        f"the {current} environment is provisioned: destroy it first (POST /infra/destroy), "
                        f"then provision {spec.environment}",
                        code="environment_in_use",
                    )
                names = self._apps.names()
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

        return self._submit(
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
            names = self._apps.names()
            if names and not force:
                raise ConflictError(
                    f"{len(names)} app(s) exist ({', '.join(names[:10])}): delete them first or send "
                    '{"force": true}',
                    code="apps_exist",
                )
            target["environment"] = self._target.current_environment(doc)
            doc["environment"] = target["environment"]

        return self._submit(
            "destroy",
            "destroying",
            lambda ctx: self._run_destroy(ctx, force, target["environment"]),
            check,
        )

    # ---- running ----
    def _update(self, job_id: str, **changes: Any) -> None:
        """Change the infra record, if the job ``job_id`` still owns it."""
        with self._store.transaction():
            doc = self._target.record()
            if doc.get("job_id") == job_id:
                doc.update(changes, updated_at=now())
                self._store.put_infra(doc)

    def _set_state(self, job: Doc, state: str, **changes: Any) -> None:
        self._update(job["id"], state=state, **changes)

    def _run_provision(self, ctx: JobContext, name: str, variables: dict[str, Any]) -> JobOutcome:
        environment = self._target.terraform(name)
        plain, secret = split_variables(variables)
        found: dict[str, Any] = {}

        def applying() -> None:
            # From the apply on, Terraform may hold resources made with these values: a destroy must
            # run terraform, with them (the secret ones are not kept: their defaults apply then).
            self._update(ctx.job_id, applied=True, variables=plain, secret_variables=secret)

        try:
            with environment.session(variables) as session:
                failure = self._steps.run(ctx, session.provision_steps(), 0, session.redact, applying)
                if session.hosts or session.outputs:
                    found.update(hosts=session.hosts, outputs=session.outputs)
        except (StepError, OSError) as exc:
            failure = StepFailure(JobStatus.FAILED, "init", str(exc))
        if failure is None:
            return JobOutcome(JobStatus.SUCCEEDED, commit=lambda job: self._set_state(job, "ready", **found))
        return JobOutcome(
            failure.status,
            failed_step=failure.failed_step,
            message=failure.message,
            commit=lambda job: self._set_state(job, "failed", **found),
        )

    def _run_destroy(self, ctx: JobContext, force: bool, name: str) -> JobOutcome:
        number, problems = self._apps.remove_all(ctx) if force else (0, [])
        failure: StepFailure | None = None
        doc = self._target.record()
        environment = self._target.terraform(name)
        if not problems and not ctx.should_stop() and doc.get("applied"):
            try:
                with environment.session(dict(doc.get("variables") or {})) as session:
                    failure = self._steps.run(ctx, session.destroy_steps(), number, session.redact)
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
                commit=lambda job: self._set_state(
                    job, "absent", applied=False, hosts=[], outputs={}, variables={}, secret_variables=[]
                ),
            )
        return JobOutcome(
            JobStatus.CANCELED if ctx.canceled else JobStatus.FAILED,
            failed_step=failure.failed_step if failure is not None else None,
            message="; ".join(problems) or None,
            commit=lambda job: self._set_state(job, "failed"),
        )
