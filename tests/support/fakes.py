"""Fakes for tests and demos: a playbook runner (no Ansible, no Docker, the same contract as
:class:`paas.execution.runner.AnsibleRunner`: results, events, cancel) and a command executor that plays
Terraform and the inventory script (:class:`FakeExecutor`).

The runner remembers what it "deployed" so ``status.yml`` reports it, and can be told to fail a deploy
at a step, to report an app in another state, or to hold every run until :attr:`FakeRunner.gate` is
set.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paas.core.clock import now
from paas.core.runs import CancelCheck, EventSink, RunStatus, TaskEvent
from paas.execution.commands import CommandExecutor, CommandRequest, CommandResult, LineSink
from paas.execution.runner import PlaybookRequest, PlaybookResult, Runner


@dataclass
class FakeApp:
    name: str
    port: int
    container_port: int
    health_path: str
    commit: str
    slot: str = "blue"
    state: str = "running"


@dataclass
class FakeRunner:
    """Scriptable stand-in for ansible-runner."""

    deployed: dict[str, FakeApp] = field(default_factory=dict)
    # app name -> (step, reason): the next deploys of that app fail there.
    fail_deploy: dict[str, tuple[str, str]] = field(default_factory=dict)
    # playbook -> function replacing the default behaviour.
    handlers: dict[str, Callable[[PlaybookRequest], PlaybookResult]] = field(default_factory=dict)
    # When set to an unset Event, runs of the ``gated`` playbooks wait for it (or for a cancel).
    gate: threading.Event | None = None
    gated: tuple[str, ...] = ("playbooks/deploy.yml", "playbooks/remove.yml", "playbooks/host.yml")
    delay: float = 0.0
    calls: list[PlaybookRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _commits: int = 0

    def run(
        self, request: PlaybookRequest, *, on_event: EventSink, should_cancel: CancelCheck
    ) -> PlaybookResult:
        with self._lock:
            self.calls.append(request)
        on_event(TaskEvent(at=now(), task=f"Start {request.playbook}", host="localhost", result="ok"))
        if self.delay:
            time.sleep(self.delay)
        gate = self.gate
        if gate is not None and request.playbook in self.gated:
            while not gate.wait(0.02):
                if should_cancel():
                    return PlaybookResult(RunStatus.CANCELED, rc=254)
        if should_cancel():
            return PlaybookResult(RunStatus.CANCELED, rc=254)
        handler = self.handlers.get(request.playbook)
        if handler is not None:
            return handler(request)
        name = str(request.extravars.get("app_name", ""))
        if request.playbook.endswith("deploy.yml"):
            return self._deploy(request, name, on_event)
        if request.playbook.endswith("remove.yml"):
            with self._lock:
                self.deployed.pop(name, None)
            return PlaybookResult(RunStatus.SUCCEEDED, rc=0)
        if request.playbook.endswith("status.yml"):
            return self._status(name)
        return PlaybookResult(RunStatus.SUCCEEDED, rc=0)

    def _deploy(self, request: PlaybookRequest, name: str, on_event: EventSink) -> PlaybookResult:
        v = request.extravars
        if name in self.fail_deploy:
            step, reason = self.fail_deploy[name]
            on_event(
                TaskEvent(at=now(), task=f"Fail the deploy at step {step}", host="localhost", result="failed")
            )
            return PlaybookResult(
                RunStatus.FAILED,
                rc=2,
                failed_task=f"Fail the deploy at step {step}",
                failed_host="localhost",
                message=f"deploy of '{name}' failed at step '{step}': {reason}",
                # As the app role hands a failure back (roles/app/tasks/fail.yml).
                facts={"app_deploy_failure": {"step": step, "reason": reason, "log_tail": ""}},
            )
        with self._lock:
            self._commits += 1
            commit = f"{self._commits:040x}"
            previous = self.deployed.get(name)
            slot = "green" if previous is not None and previous.slot == "blue" else "blue"
            self.deployed[name] = FakeApp(
                name=name,
                port=int(v["app_port"]),
                container_port=int(v["app_container_port"]),
                health_path=str(v.get("app_health_path", "/")),
                commit=commit,
                slot=slot,
            )
        on_event(TaskEvent(at=now(), task="Record what serves now", host="localhost", result="changed"))
        probe = {
            "healthy": True,
            "attempts": [{"code": 200, "latency_ms": 1.5, "error": ""}],
            "checked_at": now(),
        }
        record = {"record": {"active": {"commit": commit, "image": f"paas/{name}:{commit}", "slot": slot}}}
        return PlaybookResult(
            RunStatus.SUCCEEDED,
            rc=0,
            facts={"app_source_commit": commit},
            actions={"app_health_probe": probe, "app_record": record},
        )

    def report(self, app: FakeApp) -> dict[str, Any]:
        code = 200 if app.state == "running" else None
        return {
            "name": app.name,
            "host": "localhost",
            "state": app.state,
            "commit": app.commit,
            "image": f"paas/{app.name}:{app.commit}",
            "slot": app.slot,
            "port": app.port,
            "container_port": app.container_port,
            "health_path": app.health_path,
            "container": {"name": f"paas-{app.name}-{app.slot}", "status": "running", "restart_count": 0},
            "health": {"checked_at": now(), "attempts": [{"code": code, "latency_ms": 2.0, "error": ""}]},
        }

    def _status(self, name: str) -> PlaybookResult:
        with self._lock:
            apps = dict(self.deployed)
        if name:
            if name not in apps:
                return PlaybookResult(
                    RunStatus.FAILED,
                    rc=2,
                    failed_task="Fail for an app that is not on this host",
                    message=f"app '{name}' is not deployed on this host",
                    # As the app role says it: an empty report, then the failure.
                    facts={"app_status_report": []},
                )
            entries = [self.report(apps[name])]
        else:
            entries = [self.report(apps[n]) for n in sorted(apps)]
        return PlaybookResult(RunStatus.SUCCEEDED, rc=0, facts={"app_status_report": entries})


@dataclass
class SeenVariables:
    """A variables file as a fake Terraform read it: its content and its mode."""

    command: str
    environment: str
    values: dict[str, Any]
    mode: int


@dataclass
class FakeExecutor:
    """Scriptable stand-in for the command executor: plays ``terraform`` (init, plan, apply, output,
    destroy) with one fake state per environment, and ``inventory/terraform.py --known-hosts``.

    The hosts a plan creates follow the variables file the way the real modules do. ``fail`` makes a
    terraform command fail (``{"plan": "Error: ..."}``: the text is its stderr); ``gate`` holds every
    terraform command until set (or canceled).
    """

    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail: dict[str, str] = field(default_factory=dict)
    gate: threading.Event | None = None
    calls: list[CommandRequest] = field(default_factory=list)
    seen_variables: list[SeenVariables] = field(default_factory=list)
    _planned: dict[str, dict[str, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, request: CommandRequest, *, on_line: LineSink, should_cancel: CancelCheck) -> CommandResult:
        with self._lock:
            self.calls.append(request)
        argv = list(request.argv)
        if len(argv) > 1 and argv[1].endswith("terraform.py"):
            return self._known_hosts(request)
        environment = Path(argv[1].split("=", 1)[1]).name
        command = argv[2]
        gate = self.gate
        if gate is not None:
            while not gate.wait(0.02):
                if should_cancel():
                    return CommandResult(RunStatus.CANCELED, rc=-15)
        if should_cancel():
            return CommandResult(RunStatus.CANCELED, rc=-15)
        if command in self.fail:
            return CommandResult(RunStatus.FAILED, rc=1, stderr=self.fail[command])
        if command == "plan":
            variables = self._read_variables(argv, command, environment)
            hosts = self.hosts_for(environment, variables)
            with self._lock:
                self._planned[environment] = hosts
            for name in hosts:
                on_line(f"  # terraform_data.this[{name!r}] will be created")
            on_line(f"Plan: {len(hosts)} to add, 0 to change, 0 to destroy.")
        elif command == "apply":
            with self._lock:
                self.states[environment] = self._planned.pop(environment)
            on_line("terraform_data.this: Creation complete after 0s [id=fake]")
            on_line("Apply complete! Resources: 1 added, 0 changed, 0 destroyed.")
        elif command == "destroy":
            self._read_variables(argv, command, environment)
            with self._lock:
                self.states.pop(environment, None)
            on_line("terraform_data.this: Destruction complete after 0s")
            on_line("Destroy complete! Resources: 1 destroyed.")
        elif command == "output":
            return CommandResult(RunStatus.SUCCEEDED, rc=0, stdout=json.dumps(self.outputs(environment)))
        return CommandResult(RunStatus.SUCCEEDED, rc=0)

    def _read_variables(self, argv: list[str], command: str, environment: str) -> dict[str, Any]:
        path = Path(next(a for a in argv if a.startswith("-var-file=")).split("=", 1)[1])
        values: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        with self._lock:
            self.seen_variables.append(
                SeenVariables(command, environment, values, path.stat().st_mode & 0o777)
            )
        return values

    @staticmethod
    def hosts_for(environment: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        """The ``hosts`` output the real module would give for these variables."""

        def key(value: Any) -> str:
            return " ".join(str(value or "").split()[:2])

        if environment == "local":
            return {
                "localhost": {
                    "address": "localhost",
                    "port": 0,
                    "user": "",
                    "private_key_file": "",
                    "connection": "local",
                    "groups": ["paas_hosts"],
                    "host_key": "",
                    "python_interpreter": "",
                }
            }
        if environment == "ssh":
            return {
                str(variables.get("host_name", "paas-ssh")): {
                    "address": str(variables.get("address", "")),
                    "port": int(variables.get("port", 22)),
                    "user": str(variables.get("user", "")),
                    "private_key_file": str(variables.get("private_key_path", "")),
                    "connection": "ssh",
                    "groups": ["paas_hosts"],
                    "host_key": key(variables.get("host_key")),
                    "python_interpreter": str(variables.get("python_interpreter", "/usr/bin/python3")),
                }
            }
        host_key = variables.get("ssh_host_key") or {}
        return {
            str(variables.get("name", "paas-aws")): {
                "address": "198.51.100.7",
                "port": 22,
                "user": "admin",
                "private_key_file": str(variables.get("private_key_path", "")),
                "connection": "ssh",
                "groups": ["paas_hosts"],
                "host_key": key(host_key.get("public_key") if isinstance(host_key, dict) else ""),
                "python_interpreter": "/usr/bin/python3",
            }
        }

    def outputs(self, environment: str) -> dict[str, Any]:
        hosts = self.states.get(environment)
        if hosts is None:
            return {}
        return {
            "environment": {"sensitive": False, "type": "string", "value": environment},
            "hosts": {"sensitive": False, "type": "map", "value": hosts},
            "admin_password": {"sensitive": True, "type": "string", "value": "sensitive-output-value"},
        }

    def _known_hosts(self, request: CommandRequest) -> CommandResult:
        environment = request.env.get("PAAS_TERRAFORM_ENV", "local")
        lines = []
        for host in self.states.get(environment, {}).values():
            if host["connection"] == "ssh" and host["host_key"]:
                address = host["address"] if host["port"] == 22 else f"[{host['address']}]:{host['port']}"
                lines.append(f"{address} {host['host_key']}\n")
        return CommandResult(RunStatus.SUCCEEDED, rc=0, stdout="".join(lines))


@dataclass
class Reply:
    """An HTTP answer of :func:`call_wsgi`."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call_wsgi(
    app: Callable[..., Iterable[bytes]],
    method: str,
    path: str,
    *,
    body: Any = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = "application/json",
) -> Reply:
    """Call a WSGI application in-process (no server): ``body`` is JSON-encoded unless bytes."""
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(raw),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(raw)),
    }
    if content_type is not None:
        environ["CONTENT_TYPE"] = content_type
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    seen: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"] = int(status.split(" ", 1)[0])
        seen["headers"] = {name.title(): value for name, value in response_headers}

    chunks = app(environ, start_response)
    try:
        data = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return Reply(status=seen["status"], headers=seen["headers"], body=data)


def _follow_the_protocols() -> tuple[Runner, CommandExecutor]:
    """Never called: strict mypy checks here that the fakes stand in for the real runner and executor."""
    return FakeRunner(), FakeExecutor()
