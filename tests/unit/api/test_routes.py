"""The API in-process (WSGI, no server) with the fake runner: every status code and the app states."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.fakes import FakeExecutor, FakeRunner, call_wsgi
from support.inprocess import InProcessApi

from paas.api.routes import create_app
from paas.core.config import Settings
from paas.core.runs import RunStatus
from paas.execution.runner import PlaybookRequest, PlaybookResult

TOKEN = "unit-test-token-0123456789"
SECRET = "s3cr3t-env-value-4711"
BODY: dict[str, Any] = {
    "name": "web",
    "repo": "https://git.example.com/org/web.git",
    "port": 18080,
    "container_port": 5000,
}


class Api(InProcessApi):
    def __init__(
        self, tmp_path: Path, runner: FakeRunner, executor: FakeExecutor | None = None, **settings: Any
    ) -> None:
        super().__init__(tmp_path, token=TOKEN, runner=runner, executor=executor, **settings)

    def deploy(self, **changes: Any) -> dict[str, Any]:
        reply = self("POST", "/apps/deploy", BODY | changes)
        assert reply.status == 202, reply.json()
        return self.wait_job(reply.json()["job"]["id"])

    def state(self, name: str = "web") -> str:
        return str(self("GET", f"/apps/{name}/status").json()["state"])


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def api(tmp_path: Path, runner: FakeRunner) -> Iterator[Api]:
    a = Api(tmp_path, runner)
    yield a
    a.app.close()


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.01)


# ---- 200 / 202 ----
def test_healthz_needs_no_token(api: Api) -> None:
    reply = api("GET", "/healthz", token=None)
    assert reply.status == 200 and reply.json() == {"status": "ok"}
    assert reply.headers["Content-Type"] == "application/json"


def test_deploy_lifecycle(api: Api, runner: FakeRunner) -> None:
    reply = api("POST", "/apps/deploy", BODY | {"env": {"SECRET": SECRET}, "ref": "main"})
    assert reply.status == 202
    body = reply.json()
    job_id = body["job"]["id"]
    assert reply.headers["Location"] == f"/jobs/{job_id}"
    assert body["app"]["state"] == "pending" and body["app"]["last_deploy"]["job_id"] == job_id
    assert body["job"]["status"] == "queued" and body["job"]["kind"] == "deploy"
    job = api.wait_job(job_id)
    assert job["status"] == "succeeded" and job["events"] and job["started_at"] and job["finished_at"]
    assert set(job["events"][0]) == {"at", "task", "host", "result"}
    status = api("GET", "/apps/web/status").json()
    assert status["state"] == "running"
    assert status["commit"] == runner.deployed["web"].commit
    assert status["url"] == "http://localhost:18080/"
    assert status["last_deploy"]["status"] == "succeeded"
    assert status["health"]["attempts"] == [{"code": 200, "latency_ms": 1.5}]
    assert set(status) == {
        "name", "state", "repo", "ref", "commit", "port", "container_port", "health_path", "url",
        "created_at", "updated_at", "last_deploy", "health", "resources",
    }  # fmt: skip
    assert status["resources"] == {"memory": "512m", "cpus": 1.0, "pids": 512}
    assert api("GET", "/apps").json() == {"apps": [status]}
    assert runner.calls[0].extravars["app_env"] == {"SECRET": SECRET}
    assert SECRET not in (api.tmp_path / "paas.json").read_text()

    reply = api("DELETE", "/apps/web")
    assert reply.status == 202 and reply.json()["job"]["kind"] == "delete"
    assert api.wait_job(reply.json()["job"]["id"])["status"] == "succeeded"
    assert api("GET", "/apps/web/status").status == 404
    assert api("GET", "/apps").json() == {"apps": []}
    assert "web" not in runner.deployed


def test_apps_are_sorted_by_name(api: Api) -> None:
    for i, name in enumerate(("zeta", "alpha", "mid")):
        api.deploy(name=name, port=18100 + i)
    assert [a["name"] for a in api("GET", "/apps").json()["apps"]] == ["alpha", "mid", "zeta"]


def test_redeploy_changes_the_commit(api: Api) -> None:
    api.deploy()
    first = api("GET", "/apps/web/status").json()["commit"]
    api.deploy(ref="v2")
    status = api("GET", "/apps/web/status").json()
    assert status["commit"] != first and status["ref"] == "v2" and status["state"] == "running"


def test_failed_first_deploy_is_failed_with_its_step(api: Api, runner: FakeRunner) -> None:
    runner.fail_deploy["web"] = ("build", "docker build failed\n--- last 50 lines ---\nerror")
    job = api.deploy()
    assert job["status"] == "failed" and job["failed_step"] == "build"
    status = api("GET", "/apps/web/status").json()
    assert status["state"] == "failed"
    assert status["last_deploy"]["failed_step"] == "build"
    assert "docker build failed" in status["last_deploy"]["message"]
    assert status["commit"] is None


def test_failed_redeploy_keeps_the_app_running(api: Api, runner: FakeRunner) -> None:
    api.deploy()
    commit = runner.deployed["web"].commit
    runner.fail_deploy["web"] = ("health", "unhealthy after 3 attempts")
    job = api.deploy(ref="broken")
    assert job["status"] == "failed" and job["failed_step"] == "health"
    status = api("GET", "/apps/web/status").json()
    assert status["state"] == "running"
    assert status["commit"] == commit and status["ref"] == ""
    assert status["last_deploy"]["status"] == "failed" and status["last_deploy"]["failed_step"] == "health"
    # The live check ran: status.yml for this app.
    assert runner.calls[-1].playbook == "playbooks/status.yml"
    assert runner.calls[-1].extravars == {"app_name": "web"}


def test_live_check_after_failure_can_report_unhealthy(api: Api, runner: FakeRunner) -> None:
    api.deploy()
    runner.deployed["web"].state = "unhealthy"
    runner.fail_deploy["web"] = ("clone", "repository not found")
    api.deploy()
    assert api.state() == "unhealthy"


def test_cancel_queued_and_running_jobs(api: Api, runner: FakeRunner) -> None:
    runner.gate = threading.Event()
    first = api("POST", "/apps/deploy", BODY).json()["job"]["id"]
    # Running before the second is sent: a queued deploy would be superseded by it.
    wait_for(lambda: api("GET", f"/jobs/{first}").json()["status"] == "running")
    second = api("POST", "/apps/deploy", BODY).json()["job"]["id"]
    reply = api("POST", f"/jobs/{second}/cancel")
    assert reply.status == 202 and reply.json()["job"]["status"] == "canceled"
    reply = api("POST", f"/jobs/{first}/cancel")
    assert reply.status == 202 and reply.json()["job"]["status"] == "running"
    assert api.wait_job(first)["status"] == "canceled"
    # Nothing was ever deployed: the live check says so.
    assert api.state() == "failed"
    assert api("GET", "/apps/web/status").json()["last_deploy"]["job_id"] == second
    reply = api("POST", f"/jobs/{first}/cancel")
    assert reply.status == 409 and reply.json()["error"] == "job_finished"


def test_canceling_the_only_queued_first_deploy_fails_the_app(api: Api, runner: FakeRunner) -> None:
    runner.gate = threading.Event()
    blocker = api("POST", "/infra/provision").json()["job"]["id"]
    wait_for(lambda: api("GET", f"/jobs/{blocker}").json()["status"] == "running")
    job = api("POST", "/apps/deploy", BODY).json()["job"]["id"]
    assert api("POST", f"/jobs/{job}/cancel").json()["job"]["status"] == "canceled"
    assert api.state() == "failed"
    runner.gate.set()
    api.wait_job(blocker)


def test_infra_provision_and_destroy(api: Api, runner: FakeRunner) -> None:
    infra = api("GET", "/infra").json()
    assert infra["environment"] == "local" and infra["state"] == "absent"
    assert infra["hosts"] == [{"name": "localhost", "address": "localhost", "connection": "local"}]
    job = api("POST", "/infra/provision").json()["job"]
    assert job["kind"] == "provision"
    assert api.wait_job(job["id"])["status"] == "succeeded"
    assert runner.calls[-1].playbook == "playbooks/host.yml"
    assert api("GET", "/infra").json()["state"] == "ready"
    api.deploy()
    reply = api("POST", "/infra/destroy", {})
    assert reply.status == 409 and reply.json()["error"] == "apps_exist"
    reply = api("POST", "/infra/destroy", {"force": True})
    assert reply.status == 202
    assert api.wait_job(reply.json()["job"]["id"])["status"] == "succeeded"
    assert api("GET", "/apps").json() == {"apps": []} and runner.deployed == {}
    assert api("GET", "/infra").json()["state"] == "absent"


def test_deploys_wait_while_the_infrastructure_changes(api: Api, runner: FakeRunner) -> None:
    runner.gate = threading.Event()
    infra = api("POST", "/infra/provision").json()["job"]["id"]
    wait_for(lambda: api("GET", f"/jobs/{infra}").json()["status"] == "running")
    job = api("POST", "/apps/deploy", BODY).json()["job"]["id"]
    # Queued because of the infrastructure job, not because no worker looked at it yet.
    assert api.app.service.jobs.waiting_on(job) == [infra]
    assert api("GET", f"/jobs/{job}").json()["status"] == "queued"
    reply = api("POST", "/infra/provision")
    assert reply.status == 409 and reply.json()["error"] == "infra_busy"
    runner.gate.set()
    assert api.wait_job(job)["status"] == "succeeded"


# ---- the monitor ----
def test_monitor_moves_apps_between_states(api: Api, runner: FakeRunner) -> None:
    api.deploy()
    runner.deployed["web"].state = "unhealthy"
    api.app.service.monitor.check_health()
    assert api.state() == "unhealthy"
    runner.deployed["web"].state = "running"
    api.app.service.monitor.check_health()
    assert api.state() == "running"
    del runner.deployed["web"]
    api.app.service.monitor.check_health()
    assert api.state() == "failed"


def test_monitor_discards_results_of_apps_with_a_new_job(api: Api, runner: FakeRunner) -> None:
    api.deploy()
    runner.deployed["web"].state = "unhealthy"
    real = runner.run

    def run_then_redeploy(request: PlaybookRequest, **kwargs: Any) -> PlaybookResult:
        result = real(request, **kwargs)
        if request.ident == "monitor":
            runner.gate = threading.Event()
            api("POST", "/apps/deploy", BODY)
        return result

    runner.run = run_then_redeploy  # type: ignore[method-assign]
    api.app.service.monitor.check_health()
    assert api.state() == "running"
    assert runner.gate is not None
    runner.gate.set()


def test_monitor_loop_runs_on_its_interval(tmp_path: Path, runner: FakeRunner) -> None:
    a = Api(tmp_path, runner, **{})
    a.app.close()
    b = Api(tmp_path / "b", runner)
    try:
        b.deploy()
    finally:
        b.app.close()
    settings = Settings(data_dir=tmp_path / "b", api_token=TOKEN, monitor_interval=0.05, shutdown_grace=1)
    app = create_app(settings, runner=runner)
    try:
        runner.deployed["web"].state = "unhealthy"
        wait_for(
            lambda: call_wsgi(app, "GET", "/apps/web/status", token=TOKEN).json()["state"] == "unhealthy"
        )
    finally:
        app.close()


# ---- restart ----
def test_restart_fails_interrupted_jobs_and_checks_their_apps(api: Api, runner: FakeRunner) -> None:
    api.deploy()
    # Simulate a server killed mid-deploy: a job left running in the database.
    store = api.app.service.store
    store.put_job(
        {
            "id": "f" * 32,
            "kind": "deploy",
            "app": "web",
            "status": "running",
            "created_at": "2999-01-01T00:00:00+00:00",
            "started_at": "2999-01-01T00:00:00+00:00",
            "finished_at": None,
            "failed_step": None,
            "message": None,
            "events": [],
        }
    )
    store.update_app("web", lambda d: d.update(last_deploy=d["last_deploy"] | {"job_id": "f" * 32}))
    (api.tmp_path / "artifacts" / ("f" * 32)).mkdir(parents=True)
    (api.tmp_path / "artifacts" / ("f" * 32) / "vars.yml").write_text(json.dumps({"app_env": {"K": SECRET}}))
    runner.deployed["web"].state = "unhealthy"
    api.restart()
    job = api("GET", f"/jobs/{'f' * 32}").json()
    assert job["status"] == "failed" and "interrupted by restart" in job["message"]
    assert not (api.tmp_path / "artifacts" / ("f" * 32) / "vars.yml").exists()
    wait_for(lambda: api.state() == "unhealthy")
    status = api("GET", "/apps/web/status").json()
    assert status["last_deploy"]["status"] == "failed"


# ---- 400 ----
def test_400_names_every_bad_field(api: Api) -> None:
    reply = api(
        "POST", "/apps/deploy", {"name": "Bad Name", "repo": "ext::sh -c touch% /tmp/pwned", "port": 80}
    )
    assert reply.status == 400
    body = reply.json()
    assert body["error"] == "invalid"
    assert set(body["fields"]) == {"name", "repo", "port", "container_port"}
    assert api("GET", "/apps").json() == {"apps": []}


@pytest.mark.parametrize("raw", [b"{", b"[1,", b"NaN", b'{"a": Infinity}', b"\xff\xfe", b"[" * 60000])
def test_400_for_malformed_json(api: Api, raw: bytes) -> None:
    reply = api("POST", "/apps/deploy", raw)
    assert reply.status == 400
    assert reply.json()["error"] == "invalid"


def test_413_for_a_body_over_the_limit_even_malformed(api: Api) -> None:
    reply = api("POST", "/apps/deploy", b"[" * 100000)
    assert reply.status == 413
    assert reply.json()["error"] == "payload_too_large"


def test_400_for_an_empty_body(api: Api) -> None:
    reply = api("POST", "/apps/deploy", b"")
    assert reply.status == 400 and reply.json()["fields"] == {"body": "is required"}


def test_400_for_unexpected_bodies_of_actions(api: Api) -> None:
    assert api("POST", "/infra/provision", {"x": 1}).status == 400
    assert api("POST", "/infra/destroy", {"force": "yes"}).status == 400


# ---- 401 ----
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/apps"),
        ("POST", "/apps/deploy"),
        ("GET", "/apps/web/status"),
        ("DELETE", "/apps/web"),
        ("GET", "/infra"),
        ("POST", "/infra/provision"),
        ("POST", "/infra/destroy"),
        ("GET", "/jobs/" + "0" * 32),
        ("POST", "/jobs/" + "0" * 32 + "/cancel"),
        ("GET", "/openapi.json"),
        ("GET", "/nowhere"),
    ],
)
@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x", TOKEN[:-1], TOKEN.upper()])
def test_401_without_the_right_token(
    api: Api, runner: FakeRunner, method: str, path: str, token: Any
) -> None:
    reply = api(method, path, BODY if method == "POST" else None, token=token)
    assert reply.status == 401, reply.body
    assert reply.json()["error"] == "unauthorized"
    assert reply.headers["Www-Authenticate"].startswith("Bearer")
    assert runner.calls == []


@pytest.mark.parametrize("header", ["Basic " + TOKEN, TOKEN, "Bearer", "bearer  "])
def test_401_for_other_schemes(api: Api, header: str) -> None:
    assert api("GET", "/apps", token=None, headers={"Authorization": header}).status == 401


def test_token_scheme_is_case_insensitive(api: Api) -> None:
    assert api("GET", "/apps", token=None, headers={"Authorization": "bearer " + TOKEN}).status == 200


# ---- 404 ----
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/apps/nope/status"),
        ("DELETE", "/apps/nope"),
        ("GET", "/apps/Bad_Name/status"),
        ("GET", "/apps/../../etc/status"),
        ("GET", "/jobs/" + "0" * 32),
        ("GET", "/jobs/not-an-id"),
        ("POST", "/jobs/" + "0" * 32 + "/cancel"),
        ("GET", "/nowhere"),
    ],
)
def test_404(api: Api, method: str, path: str) -> None:
    reply = api(method, path)
    assert reply.status == 404 and reply.json()["error"] == "not_found"


# ---- 405 ----
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/apps"),
        ("POST", "/apps"),
        ("GET", "/apps/deploy"),
        ("PATCH", "/apps/web"),
        ("DELETE", "/healthz"),
    ],
)
def test_405(api: Api, method: str, path: str) -> None:
    reply = api(method, path)
    assert reply.status == 405 and reply.json()["error"] == "method_not_allowed"
    assert reply.headers["Content-Type"] == "application/json"
    assert "Allow" in reply.headers


# ---- 409 ----
def test_409_port_held_by_another_app(api: Api) -> None:
    api.deploy()
    reply = api("POST", "/apps/deploy", BODY | {"name": "other"})
    assert reply.status == 409
    assert reply.json()["error"] == "port_in_use" and "port" in reply.json()["fields"]
    # The app itself may redeploy on its own port.
    assert api("POST", "/apps/deploy", BODY).status == 202


def test_409_port_of_a_pending_app(api: Api, runner: FakeRunner) -> None:
    runner.gate = threading.Event()
    assert api("POST", "/apps/deploy", BODY).status == 202
    assert api("POST", "/apps/deploy", BODY | {"name": "other"}).status == 409
    runner.gate.set()


def test_409_deploy_while_deleting(api: Api, runner: FakeRunner) -> None:
    api.deploy()
    runner.gate = threading.Event()
    assert api("DELETE", "/apps/web").status == 202
    assert api("POST", "/apps/deploy", BODY).json()["error"] == "app_deleting"
    assert api("DELETE", "/apps/web").status == 409
    runner.gate.set()


# ---- 413 / 415 ----
def test_413_for_bodies_over_64_kib(api: Api) -> None:
    big = BODY | {"env": {"PAD": "x" * (64 * 1024)}}
    reply = api("POST", "/apps/deploy", big)
    assert reply.status == 413 and reply.json()["error"] == "payload_too_large"
    assert api("GET", "/apps").json() == {"apps": []}


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_415_for_bodies_that_are_not_json(api: Api, content_type: Any) -> None:
    reply = api("POST", "/apps/deploy", BODY, content_type=content_type)
    assert reply.status == 415 and reply.json()["error"] == "unsupported_media_type"


def test_json_content_type_variants(api: Api) -> None:
    assert api("POST", "/apps/deploy", BODY, content_type="application/json; charset=utf-8").status == 202


# ---- 500 ----
def test_500_is_opaque_and_logged(
    api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode() -> None:
        raise RuntimeError("internal detail /etc/secret")

    monkeypatch.setattr(api.app.service.apps, "list_apps", explode)
    with caplog.at_level(logging.ERROR, logger="paas.api.routes"):
        reply = api("GET", "/apps")
    assert reply.status == 500
    assert reply.json() == {"error": "internal", "message": "internal error", "fields": {}}
    assert "internal detail" in caplog.text and "Traceback" in caplog.text


def test_a_failing_runner_is_a_failed_job(api: Api, runner: FakeRunner) -> None:
    def broken(request: PlaybookRequest) -> PlaybookResult:
        raise RuntimeError("boom")

    runner.handlers["playbooks/deploy.yml"] = broken
    job = api.deploy()
    assert job["status"] == "failed" and job["message"] == "internal error (see the server log)"


def test_runner_failure_outside_a_step(api: Api, runner: FakeRunner) -> None:
    runner.handlers["playbooks/deploy.yml"] = lambda r: PlaybookResult(
        RunStatus.FAILED, message="app_port 18080 is already in use on this host by another program"
    )
    job = api.deploy()
    assert job["failed_step"] is None and "already in use" in job["message"]
    assert api.state() == "failed"


def test_request_log_lines(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="paas.api.routes"):
        api("GET", "/apps/\x1b[31mx/status")
    line = [r.getMessage() for r in caplog.records if r.name == "paas.api.routes"][-1]
    assert line.startswith("GET /apps/?[31mx/status 404 ") and line.endswith("ms")
