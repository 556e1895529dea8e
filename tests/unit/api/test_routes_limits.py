"""Bounded work through the API (in-process, fake runner): one queued deploy per app (a newer one
supersedes it), at most PAAS_MAX_QUEUED queued jobs (429 with Retry-After), at most PAAS_MAX_APPS
apps (409 too_many_apps)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.fakes import FakeRunner, Reply, call_wsgi

from paas.api.openapi import openapi_document
from paas.api.routes import Application, create_app
from paas.core.config import Settings
from paas.core.jobs import QUEUE_FULL_RETRY_AFTER

TOKEN = "unit-test-token-0123456789"
TERMINAL = ("succeeded", "failed", "canceled")


def body(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "repo": "https://example.com/app.git", "port": port, "container_port": 5000}


class Api:
    def __init__(self, tmp_path: Path, runner: FakeRunner, **settings: Any) -> None:
        self.settings = Settings(
            data_dir=tmp_path, api_token=TOKEN, monitor_interval=0, workers=2, shutdown_grace=1, **settings
        )
        self.app: Application = create_app(self.settings, runner=runner)

    def __call__(self, method: str, path: str, payload: Any = None) -> Reply:
        return call_wsgi(self.app, method, path, body=payload, token=TOKEN)

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self("GET", f"/jobs/{job_id}").json()
        return job

    def deploy(self, name: str, port: int) -> str:
        reply = self("POST", "/apps/deploy", body(name, port))
        assert reply.status == 202, reply.json()
        return str(reply.json()["job"]["id"])

    def wait_job(self, job_id: str) -> dict[str, Any]:
        wait_for(lambda: self.job(job_id)["status"] in TERMINAL)
        return self.job(job_id)


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def runner() -> FakeRunner:
    """Deploys wait for ``runner.gate`` (set when the test ends)."""
    return FakeRunner(gate=threading.Event())


@pytest.fixture
def make_api(tmp_path: Path, runner: FakeRunner) -> Iterator[Callable[..., Api]]:
    """``make_api(**settings)``: an API with these settings, closed after the test."""
    made: list[Api] = []

    def make(**settings: Any) -> Api:
        made.append(Api(tmp_path, runner, **settings))
        return made[-1]

    yield make
    assert runner.gate is not None
    runner.gate.set()
    for api in made:
        api.app.close()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


# ---- one queued deploy per app ----
def test_a_newer_deploy_supersedes_the_queued_one(api: Api, runner: FakeRunner) -> None:
    running = api.deploy("web", 18080)
    wait_for(lambda: api.job(running)["status"] == "running")
    second = api.deploy("web", 18080)
    third = api.deploy("web", 18081)
    job = api.job(second)
    assert job["status"] == "canceled" and job["message"] == f"superseded by {third}"
    assert job["finished_at"] is not None
    queued = [j for j in api.app.service.store.list_jobs(statuses=("queued",)) if j["app"] == "web"]
    assert [j["id"] for j in queued] == [third]
    app = api("GET", "/apps/web/status").json()
    assert app["state"] == "pending" and app["last_deploy"]["job_id"] == third
    assert api.job(running)["status"] == "running"  # the running deploy is never replaced
    assert runner.gate is not None
    runner.gate.set()
    assert api.wait_job(running)["status"] == "succeeded"
    assert api.wait_job(third)["status"] == "succeeded"
    app = api("GET", "/apps/web/status").json()
    assert app["state"] == "running" and app["port"] == 18081 and app["last_deploy"]["job_id"] == third
    deploys = [c for c in runner.calls if c.playbook.endswith("deploy.yml")]
    assert len(deploys) == 2  # the superseded deploy never ran


def test_superseding_the_queued_first_deploy_keeps_the_app_pending(api: Api, runner: FakeRunner) -> None:
    """The replaced job's on_skipped runs: the app stays pending (not failed) for the new deploy."""
    blocker = api("POST", "/infra/provision").json()["job"]["id"]
    wait_for(lambda: api.job(blocker)["status"] == "running")
    first = api.deploy("web", 18080)
    second = api.deploy("web", 18080)
    assert api.job(first)["status"] == "canceled"
    assert api("GET", "/apps/web/status").json()["state"] == "pending"
    # Canceling the one left fails the new app, as before.
    assert api("POST", f"/jobs/{second}/cancel").json()["job"]["status"] == "canceled"
    assert api("GET", "/apps/web/status").json()["state"] == "failed"


