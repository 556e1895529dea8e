"""Infrastructure steps and their runner: what a provision or a destroy runs, in order, and how each
step's outcome becomes job events and, for the first that does not succeed, the job's failure.

A step is a program (:class:`CommandStep`: Terraform, the inventory script; argv, never a shell
string) or a playbook (:class:`PlaybookStep`: ``host.yml`` against the environment's inventory).
:class:`paas.infra.environments.Session` builds the list; :class:`StepRunner` runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paas.core.clock import now
from paas.core.jobs import JobContext, JobStatus
from paas.core.runs import RunStatus, TaskEvent
from paas.execution.commands import CommandExecutor, CommandRequest
from paas.execution.runner import PlaybookRequest, PlaybookResult, Runner
from paas.infra.terraform import summarise_error

log = logging.getLogger(__name__)

# The host of the events of commands the server runs itself (Terraform, the inventory script).
CONTROLLER = "controller"
COMMAND_EVENTS_MAX = 200
STDERR_SHOWN_LINES = 5


class StepError(Exception):
    """What a step produced cannot be used: the job fails with this message."""


@dataclass(frozen=True)
class PlaybookStep:
    """Run a playbook of the repository (against ``inventory``, default the server's).

    ``after`` gets the result (its ``capture_facts`` among them) whether the playbook succeeded or
    not; it may raise :class:`StepError` (then the step fails with that message) and returns the task
    of an event to record (None: none).
    """

    playbook: str
    description: str
    extravars: Mapping[str, Any] = field(default_factory=dict)
    inventory: Path | None = None
    # Environment variables for ansible-playbook and the inventory script.
    env: Mapping[str, str] = field(default_factory=dict)
    # The job's failed_step when this step fails.
    name: str = "host"
    capture_facts: tuple[str, ...] = ()
    after: Callable[[PlaybookResult], str | None] | None = None


@dataclass(frozen=True)
class CommandStep:
    """Run a program (argv, never a shell string) with the environment ``env`` (its whole environment).

    ``progress`` turns an output line into a job event ``(task, result)`` (or None); ``capture``
    collects stdout instead, for ``after``, which runs when the program succeeded, may raise
    :class:`StepError`, and returns the task of the step's closing event (None: no event).
    """

    argv: tuple[str, ...]
    description: str
    name: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    cwd: Path | None = None
    timeout: float | None = None
    capture: bool = False
    progress: Callable[[str], tuple[str, str] | None] | None = None
    after: Callable[[str], str | None] | None = None


Step = PlaybookStep | CommandStep


@dataclass(frozen=True)
class StepFailure:
    """How a step did not succeed."""

    status: JobStatus
    failed_step: str | None
    message: str | None


def _stderr_tail(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return " / ".join(lines[-STDERR_SHOWN_LINES:])[:1000]


class StepRunner:
    """Runs steps for a job: playbooks with the runner, programs with the command executor."""

    def __init__(self, runner: Runner, executor: CommandExecutor) -> None:
        self._runner = runner
        self._executor = executor

    def run(
        self,
        ctx: JobContext,
        steps: list[Step],
        first: int,
        redact: Callable[[str], str] = str,
        applying: Callable[[], None] | None = None,
    ) -> StepFailure | None:
        """Run the steps in order; returns how the first one that did not succeed failed (None: all
        did). Playbook steps are numbered from ``first`` (their artifact dirs ``<job>.<n>``);
        ``applying()`` runs just before an ``apply`` step."""
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
                failure = self._run_playbook(ctx, step, number, redact)
                number += 1
            if failure is not None:
                return failure
        return None

    def _run_playbook(
        self, ctx: JobContext, step: PlaybookStep, number: int, redact: Callable[[str], str]
    ) -> StepFailure | None:
        result = self._runner.run(
            PlaybookRequest(
                ident=ctx.job_id if number == 0 else f"{ctx.job_id}.{number}",
                playbook=step.playbook,
                extravars=dict(step.extravars),
                inventory=step.inventory,
                env=dict(step.env),
                capture_facts=step.capture_facts,
            ),
            on_event=ctx.record,
            should_cancel=ctx.should_stop,
        )
        failure = None
        if step.after is not None:
            # Whatever the playbook's outcome: it may have changed the hosts (e.g. a host key).
            try:
                task, outcome = step.after(result), "ok"
            except (StepError, OSError) as exc:
                task, outcome = step.description, "failed"
                failure = StepFailure(JobStatus.FAILED, step.name, redact(f"{step.description}: {exc}"))
            if task is not None:
                ctx.record(TaskEvent(at=now(), task=redact(task), host=CONTROLLER, result=outcome))
        if failure is None and not result.ok:
            canceled = result.status is RunStatus.CANCELED and ctx.canceled
            failure = StepFailure(
                JobStatus.CANCELED if canceled else JobStatus.FAILED,
                None if canceled else result.failed_step or step.name,
                result.message or f"{step.description}: {result.status.value}",
            )
        return failure

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

        result = self._executor.run(
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
