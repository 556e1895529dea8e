"""The current target: the environment the apps run on and the inventory their playbooks run against.

The infrastructure record (one document) holds the *current environment*: the Terraform environment
provisioned last (``local``, ``ssh`` or ``aws``), its state (``absent``, ``provisioning``, ``ready``,
``failed``, ``destroying``), whether Terraform may hold resources of it (``applied``: set when an
apply starts, cleared by a successful destroy), its hosts and outputs, and the variables of its last
apply (never the secret ones). App playbooks (deploy, remove, status) run against the current
environment's dynamic inventory once it was applied; before any apply, ``local`` means the server's
own inventory (``PAAS_INVENTORY``), and a remote environment has no hosts (deploys are refused).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from paas.core.config import Settings
from paas.core.errors import ConflictError
from paas.core.runs import CancelCheck, EventSink, RunStatus
from paas.core.store import ACTIVE_JOB_STATUSES, Doc, Store
from paas.execution.runner import PlaybookRequest, PlaybookResult, Runner
from paas.infra.environments import TerraformEnvironment

INFRA_JOB_KINDS = ("provision", "destroy")


class Target:
    """Reads the infrastructure record; runs app playbooks against the current environment's hosts."""

    def __init__(
        self, settings: Settings, store: Store, runner: Runner, environ: Mapping[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.runner = runner
        # The environment Terraform runs with (cloud credentials come from it): the process's.
        self.environ = environ

    def record(self) -> Doc:
        """The infrastructure record (``{"state": "absent"}`` before any provision)."""
        return self.store.get_infra() or {"state": "absent"}

    def current_environment(self, doc: Doc | None = None) -> str:
        """The environment the apps run on: the one provisioned last (kept across restarts in the
        infra record, until another is provisioned), else ``PAAS_ENVIRONMENT``."""
        record = self.record() if doc is None else doc
        return str(record.get("environment") or self.settings.environment)

    def terraform(self, name: str) -> TerraformEnvironment:
        return TerraformEnvironment(self.settings, name, self.environ)

    def busy(self) -> Doc | None:
        """The infrastructure job queued or running, if any."""
        for job in self.store.list_jobs(statuses=ACTIVE_JOB_STATUSES):
            if job["kind"] in INFRA_JOB_KINDS:
                return job
        return None

    def inventory(self) -> tuple[Path | None, dict[str, str]]:
        """The inventory of app playbooks (None: the server's) and the variables it needs; 409 when
        the current environment has no hosts."""
        doc = self.record()
        if doc.get("applied"):
            environment = self.terraform(str(doc["environment"]))
            return environment.inventory, environment.inventory_env()
        name = self.current_environment(doc)
        if name == "local":
            return None, {}
        raise ConflictError(
            f"the {name} environment is not provisioned: provision it first "
            f"(POST /infra/provision, paas infra provision --environment {name})",
            code="infra_absent",
        )

    def run_app_playbook(
        self, request: PlaybookRequest, *, on_event: EventSink, should_cancel: CancelCheck
    ) -> PlaybookResult:
        """Run an app playbook against the current environment's inventory."""
        try:
            inventory, env = self.inventory()
        except ConflictError as exc:
            return PlaybookResult(RunStatus.FAILED, message=exc.message)
        request = dataclasses.replace(request, inventory=inventory, env={**env, **request.env})
        return self.runner.run(request, on_event=on_event, should_cancel=should_cancel)
