"""The ssh environment through the API, for real: a throwaway sshd on 127.0.0.1 (its own host key,
a generated user key) plays the remote server. The server applies terraform/ssh with the host key
pinned, runs host.yml over SSH, deploys an app over SSH (Mitogen), and reports a changed host key as
such, with Mitogen (a deploy) and with plain ssh (host.yml). Public ports 19000-19999."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support import api_fixtures
from support.api_fixtures import Client, Server, free_port, make_repo, unique_name
from support.components import OPENSSH_SERVER, ROOT, SSH_KEYGEN, TERRAFORM, requires
from support.sshd_fixtures import Sshd

app_names = api_fixtures.app_names
base_image = api_fixtures.base_image

pytestmark = pytest.mark.integration
needs = requires(TERRAFORM, OPENSSH_SERVER, SSH_KEYGEN, ROOT)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    daemon = Sshd(tmp_path_factory.mktemp("sshd"), free_port(19000, 19999))
    daemon.start("first")
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("paas-infra-ssh") / "data").start()
    yield srv
    assert srv.stop() == 0, srv.log()[-3000:]


def provision(client: Client, sshd: Sshd, host_key: str) -> dict[str, Any]:
    response = client.post(
        "/infra/provision",
        {
            "environment": "ssh",
            "variables": {
                "address": "127.0.0.1",
                "port": sshd.port,
                "user": "root",
                "private_key_path": str(sshd.user_key),
                "host_key": host_key,
            },
        },
    )
    assert response.status_code == 202, response.text
    return client.wait_job(response.json()["job"]["id"], timeout=900)


def test_ssh_environment_pins_deploys_and_refuses_a_changed_host_key(
    server: Server, sshd: Sshd, tmp_path: Path, app_names: list[str]
) -> None:
    client = server.client
    known_hosts = server.data_dir / "known_hosts" / "ssh"

    # Without the host key there is nothing to pin: refused, naming the variable.
    response = client.post(
        "/infra/provision",
        {"environment": "ssh", "variables": {"address": "127.0.0.1", "port": sshd.port, "user": "root"}},
    )
    assert response.status_code == 400, response.text
    assert "variables.host_key" in response.json()["fields"]

    # Provision: the key is pinned before host.yml connects.
    job = provision(client, sshd, sshd.host_key("first"))
    assert job["status"] == "succeeded", job
    tasks = [e["task"] for e in job["events"]]
    assert "Pin the SSH host keys: 1 key(s) in known_hosts/ssh" in tasks
    assert {e["host"] for e in job["events"]} >= {"controller", "paas-ssh"}
    assert known_hosts.read_text() == f"[127.0.0.1]:{sshd.port} {sshd.host_key('first').rsplit(' ', 1)[0]}\n"
    infra = client.get("/infra").json()
    assert infra["environment"] == "ssh" and infra["state"] == "ready"
    assert [(h["name"], h["address"], h["port"], h["user"]) for h in infra["hosts"]] == [
        ("paas-ssh", "127.0.0.1", sshd.port, "root")
    ]
    assert infra["variables"] == {"address": "127.0.0.1", "port": sshd.port, "user": "root"}
    assert infra["secret_variables"] == ["host_key", "private_key_path"]
    database = (server.data_dir / "paas.json").read_text()
    assert str(sshd.user_key) not in database and str(sshd.user_key) not in str(job)

    # An app deployed over SSH (Mitogen) answers.
    name = unique_name("ssh")
    app_names.append(name)
    repo = tmp_path / "repo"
    make_repo(repo, "over ssh\n")
    port = free_port(19000, 19999)
    body = {"name": name, "repo": f"file://{repo}", "port": port, "container_port": 5000}
    _, job = client.deploy(body)
    assert job["status"] == "succeeded", job
    assert {e["host"] for e in job["events"]} == {"paas-ssh"}
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "over ssh\n"

    # The server comes back with another host key: the next job fails, saying so (Mitogen).
    sshd.stop()
    sshd.start("second")
    _, job = client.deploy(body)
    assert job["status"] == "failed", job
    assert job["failed_step"] == "connect", job
    assert job["message"].startswith("host key changed for paas-ssh: "), job
    assert client.status(name)["state"] == "running"  # the old release still serves
    assert known_hosts.read_text().endswith(f"{sshd.host_key('first').rsplit(' ', 1)[0]}\n")

    # Plain ssh (host.yml runs the linear strategy) says it too, when provisioning with the old key.
    job = provision(client, sshd, sshd.host_key("first"))
    assert job["status"] == "failed", job
    assert job["failed_step"] == "connect", job
    assert job["message"].startswith("host key changed for paas-ssh: "), job
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in job["message"]
    assert client.get("/infra").json()["state"] == "failed"

    # The server was rebuilt on purpose: provisioning with its new key pins it, and all works again.
    job = provision(client, sshd, sshd.host_key("second"))
    assert job["status"] == "succeeded", job
    response = client.delete(f"/apps/{name}")
    assert response.status_code == 202
    assert client.wait_job(response.json()["job"]["id"])["status"] == "succeeded"
    assert client.get(f"/apps/{name}/status").status_code == 404

    # Destroy: nothing left to pin.
    response = client.post("/infra/destroy", {})
    assert response.status_code == 202, response.text
    job = client.wait_job(response.json()["job"]["id"], timeout=600)
    assert job["status"] == "succeeded", job
    assert client.get("/infra").json() | {"updated_at": None, "job_id": None} == {
        "environment": "ssh",
        "state": "absent",
        "hosts": [],
        "outputs": {},
        "variables": {},
        "secret_variables": [],
        "updated_at": None,
        "job_id": None,
    }
    assert not known_hosts.exists()
    # A remote environment that is not provisioned has no hosts: deploys are refused.
    response = client.post("/apps/deploy", body)
    assert response.status_code == 409 and response.json()["error"] == "infra_absent"