def test_a_refused_deploy_leaves_the_queued_one(api: Api, runner: FakeRunner) -> None:
    running = api.deploy("web", 18080)
    wait_for(lambda: api.job(running)["status"] == "running")
    api.deploy("other", 18090)
    queued = api.deploy("web", 18080)
    reply = api("POST", "/apps/deploy", body("web", 18090))  # the port of 'other': 409
    assert reply.status == 409 and reply.json()["error"] == "port_in_use"
    assert api.job(queued)["status"] == "queued"


# ---- the queue ----
def test_429_when_the_queue_is_full(make_api: Callable[..., Api], runner: FakeRunner) -> None:
    api = make_api(max_queued=2)
    running = [api.deploy(f"run{i}", 18080 + i) for i in range(2)]  # two workers: both run
    wait_for(lambda: all(api.job(j)["status"] == "running" for j in running))
    api.deploy("q1", 18082)
    api.deploy("q2", 18083)
    reply = api("POST", "/apps/deploy", body("q3", 18084))
    assert reply.status == 429
    assert reply.headers["Retry-After"] == str(QUEUE_FULL_RETRY_AFTER)
    assert reply.headers["Content-Type"] == "application/json"
    payload = reply.json()
    assert payload["error"] == "too_many_jobs" and payload["fields"] == {}
    assert "at most 2" in payload["message"]
    assert api("GET", "/apps/q3/status").status == 404  # nothing was stored
    assert api("DELETE", "/apps/run0").status == 429
    # A redeploy of a queued app replaces its deploy: the queue does not grow, accepted.
    assert api("POST", "/apps/deploy", body("q2", 18085)).status == 202
    assert runner.gate is not None
    runner.gate.set()
    wait_for(lambda: api.app.service.jobs.idle())
    assert api("POST", "/apps/deploy", body("q3", 18084)).status == 202


# ---- the apps ----
def test_409_too_many_apps_and_redeploys_at_the_cap(make_api: Callable[..., Api], runner: FakeRunner) -> None:
    assert runner.gate is not None
    runner.gate.set()
    api = make_api(max_apps=2)
    for i in range(2):
        assert api.wait_job(api.deploy(f"app{i}", 18080 + i))["status"] == "succeeded"
    reply = api("POST", "/apps/deploy", body("app2", 18082))
    assert reply.status == 409
    payload = reply.json()
    assert payload["error"] == "too_many_apps" and set(payload["fields"]) == {"name"}
    assert api("GET", "/apps/app2/status").status == 404
    # Redeploys of existing apps still work at the cap.
    assert api.wait_job(api.deploy("app0", 18080))["status"] == "succeeded"
    # Room again once an app is deleted.
    deleted = api("DELETE", "/apps/app1").json()["job"]["id"]
    assert api.wait_job(deleted)["status"] == "succeeded"
    assert api.wait_job(api.deploy("app2", 18082))["status"] == "succeeded"


def test_the_document_lists_the_limits() -> None:
    paths = openapi_document()["paths"]
    for path, method in (("/apps/deploy", "post"), ("/apps/{name}", "delete"), ("/infra/provision", "post")):
        refused = paths[path][method]["responses"]["429"]
        assert "Retry-After" in refused["headers"]
    assert "too_many_apps" in paths["/apps/deploy"]["post"]["responses"]["409"]["description"]
