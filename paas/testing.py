"""A fake playbook runner for tests and demos: no Ansible, no Docker, the same contract as
:class:`paas.runner.AnsibleRunner` (results, events, cancel).

It remembers what it "deployed" so ``status.yml`` reports it, and can be told to fail a deploy at a
step, to report an app in another state, or to hold every run until :attr:`FakeRunner.gate` is set.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from paas.clock import now
from paas.runner import CancelCheck, EventSink, PlaybookRequest, PlaybookResult, RunStatus, TaskEvent


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
                )
            entries = [self.report(apps[name])]
        else:
            entries = [self.report(apps[n]) for n in sorted(apps)]
        return PlaybookResult(RunStatus.SUCCEEDED, rc=0, facts={"app_status_report": entries})


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
