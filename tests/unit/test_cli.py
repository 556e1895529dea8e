"""The `paas` CLI against a real HTTP server (waitress on loopback) with the fake runner and executor."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from support.fakes import FakeExecutor, FakeRunner
from waitress.server import create_server

from paas.api.routes import create_app
from paas.cli import main
from paas.core.config import Settings

TOKEN = "cli-test-token-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, FakeRunner, Path]]:
    terraform = tmp_path / "bin" / "terraform"
    terraform.parent.mkdir()
    terraform.write_text("#!/bin/sh\nexit 99\n")  # the fake executor plays Terraform
    terraform.chmod(0o755)
    data = tmp_path / "data"
    settings = Settings(
        data_dir=data,
        api_token=None,
        monitor_interval=0,
        workers=2,
        shutdown_grace=1,
        terraform=str(terraform),
    )
    runner = FakeRunner()
    app = create_app(settings, runner=runner, executor=FakeExecutor(), token=TOKEN)
    port = _free_port()
    httpd = create_server(app, host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=httpd.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", runner, data
    httpd.close()
    app.close()


def paas(url: str, *args: str, token: str | None = TOKEN, env: dict[str, str] | None = None) -> Result:
    environ = {"PAAS_URL": url, "PAAS_API_TOKEN": token or "", **(env or {})}
    return CliRunner().invoke(main, list(args), env=environ, catch_exceptions=False)


def deploy_args(name: str = "web", port: int = 18080) -> list[str]:
    return [
        "deploy",
        name,
        "--repo",
        "https://git.example.com/org/web.git",
        "--port",
        str(port),
        "--container-port",
        "5000",
    ]


def test_deploy_wait_shows_tasks_then_apps_status_and_destroy(server: tuple[str, FakeRunner, Path]) -> None:
    url, runner, _ = server
    result = paas(url, *deploy_args(), "--env", "GREETING=hi=there", "--wait")
    assert result.exit_code == 0, result.output
    assert "deploying web: job" in result.output
    assert "Start playbooks/deploy.yml" in result.output  # a task event, shown as it happened
    assert "succeeded" in result.output
    assert runner.calls[-1].extravars["app_env"] == {"GREETING": "hi=there"}

    table = paas(url, "apps")
    assert table.exit_code == 0
    header, row = table.output.splitlines()[:2]
    assert header.split() == ["NAME", "STATE", "PORT", "COMMIT", "URL"]
    assert row.split()[:3] == ["web", "running", "18080"]

    listed = json.loads(paas(url, "apps", "--json").output)
    assert [a["name"] for a in listed["apps"]] == ["web"]
    status = json.loads(paas(url, "status", "web", "--json").output)
    assert status["state"] == "running" and status["port"] == 18080
    assert "state           running" in paas(url, "status", "web").output

    removed = paas(url, "destroy", "web", "--wait")
    assert removed.exit_code == 0, removed.output
    gone = paas(url, "status", "web")
    assert gone.exit_code == 1
    assert "no app named 'web' (404)" in gone.output


def test_deploy_with_resources(server: tuple[str, FakeRunner, Path]) -> None:
    url, runner, _ = server
    result = paas(
        url, *deploy_args("lim", 18090), "--memory", "256m", "--cpus", "0.5", "--pids", "64", "--wait"
    )
    assert result.exit_code == 0, result.output
    sent = runner.calls[-1].extravars
    assert (sent["app_memory"], sent["app_cpus"], sent["app_pids"]) == ("256m", 0.5, 64)
    status = json.loads(paas(url, "status", "lim", "--json").output)
    assert status["resources"] == {"memory": "256m", "cpus": 0.5, "pids": 64}
    bad = paas(url, *deploy_args("lim", 18090), "--memory", "1k")
    assert bad.exit_code == 1 and "resources.memory" in bad.output


def test_a_failed_deploy_exits_non_zero_with_the_step(server: tuple[str, FakeRunner, Path]) -> None:
    url, runner, _ = server
    runner.fail_deploy["web"] = ("build", "The command '/bin/sh -c false' returned a non-zero code: 1")
    result = paas(url, *deploy_args(), "--wait")
    assert result.exit_code == 1
    assert "failed" in result.output and "step 'build'" in result.output
    job = json.loads(paas(url, *deploy_args(), "--wait", "--json").output)
    assert job["status"] == "failed" and job["failed_step"] == "build"


def test_bad_input_names_every_field(server: tuple[str, FakeRunner, Path]) -> None:
    url, runner, _ = server
    result = paas(url, "deploy", "Bad", "--repo", "ext::sh", "--port", "80", "--container-port", "0")
    assert result.exit_code == 1
    for field in ("name:", "repo:", "port:", "container_port:"):
        assert field in result.output
    assert runner.calls == []
    usage = paas(url, *deploy_args(), "--env", "NOVALUE")
    assert usage.exit_code == 2 and "expected KEY=VALUE" in usage.output


def test_token_from_the_servers_data_dir_and_refusals(
    server: tuple[str, FakeRunner, Path], tmp_path: Path
) -> None:
    url, _, data = server
    # No PAAS_API_TOKEN: the CLI reads the token file the server keeps in its data dir.
    (data / "api-token").write_text(TOKEN + "\n")
    found = paas(url, "apps", token=None, env={"PAAS_DATA_DIR": str(data)})
    assert found.exit_code == 0, found.output
    wrong = paas(url, "apps", token="wrong-token-0123456789")
    assert wrong.exit_code == 1 and "(401)" in wrong.output
    down = paas(f"http://127.0.0.1:{_free_port()}", "apps")
    assert down.exit_code == 1 and "cannot reach the API" in down.output


def test_jobs_and_infra(server: tuple[str, FakeRunner, Path]) -> None:
    url, _, _ = server
    accepted: dict[str, Any] = json.loads(paas(url, *deploy_args(), "--json").output)
    job_id = accepted["job"]["id"]
    followed = paas(url, "job", job_id, "--wait", "--json")
    assert followed.exit_code == 0 and json.loads(followed.output)["status"] == "succeeded"
    shown = paas(url, "job", job_id)
    assert f"id           {job_id}" in shown.output
    assert paas(url, "job", "0" * 32).exit_code == 1

    refused = paas(url, "infra", "destroy")
    assert refused.exit_code == 1 and "(409)" in refused.output  # an app exists
    status = paas(url, "infra", "status")
    assert status.exit_code == 0 and "environment local" in status.output


def test_the_cli_never_prints_the_token(server: tuple[str, FakeRunner, Path]) -> None:
    url, _, data = server
    (data / "api-token").write_text(TOKEN + "\n")
    runs = [
        paas(url, "--help"),
        paas(url, "deploy", "--help"),
        paas(url, *deploy_args(), "--wait"),
        paas(url, *deploy_args(), "--json"),
        paas(url, "apps"),
        paas(url, "status", "missing"),
        paas(url, "apps", token=None, env={"PAAS_DATA_DIR": str(data)}),
        paas(f"http://127.0.0.1:{_free_port()}", "apps"),
        paas(url, "apps", token=TOKEN[::-1]),  # refused: the answer names no token either
    ]
    for result in runs:
        assert TOKEN not in result.output and TOKEN[::-1] not in result.output, result.output
