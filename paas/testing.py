"""A fake playbook runner for tests and demos: no Ansible, no Docker, the same contract as
:class:`paas.runner.AnsibleRunner` (results, events, cancel).

It remembers what it "deployed" so ``status.yml`` reports it, and can be told to fail a deploy at a
step, to report an app in another state, or to hold every run until :attr:`FakeRunner.gate` is set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
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
    # When set to an unset Event, every run waits for it (or for a cancel).
    gate: threading.Event | None = None
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
        if gate is not None:
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
