"""The aws environment through the API against moto (an AWS emulator on 127.0.0.1): the server runs
terraform/aws with the credentials of its own environment, generates and pins the instance's host key,
and the credentials reach nothing but Terraform: not the database, the jobs, the server's log or the
run artifacts. The emulated instance cannot be connected to, so host.yml fails (quickly: its boot wait
is shortened); then the destroy needs only the stored variables."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import api_fixtures
from support.api_fixtures import FAST_VARS, Server
from support.components import AWS_PROVIDER_MIRROR, MOTO, SSH_KEYGEN, TERRAFORM, requires

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
DEBIAN_ACCOUNT = "136693071363"
SECRET_KEY = "canary-secret-access-key-7f3a9c"
SESSION_TOKEN = "canary-session-token-d41d8c"
pytestmark = pytest.mark.integration
# The mirror where the server finds it by itself (no registry in tests).
needs = requires(TERRAFORM, AWS_PROVIDER_MIRROR, MOTO, SSH_KEYGEN)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("moto")
    port = api_fixtures.free_port(19000, 19999)
    env = {"PATH": os.environ["PATH"], "HOME": str(workdir), "MOTO_ACCOUNT_ID": DEBIAN_ACCOUNT}
    with (workdir / "moto.log").open("wb") as log:
        process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=log, stderr=log
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (workdir / "moto.log").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, "moto did not start"
            time.sleep(0.1)
        import boto3

        ec2 = boto3.client(
            "ec2",
            region_name="eu-west-1",
            endpoint_url=endpoint,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        # The module's AMI lookup finds it: moto runs as the Debian publisher's account.
        ec2.register_image(Name="debian-12-amd64-20250610-2137")
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, moto: str) -> Iterator[Server]:
    env = {
        "AWS_ACCESS_KEY_ID": "AKIACANARY0000000000",
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_ENDPOINT_URL": moto,
        "AWS_EC2_METADATA_DISABLED": "true",
        "PAAS_EXTRA_VARS": json.dumps(FAST_VARS | {"paas_host_boot_timeout": 3}),
    }
    srv = Server(tmp_path_factory.mktemp("paas-infra-aws") / "data", env=env).start()
    yield srv
    assert srv.stop() == 0, srv.log()[-3000:]


def everything_written(server: Server) -> str:
    """Every file of the data dir (database, artifacts, state, ...) and the server's log."""
    texts = [server.log()]
    for path in server.data_dir.rglob("*"):
        if path.is_file() and ".terraform" not in path.parts:
            texts.append(path.read_text(errors="replace"))
    return "\n".join(texts)


def test_aws_environment_with_the_servers_credentials(server: Server, tmp_path: Path) -> None:
    client = server.client
    user_key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(user_key)], check=True)
    variables: dict[str, Any] = {
        "admin_cidr": "203.0.113.7/32",
        "public_key_path": f"{user_key}.pub",
        "region": "eu-west-1",
        "app_ports": [8080, 8443],
    }

    # A network wider than a /8 is refused by the module's validation, reported as the plan's failure.
    response = client.post(
        "/infra/provision", {"environment": "aws", "variables": variables | {"admin_cidr": "0.0.0.0/1"}}
    )
    assert response.status_code == 202, response.text
    job = client.wait_job(response.json()["job"]["id"], timeout=600)
    assert job["status"] == "failed" and job["failed_step"] == "plan", job
    assert "admin_cidr must have a prefix length of at least /8" in job["message"], job
    assert not any(t.startswith("Apply complete!") for t in [e["task"] for e in job["events"]])

    response = client.post("/infra/provision", {"environment": "aws", "variables": variables})
    assert response.status_code == 202, response.text
    job = client.wait_job(response.json()["job"]["id"], timeout=600)

    # Terraform created the host; host.yml cannot reach an emulated instance.
    assert job["status"] == "failed" and job["failed_step"] == "host", job
    tasks = [e["task"] for e in job["events"]]
    assert "plan: aws_instance.this will be created" in tasks
    assert any(t.startswith("Apply complete! Resources: ") for t in tasks)
    assert "Pin the SSH host keys: 1 key(s) in known_hosts/aws" in tasks
    public = (server.data_dir / "terraform" / "aws" / "ssh_host_ed25519_key.pub").read_text().split()
    infra = client.get("/infra").json()
    (host,) = infra["hosts"]
    assert (
        server.data_dir / "known_hosts" / "aws"
    ).read_text() == f"{host['address']} {public[0]} {public[1]}\n"
    assert host["host_key"] == f"{public[0]} {public[1]}" and host["user"] == "admin"
    assert infra["state"] == "failed" and infra["outputs"]["instance_id"].startswith("i-")
    assert infra["variables"] == {
        "admin_cidr": "203.0.113.7/32",
        "region": "eu-west-1",
        "app_ports": [8080, 8443],
    }
    assert infra["secret_variables"] == ["public_key_path"]

    # The destroy works from the stored variables alone.
    response = client.post("/infra/destroy", {})
    assert response.status_code == 202, response.text
    job = client.wait_job(response.json()["job"]["id"], timeout=600)
    assert job["status"] == "succeeded", job
    assert any(t.startswith("Destroy complete! Resources: ") for t in [e["task"] for e in job["events"]])
    assert client.get("/infra").json()["state"] == "absent"
    assert not (server.data_dir / "terraform" / "aws" / "ssh_host_ed25519_key").exists()

    # The credentials went to Terraform and nowhere else; the host's private key neither.
    written = everything_written(server)
    assert SECRET_KEY not in written and SESSION_TOKEN not in written
    assert "OPENSSH PRIVATE KEY" not in written
