"""The health monitor against real containers: running -> unhealthy -> running -> failed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import api_fixtures
from support.api_fixtures import Client, Server, docker, free_port, make_repo, unique_name

pytestmark = pytest.mark.integration

app_names = api_fixtures.app_names
base_image = api_fixtures.base_image


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("paas-monitor") / "data", env={"PAAS_MONITOR_INTERVAL": "2"}).start()
    yield srv
    assert srv.stop() == 0, srv.log()[-3000:]


def serving_container(name: str) -> str:
    names = docker("ps", "--filter", f"label=paas.app={name}", "--format", "{{.Names}}").split()
    assert len(names) == 1, names
    return names[0]


def test_monitor_follows_the_app(server: Server, tmp_path: Path, app_names: list[str]) -> None:
    client: Client = server.client
    name = unique_name("mon")
    app_names.append(name)
    repo = tmp_path / "repo"
    make_repo(repo, "monitored\n")
    body = {
        "name": name,
        "repo": f"file://{repo}",
        "port": free_port(),
        "container_port": 5000,
        "health_path": "/health.html",
    }
    _, job = client.deploy(body)
    assert job["status"] == "succeeded", job
    client.wait_state(name, "running")
    container = serving_container(name)

    # The app stops answering its health path while its container keeps running: unhealthy.
    docker("exec", container, "rm", "/www/health.html")
    status = client.wait_state(name, "unhealthy", timeout=60)
    assert status["health"]["attempts"] and all(a["code"] == 404 for a in status["health"]["attempts"])
    assert status["health"]["checked_at"]
    assert status["commit"] == job_commit(client, name)

    # It answers again: running.
    docker("exec", container, "sh", "-c", "echo ok > /www/health.html")
    status = client.wait_state(name, "running", timeout=60)
    assert status["health"]["attempts"][-1]["code"] == 200

    # Its container is removed by hand: failed.
    docker("rm", "--force", container)
    client.wait_state(name, "failed", timeout=60)

    # A redeploy brings it back (the monitor does not fight the deploy).
    _, job = client.deploy(body)
    assert job["status"] == "succeeded", job
    client.wait_state(name, "running", timeout=30)
    assert client.wait_job(client.delete(f"/apps/{name}").json()["job"]["id"])["status"] == "succeeded"


def job_commit(client: Client, name: str) -> str:
    return str(client.status(name)["commit"])
