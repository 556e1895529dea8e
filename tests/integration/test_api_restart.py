"""Stopping the server: kill -9 mid-deploy (jobs fail as interrupted, states tell the truth) and
SIGTERM (running jobs are canceled after the grace period, nothing left non-terminal)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import api_fixtures
import pytest
from api_fixtures import Client, Server, docker, free_port, make_repo, unique_name, wait_until

from paas.core.processes import works_for

pytestmark = pytest.mark.integration

app_names = api_fixtures.app_names
base_image = api_fixtures.base_image

SLOW_SECONDS = 25
SLOW_BUILD = f"RUN sleep {SLOW_SECONDS} && echo paas-slow-build\n"


def wait_for_orphan_builds() -> None:
    """dockerd finishes a build whose client was killed: wait for it before the app is removed."""
    wait_until(
        lambda: "paas-slow-build" not in docker("ps", "--no-trunc", "--format", "{{.Command}}"),
        SLOW_SECONDS + 60,
        interval=1,
        what="orphaned docker builds to end",
    )


def wait_for_build(client: Client, job_id: str) -> None:
    """Until the job's deploy reached the image build (the slow step)."""
    wait_until(
        lambda: any(e["task"].startswith("Name the image") for e in client.job(job_id)["events"]),
        120,
        interval=0.5,
        what="the build to start",
    )


def running_containers(name: str) -> list[str]:
    return docker("ps", "--filter", f"label=paas.app={name}", "--format", "{{.Names}}").split()


def jobs_in_db(data_dir: Path) -> dict[str, Any]:
    db = json.loads((data_dir / "paas.json").read_text())
    return {doc["id"]: doc for doc in db.get("jobs", {}).values()}


def leftover_processes(data_dir: Path) -> list[int]:
    """Processes still running a job of the server of ``data_dir`` (playbooks, Terraform)."""
    return [
        int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and works_for(int(p.name), data_dir)
    ]


def test_kill_9_mid_redeploy_then_restart(tmp_path: Path, base_image: str, app_names: list[str]) -> None:
    server = Server(tmp_path / "data").start()
    client = server.client
    name = unique_name("kill")
    app_names.append(name)
    repo = tmp_path / "repo"
    first = make_repo(repo, "before the crash\n")
    body = {"name": name, "repo": f"file://{repo}", "port": free_port(), "container_port": 5000}
    _, job = client.deploy(body)
    assert job["status"] == "succeeded", job

    make_repo(repo, "never deployed\n", dockerfile_extra=SLOW_BUILD)
    accepted = client.post("/apps/deploy", body | {"env": {"TOKEN_LIKE": "kill9-secret-value"}}).json()
    job_id = accepted["job"]["id"]
    wait_for_build(client, job_id)
    server.kill()

    # The deploy outlived the server (its playbook is in a session of its own)...
    orphans = leftover_processes(server.data_dir)
    assert orphans
    assert jobs_in_db(server.data_dir)[job_id]["status"] == "running"

    server.start()
    # ...until the restarted server, holding the data dir, killed it before checking the apps.
    # (a killed orphan may linger as a zombie until init reaps it: alive means still running the job)
    assert set(orphans) & set(leftover_processes(server.data_dir)) == set()
    job = client.wait_job(job_id, timeout=30)
    assert job["status"] == "failed" and "interrupted by restart" in job["message"]
    # The check after the restart confirms the old release still serves.
    checks = [
        d
        for d in jobs_in_db(server.data_dir).values()
        if d["kind"] == "check" and d["created_at"] > job["created_at"]
    ]
    assert len(checks) == 1
    assert client.wait_job(checks[0]["id"], timeout=120)["status"] == "succeeded"
    status = client.status(name)
    assert status["state"] == "running"
    assert status["commit"] == first
    assert status["last_deploy"]["job_id"] == job_id and status["last_deploy"]["status"] == "failed"
    assert not list(server.data_dir.glob("artifacts/*/vars.json"))
    found = subprocess.run(
        ["grep", "-rlF", "kill9-secret-value", str(server.data_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.stdout == ""

    # The server works on: a new deploy of the same app goes through.
    make_repo(repo, "after the crash\n")
    _, job = client.deploy(body)
    assert job["status"] == "succeeded", job
    assert client.status(name)["state"] == "running"
    assert server.stop() == 0
    wait_for_orphan_builds()


def test_kill_9_mid_first_deploy_then_restart(tmp_path: Path, base_image: str, app_names: list[str]) -> None:
    server = Server(tmp_path / "data").start()
    client = server.client
    name = unique_name("kfirst")
    app_names.append(name)
    repo = tmp_path / "repo"
    make_repo(repo, "slow\n", dockerfile_extra=SLOW_BUILD)
    body = {"name": name, "repo": f"file://{repo}", "port": free_port(), "container_port": 5000}
    job_id = client.post("/apps/deploy", body).json()["job"]["id"]
    wait_for_build(client, job_id)
    server.kill()
    server.start()
    assert client.wait_job(job_id, timeout=30)["status"] == "failed"
    client.wait_state(name, "failed", timeout=120)
    assert running_containers(name) == []
    assert server.stop() == 0
    wait_for_orphan_builds()


def test_sigterm_cancels_running_jobs_after_the_grace_period(
    tmp_path: Path, base_image: str, app_names: list[str]
) -> None:
    server = Server(tmp_path / "data", env={"PAAS_SHUTDOWN_GRACE": "2"}).start()
    client = server.client
    name = unique_name("term")
    app_names.append(name)
    repo = tmp_path / "repo"
    make_repo(repo, "slow\n", dockerfile_extra=SLOW_BUILD)
    body = {"name": name, "repo": f"file://{repo}", "port": free_port(), "container_port": 5000}
    running = client.post("/apps/deploy", body).json()["job"]["id"]
    queued = client.post("/apps/deploy", body).json()["job"]["id"]
    wait_for_build(client, running)
    assert server.stop(timeout=90) == 0
    assert leftover_processes(server.data_dir) == []
    jobs = jobs_in_db(server.data_dir)
    assert jobs[running]["status"] == "canceled" and "server stopped" in jobs[running]["message"]
    assert jobs[queued]["status"] == "canceled"
    assert "stopping" in server.log() or "stopped" in server.log()
    server.start()
    assert client.job(running)["status"] == "canceled"
    assert client.status(name)["state"] == "failed"
    assert running_containers(name) == []
    assert server.stop() == 0
    wait_for_orphan_builds()
