"""A thin facade over ansible-runner: run one playbook, get a :class:`PlaybookResult`.

The only module that imports ansible_runner. A failed (or canceled, or timed out) playbook is a result,
not an exception. Each run gets a private data dir ``<data>/artifacts/<ident>/`` with the repository
root as project dir, so ``ansible.cfg`` applies.

Request data is data, never code: every string of a request's extra vars (keys and values, at any
depth) is written tagged ``!unsafe``, so Ansible never templates it — a value such as
``{{ lookup('pipe', 'id') }}`` or ``Zq{#S3cret`` reaches the host byte for byte. Only the server's own
``PAAS_EXTRA_VARS`` (the operator's) stay plain.

Secrets never stay on disk: the extra vars (app env values among them) go through a 0600 YAML file
passed as ``-e @file`` and deleted after the run; ansible-playbook gets an allowlist of the server's
environment variables (every other one is blanked, so ansible-runner's record of the run holds no
unrelated secret); facts are cached in memory only; task events are kept in memory only (the event
handler tells ansible-runner not to write them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import ansible_runner

from paas.contract import JOB_ID_PATTERN
from paas.core.config import Settings
from paas.core.files import write_private
from paas.core.processes import kill_run_processes
from paas.core.runs import CancelCheck, EventSink, RunStatus, TaskEvent
from paas.execution.extravars import render_extra_vars

log = logging.getLogger(__name__)

VARS_FILE = "vars.yml"
# The server's environment variables ansible-playbook may see (ansible-runner copies the whole
# environment of the server and records it in artifacts/<ident>/command): every other one is blanked.
# Cloud credentials are not here: only Terraform gets them (paas.infra.terraform).
ALLOWED_ENV = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ", "LANG", "SSH_AUTH_SOCK"})
ALLOWED_ENV_PREFIXES = ("LC_",)
# Variables of the server that would change what ansible-playbook runs or where: the platform sets its
# own ANSIBLE_* below, an operator's ANSIBLE_* (e.g. ANSIBLE_STRATEGY=linear, ANSIBLE_VERBOSITY) pass.
ALLOWED_ENV_PASS_PREFIXES = ("ANSIBLE_",)
RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MESSAGE_MAX = 8000
STDOUT_TAIL_LINES = 30


@dataclass(frozen=True)
class PlaybookRequest:
    """One playbook run. ``extravars`` may hold secrets: it is never logged nor kept on disk."""

    ident: str
    playbook: str
    extravars: Mapping[str, Any] = field(default_factory=dict, repr=False)
    # Facts (set_fact / ansible_facts) and module results to hand back, by fact name and module name.
    capture_facts: tuple[str, ...] = ()
    capture_actions: tuple[str, ...] = ()
    keep_artifacts: bool = True
    timeout: float | None = None
    # Another inventory than the server's (e.g. a Terraform environment's dynamic inventory).
    inventory: Path | None = None
    # Environment variables for ansible-playbook (and the inventory script), e.g. PAAS_TERRAFORM_ENV.
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class PlaybookResult:
    status: RunStatus
    rc: int | None = None
    failed_task: str | None = None
    failed_host: str | None = None
    # The failing task's ``msg`` (or the end of Ansible's output when no task failed).
    message: str | None = None
    # Set when the run failed before any task: "connect" for a host whose SSH host key is refused.
    failed_step: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    actions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.SUCCEEDED


class Runner(Protocol):
    """What the service needs from a playbook runner (the real one, or a fake in tests)."""

    def run(
        self, request: PlaybookRequest, *, on_event: EventSink, should_cancel: CancelCheck
    ) -> PlaybookResult:
        """Run ``request`` to its end, reporting task events; stop early when ``should_cancel()``."""
        ...


@dataclass
class _Failure:
    task: str
    host: str
    message: str
    ignored: bool


class _Collector:
    """Turns ansible-runner events into task events, captured facts and the failing task."""

    def __init__(self, request: PlaybookRequest, on_event: EventSink) -> None:
        self._request = request
        self._on_event = on_event
        self.facts: dict[str, Any] = {}
        self.actions: dict[str, dict[str, Any]] = {}
        self.failures: list[_Failure] = []

    def __call__(self, event: dict[str, Any]) -> bool:
        try:
            self._handle(event)
        except Exception:  # an event we cannot read must not stop the run
            log.exception("could not read an ansible-runner event of %s", self._request.ident)
        # False: ansible-runner writes no job_events/ file (results may hold more than we want on disk).
        return False

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind not in RESULT_EVENTS:
            return
        data = event.get("event_data") or {}
        raw_res = data.get("res")
        res: dict[str, Any] = raw_res if isinstance(raw_res, dict) else {}
        task = str(data.get("task") or data.get("task_action") or "")
        host = str(data.get("host") or data.get("remote_addr") or "")
        result = RESULT_EVENTS[kind]
        if result == "ok" and res.get("changed"):
            result = "changed"
        at = str(event.get("created") or data.get("end") or "")
        self._on_event(TaskEvent(at=at, task=task, host=host, result=result))
        if kind == "runner_on_ok":
            facts = res.get("ansible_facts")
            if isinstance(facts, dict):
                for name in self._request.capture_facts:
                    if name in facts:
                        self.facts[name] = facts[name]
            actions = {str(data.get("task_action") or ""), str(data.get("resolved_action") or "")}
            for wanted in self._request.capture_actions:
                if any(a == wanted or a.endswith("." + wanted) for a in actions):
                    self.actions[wanted] = {k: v for k, v in res.items() if not k.startswith("_ansible")}
        elif kind in ("runner_on_failed", "runner_on_unreachable"):
            msg = res.get("msg", "")
            self.failures.append(
                _Failure(
                    task=task,
                    host=host,
                    message=msg if isinstance(msg, str) else json.dumps(msg, default=str),
                    ignored=bool(data.get("ignore_errors")),
                )
            )


def _clip(text: str) -> str:
    return text if len(text) <= MESSAGE_MAX else "..." + text[-MESSAGE_MAX:]


def _stdout_tail(artifact_dir: Path) -> str:
    try:
        lines = (artifact_dir / "stdout").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    clean = [ANSI_RE.sub("", line).rstrip() for line in lines]
    return "\n".join(line for line in clean[-STDOUT_TAIL_LINES:] if line)


def pick_failure(failures: Iterable[_Failure]) -> _Failure | None:
    """The failure that explains the run: the last one not ignored (else the last one). A role that
    fails on purpose hands its reasons back as a fact, not as this message (``app_deploy_failure``)."""
    items = list(failures)
    for failure in reversed(items):
        if not failure.ignored:
            return failure
    return items[-1] if items else None


# An SSH host key that is not the pinned one. Mitogen (the default strategy) says the first; plain ssh
# says the second when the key changed, the third when no pinned key matches at all.
MITOGEN_HOST_KEY = "Host key checking is enabled, and SSH reported an unrecognized or mismatching host key."
SSH_HOST_KEY_CHANGED = "REMOTE HOST IDENTIFICATION HAS CHANGED"
SSH_HOST_KEY_UNKNOWN = "Host key verification failed"
HOST_KEY_ADVICE = (
    "SSH refused the host because its key is not the one pinned in the environment's known_hosts. "
    "If the host was rebuilt on purpose, provision again with its new host key; otherwise treat it "
    "as a possible man-in-the-middle"
)


def host_key_failure(host: str, message: str) -> str | None:
    """The job message for a connection refused over the host key ("host key changed for <host>: ..."),
    or None when ``message`` is about something else."""
    if MITOGEN_HOST_KEY in message or SSH_HOST_KEY_CHANGED in message:
        said = MITOGEN_HOST_KEY if MITOGEN_HOST_KEY in message else f"ssh: {SSH_HOST_KEY_CHANGED}"
        return f"host key changed for {host}: {HOST_KEY_ADVICE} ({said})"
    if SSH_HOST_KEY_UNKNOWN in message:
        return (
            f"host key not trusted for {host}: no key pinned in the environment's known_hosts matches "
            f"the host's (ssh: {SSH_HOST_KEY_UNKNOWN}); provision the environment with its host key"
        )
    return None


def _allowed_env(name: str) -> bool:
    return (
        name in ALLOWED_ENV
        or name.startswith(ALLOWED_ENV_PREFIXES)
        or (name.startswith(ALLOWED_ENV_PASS_PREFIXES) and name != "ANSIBLE_VAULT_PASSWORD_FILE")
    )


class AnsibleRunner:
    """Runs playbooks of the repository with ansible-runner."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def environment(self) -> dict[str, str]:
        """Variables set for ansible-playbook on top of the server's environment."""
        venv_bin = str(Path(sys.executable).parent)
        path = os.environ.get("PATH", "")
        env = {
            # ansible-playbook of this interpreter's venv, even when the venv is not on PATH.
            "PATH": venv_bin + (os.pathsep + path if path else ""),
            "ANSIBLE_CONFIG": str(self._settings.repo_root / "ansible.cfg"),
            # ansible-runner turns host key checking off unless told otherwise.
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_NOCOLOR": "1",
            "PAAS_DATA_DIR": str(self._settings.data_dir),
        }
        # ansible-runner starts from a copy of the server's environment: blank what is not allowed.
        for name in os.environ:
            if name not in env and not _allowed_env(name):
                env[name] = ""
        return env

    def _environment_for(self, request: PlaybookRequest) -> dict[str, str]:
        """:meth:`environment` plus the request's own variables (the inventory's settings, which the
        platform sets: ``PAAS_TERRAFORM_ENV`` and the like)."""
        env = self.environment()
        env.update({name: value for name, value in request.env.items() if name != "PAAS_API_TOKEN"})
        return env

    def run(
        self, request: PlaybookRequest, *, on_event: EventSink, should_cancel: CancelCheck
    ) -> PlaybookResult:
        settings = self._settings
        private = settings.artifacts_dir / request.ident
        if private.exists():
            shutil.rmtree(private)
        private.mkdir(mode=0o700, parents=True)
        vars_file = private / VARS_FILE
        collector = _Collector(request, on_event)
        try:
            write_private(vars_file, render_extra_vars(settings.extra_vars, request.extravars))
            runner = ansible_runner.run(
                private_data_dir=str(private),
                project_dir=str(settings.repo_root),
                playbook=str(settings.repo_root / request.playbook),
                inventory=str(request.inventory or settings.inventory),
                ident=request.ident,
                cmdline=shlex.join(["-e", f"@{vars_file}"]),
                envvars=self._environment_for(request),
                suppress_env_files=True,
                # Facts (ansible_env among them) never go to a cache on disk.
                fact_cache_type="memory",
                quiet=True,
                settings={"pexpect_timeout": 1, "suppress_ansible_output": True},
                timeout=int(request.timeout) if request.timeout else None,
                event_handler=collector,
                cancel_callback=should_cancel,
            )
            raw_status, rc = str(runner.status), runner.rc
        except Exception as exc:
            log.exception("ansible-runner could not run %s (%s)", request.playbook, request.ident)
            return PlaybookResult(status=RunStatus.FAILED, message=f"could not run {request.playbook}: {exc}")
        finally:
            kill_run_processes(settings.data_dir, request.ident)
            vars_file.unlink(missing_ok=True)
        status = {
            "successful": RunStatus.SUCCEEDED,
            "canceled": RunStatus.CANCELED,
            "timeout": RunStatus.TIMEOUT,
        }.get(raw_status, RunStatus.FAILED)
        result = PlaybookResult(status=status, rc=rc, facts=collector.facts, actions=collector.actions)
        if status is not RunStatus.SUCCEEDED:
            failure = pick_failure(collector.failures)
            if failure is not None:
                result.failed_task, result.failed_host = failure.task, failure.host
                result.message = _clip(failure.message)
                refused = host_key_failure(failure.host, failure.message)
                if refused is not None:
                    result.message, result.failed_step = refused, "connect"
            elif status is RunStatus.FAILED:
                tail = _stdout_tail(private / "artifacts" / request.ident)
                result.message = _clip(tail or f"{request.playbook} failed (rc {rc})")
        if not request.keep_artifacts:
            shutil.rmtree(private, ignore_errors=True)
        return result


def scrub_artifacts(artifacts_dir: Path) -> None:
    """After a crash: delete the secret vars files and event data runs may have left behind."""
    if not artifacts_dir.is_dir():
        return
    for private in artifacts_dir.iterdir():
        (private / VARS_FILE).unlink(missing_ok=True)
        for events in private.glob("artifacts/*/job_events"):
            shutil.rmtree(events, ignore_errors=True)


JOB_DIR_RE = re.compile("(" + JOB_ID_PATTERN.strip("^$") + r")(\.[0-9]+)?")


def prune_artifacts(artifacts_dir: Path, keep: int, *, in_use: Iterable[str] = ()) -> None:
    """Keep the artifact dirs of the ``keep`` most recent jobs (and those of jobs in use).

    Only job dirs (``<job id>`` and ``<job id>.<step>``) are pruned: other runs remove their own.
    """
    if not artifacts_dir.is_dir():
        return
    busy = set(in_use)

    def prunable(path: Path) -> bool:
        match = JOB_DIR_RE.fullmatch(path.name)
        return path.is_dir() and match is not None and match.group(1) not in busy

    dirs = sorted(
        (p for p in artifacts_dir.iterdir() if prunable(p)),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in dirs[keep:]:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
