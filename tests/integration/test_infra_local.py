"""The local environment through the API, for real: terraform/local applied by the server, host.yml on
this machine through inventory/terraform.py, an app deployed on it, destroy refused while it exists,
then forced (the app is removed first). One server for the module; public ports 19000-19999."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support import api_fixtures
from support.api_fixtures import REPO, Client, Server, docker, free_port, make_repo, unique_name
from support.components import TERRAFORM, requires

app_names = api_fixtures.app_names
base_image = api_fixtures.base_image

pytestmark = pytest.mark.integration
needs = requires(TERRAFORM)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("paas-infra-local") / "data").start()
    yield srv
    assert srv.stop() == 0, srv.log()[-3000:]


@pytest.fixture
def client(server: Server) -> Client:
    return server.client


def inventory(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """inventory/terraform.py as Ansible runs it for the server's local environment."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(data_dir.parent),
        "PAAS_DATA_DIR": str(data_dir),
        "PAAS_TERRAFORM_ENV": "local",
        "TF_CLI_CONFIG_FILE": str(data_dir / "terraform" / "terraformrc"),
    }
    return subprocess.run(
        [sys.executable, str(REPO / "inventory" / "terraform.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def tasks(job: dict[str, Any]) -> list[str]:
    return [event["task"] for event in job["events"]]


def test_provision_deploy_refused_destroy_forced_destroy(
    server: Server, client: Client, tmp_path: Path, app_names: list[str]
) -> None:
    assert client.get("/infra").json()["state"] == "absent"

    # Provision: terraform init, plan, apply, output, pinned keys, host.yml.
    response = client.post("/infra/provision", {})
    assert response.status_code == 202, response.text
    job = client.wait_job(response.json()["job"]["id"], timeout=600)
    assert job["status"] == "succeeded", job
    shown = tasks(job)
    assert "plan: terraform_data.this will be created" in shown
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in shown
    assert any(t.startswith("terraform_data.this: Creation complete") for t in shown)
    assert "Pin the SSH host keys: 0 key(s) in known_hosts/local" in shown
    assert {e["host"] for e in job["events"]} >= {"controller", "localhost"}
    infra = client.get("/infra").json()
    assert infra["environment"] == "local" and infra["state"] == "ready"
    assert [(h["name"], h["connection"]) for h in infra["hosts"]] == [("localhost", "local")]
    assert infra["outputs"] == {"environment": "local"}

    # The dynamic inventory reads what the server applied.
    listed = inventory(server.data_dir, "--list")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {
        "_meta": {
            "hostvars": {
                "localhost": {
                    "ansible_host": "localhost",
                    "ansible_connection": "local",
                    "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                }
            }
        },
        "paas_hosts": {"hosts": ["localhost"]},
    }
    # Nothing of a run is left behind: no variables file, no plan.
    assert list((server.data_dir / "terraform" / "local" / "run").iterdir()) == []

    # An app, deployed through that inventory.
    name = unique_name("infra")
    app_names.append(name)
    repo = tmp_path / "repo"
    make_repo(repo, "on local\n")
    port = free_port(19000, 19999)
    _, job = client.deploy(
        {"name": name, "repo": f"file://{repo}", "port": port, "container_port": 5000, "health_path": "/"}
    )
    assert job["status"] == "succeeded", job
    command = json.loads(
        (server.data_dir / "artifacts" / job["id"] / "artifacts" / job["id"] / "command").read_text()
    )
    assert str(REPO / "inventory" / "terraform.py") in command["command"]
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "on local\n"

    # Destroy: refused while the app exists, then forced (the app goes first).
    response = client.post("/infra/destroy", {})
    assert response.status_code == 409 and response.json()["error"] == "apps_exist"
    response = client.post("/infra/destroy", {"force": True})
    assert response.status_code == 202, response.text
    job = client.wait_job(response.json()["job"]["id"], timeout=600)
    assert job["status"] == "succeeded", job
    assert "Destroy complete! Resources: 1 destroyed." in tasks(job)
    assert client.get(f"/apps/{name}/status").status_code == 404
    assert docker("ps", "--all", "--quiet", "--filter", f"label=paas.app={name}") == ""
    infra = client.get("/infra").json()
    assert infra["environment"] == "local" and infra["state"] == "absent"
    listed = inventory(server.data_dir, "--list")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"_meta": {"hostvars": {}}}
    # Nothing in the repository's module dir but the module.
    assert sorted(p.name for p in (REPO / "terraform" / "local").iterdir()) == [
        "README.md",
        "examples",
        "main.tf",
        "outputs.tf",
        "variables.tf",
        "versions.tf",
    ]
