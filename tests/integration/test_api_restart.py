"""Stopping the server: kill -9 mid-deploy (jobs fail as interrupted, states tell the truth) and
SIGTERM (running jobs are canceled after the grace period, nothing left non-terminal)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import api_fixtures
from support.api_fixtures import Client, Server, docker, free_port, make_repo, unique_name, wait_until

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


def processes_mentioning(text: str) -> set[tuple[int, str]]:
    """Live processes whose command line or environment holds ``text``, as (pid, start time): read from
    /proc here, not with the product's own matcher (paas.core.processes), which is what is tested.
    Zombies are dead: a killed orphan may linger as one until init reaps it."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if stat[0] not in ("Z", "X") and (text in argv or text in environ):
            found.add((int(entry.name), stat[19]))  # field 22 of stat: the start time (pids are reused)
    return found


def live_processes() -> set[tuple[int, str]]:
    return processes_mentioning("")


def job_processes(data_dir: Path, job_id: str) -> set[tuple[int, str]]:
    """Processes working on job ``job_id`` of the server of ``data_dir``: the playbook and what it
    started (its run's directory is on their command line or in their environment)."""
    return processes_mentioning(str(data_dir / "artifacts" / job_id))


def assert_logged_in_order(log: str, *messages: str) -> None:
    """Each of ``messages`` ends a line of ``log``, in this order."""
    lines = log.splitlines()
    at = 0
    for message in messages:
        found = [i for i, line in enumerate(lines[at:], at) if line.endswith(message)]
        assert found, f"no line ending with {message!r} after line {at} of the log:\n{log[-3000:]}"
        at = found[0] + 1


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
    orphans = job_processes(server.data_dir, job_id)
    assert orphans
    assert jobs_in_db(server.data_dir)[job_id]["status"] == "running"

    server.start()
    # ...until the restarted server, holding the data dir, killed it before checking the apps: none of
    # those processes lives, and nothing works on that job any more.
    assert orphans & live_processes() == set()
    assert job_processes(server.data_dir, job_id) == set()
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
    assert job_processes(server.data_dir, running)  # the search finds the running job's processes
    assert server.stop(timeout=90) == 0
    assert processes_mentioning(str(server.data_dir)) == set()
    jobs = jobs_in_db(server.data_dir)
    assert jobs[running]["status"] == "canceled" and "server stopped" in jobs[running]["message"]
    assert jobs[queued]["status"] == "canceled"
    assert_logged_in_order(
        server.log(), "signal 15: stopping", "stopped accepting requests; finishing jobs", ": stopped"
    )
    server.start()
    assert client.job(running)["status"] == "canceled"
    assert client.status(name)["state"] == "failed"
    assert running_containers(name) == []
    assert server.stop() == 0
    wait_for_orphan_builds()
