"""The aws environment's host key rotation through the API, against a real sshd.

moto's instances cannot be connected to, so a throwaway sshd on 127.0.0.1 plays the instance and a
fake ``terraform`` (a script of this test: init, plan, apply, output, destroy) reports it as the aws
module would: one ssh host whose ``host_key`` is the public half of the bootstrap key the server passed
as ``ssh_host_key``, and an ``instance_id``. The sshd starts with that bootstrap key, as cloud-init
would install it. Everything else is the product: the server pins the bootstrap key, runs host.yml
(real ansible-runner, plain ssh) with ``sshd_host_key_rotate: true``, the role makes a key on the
"host" (paths under the sshd's directory: this machine's /etc/ssh is never touched) and reloads sshd,
and the server pins the reported key. Public ports 19000-19999.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.api_fixtures import FAST_VARS, REPO, Server, free_port
from support.components import HOST_PYTHON, OPENSSH_SERVER, PKILL, ROOT, SSH_KEYGEN, requires
from support.sshd_fixtures import Sshd

pytestmark = pytest.mark.integration
needs = requires(OPENSSH_SERVER, SSH_KEYGEN, PKILL, ROOT, HOST_PYTHON)

FAKE_TERRAFORM = """\
#!{python}
# Plays `terraform` for terraform/aws: one host, the sshd of the test (world.json next to this file).
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
command = next(a for a in args if not a.startswith("-"))
root = Path(os.environ["TF_DATA_DIR"]).parent
state, planned = root / "fake-state.json", root / "fake-plan.json"
world = json.loads(Path(__file__).with_name("world.json").read_text())
if command == "init":
    Path(os.environ["TF_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
elif command == "plan":
    var_file = next(a for a in args if a.startswith("-var-file=")).split("=", 1)[1]
    variables = json.loads(Path(var_file).read_text())
    public = " ".join(variables["ssh_host_key"]["public_key"].split()[:2])
    planned.write_text(json.dumps(public))
    print("  # aws_instance.this will be created")
    print("Plan: 1 to add, 0 to change, 0 to destroy.")
elif command == "apply":
    planned.replace(state)
    print("Apply complete! Resources: 1 added, 0 changed, 0 destroyed.")
elif command == "output":
    outputs = {{}}
    if state.exists():
        host = dict(world["host"], host_key=json.loads(state.read_text()))
        outputs = {{
            "hosts": {{"sensitive": False, "value": {{"paas-aws": host}}}},
            "environment": {{"sensitive": False, "value": "aws"}},
            "instance_id": {{"sensitive": False, "value": world["instance_id"]}},
        }}
    print(json.dumps(outputs))
elif command == "destroy":
    state.unlink(missing_ok=True)
    print("Destroy complete! Resources: 1 destroyed.")
"""


class Host:
    """The 'instance': the sshd, its bootstrap key (the server's), and the fake Terraform's world."""

    def __init__(self, sshd: Sshd, data_dir: Path, bin_dir: Path) -> None:
        self.sshd = sshd
        self.data_dir = data_dir
        self.world = bin_dir / "world.json"
        self.made_key = sshd.workdir / "ssh_host_paas_ed25519_key"
        self.drop_in = sshd.drop_in_dir / "00-paas-host-key.conf"

    @property
    def role_vars(self) -> dict[str, Any]:
        """Where role sshd_host_key finds this sshd (instead of /etc/ssh and the ssh service)."""
        return {
            "sshd_host_key_path": str(self.made_key),
            "sshd_host_key_sshd_config": str(self.sshd.config),
            "sshd_host_key_drop_in": str(self.drop_in),
            "sshd_host_key_sshd_pid_file": str(self.sshd.pid_file),
        }

    def boot(self, instance_id: str) -> None:
        """A new instance: a fresh disk (no key made yet), sshd serving the bootstrap key."""
        self.sshd.stop()
        self.made_key.unlink(missing_ok=True)
        self.made_key.with_name(self.made_key.name + ".pub").unlink(missing_ok=True)
        self.drop_in.unlink(missing_ok=True)
        bootstrap = self.data_dir / "terraform" / "aws" / "ssh_host_ed25519_key"
        served = self.sshd.workdir / "host_key_bootstrap"
        shutil.copy(bootstrap, served)
        served.chmod(0o600)
        shutil.copy(bootstrap.with_name(bootstrap.name + ".pub"), served.with_name(served.name + ".pub"))
        self.world.write_text(
            json.dumps(
                {
                    "instance_id": instance_id,
                    "host": {
                        "address": "127.0.0.1",
                        "port": self.sshd.port,
                        "user": "root",
                        "private_key_file": str(self.sshd.user_key),
                        "connection": "ssh",
                        "groups": ["paas_hosts"],
                        "python_interpreter": "/usr/bin/python3",
                    },
                }
            )
        )
        self.sshd.start("bootstrap")

    def key(self, name: str) -> str:
        """``<type> <base64>`` of a key file's public half."""
        return " ".join(Path(name).with_name(Path(name).name + ".pub").read_text().split()[:2])

    def line(self, key: str) -> str:
        return f"[127.0.0.1]:{self.sshd.port} {key}\n"

    def ssh(self, known_hosts: Path) -> subprocess.CompletedProcess[str]:
        """A fresh connection (no multiplexing), the host verified against ``known_hosts`` only."""
        wait_for_port(self.sshd.port)
        return subprocess.run(
            [
                "ssh",
                *("-p", str(self.sshd.port), "-i", str(self.sshd.user_key)),
                *("-o", "BatchMode=yes", "-o", "ControlMaster=no", "-o", "ControlPath=none"),
                *("-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"),
                *("-o", "GlobalKnownHostsFile=/dev/null", "-F", "/dev/null"),
                "root@127.0.0.1",
                "echo connected",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )


def wait_for_port(port: int, timeout: float = 15) -> None:
    """sshd re-executes itself on SIGHUP: its port is closed for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        assert time.monotonic() < deadline, f"nothing listens on 127.0.0.1:{port}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    root = tmp_path_factory.mktemp("rotation")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    terraform = bin_dir / "terraform"
    terraform.write_text(FAKE_TERRAFORM.format(python=sys.executable))
    terraform.chmod(0o755)
    data_dir = root / "data"
    # The bootstrap key the server would generate: made now, so the "instance" can serve it.
    key = data_dir / "terraform" / "aws" / "ssh_host_ed25519_key"
    key.parent.mkdir(parents=True, mode=0o700)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "paas-aws", "-f", str(key)], check=True
    )
    sshd_dir = root / "sshd"
    sshd_dir.mkdir()
    instance = Host(Sshd(sshd_dir, free_port(19000, 19999)), data_dir, bin_dir)
    instance.boot("i-0000000000000000a")
    yield instance
    instance.sshd.stop()


@pytest.fixture(scope="module")
def server(host: Host) -> Iterator[Server]:
    # Docker and nginx are out of this test: docker_host only makes the platform's directories.
    extra = FAST_VARS | host.role_vars | {"docker_host_install_packages": False, "docker_host_services": []}
    env = {
        "PAAS_TERRAFORM": str(host.world.with_name("terraform")),
        "PAAS_TF_PLUGIN_MIRROR": "off",
        "PAAS_EXTRA_VARS": json.dumps(extra | {"paas_host_boot_timeout": 10}),
    }
    srv = Server(host.data_dir, env=env).start()
    yield srv
    assert srv.stop() == 0, srv.log()[-3000:]


def provision(server: Server) -> dict[str, Any]:
    body = {"environment": "aws", "variables": {"admin_cidr": "203.0.113.7/32", "public_key": "x"}}
    response = server.client.post("/infra/provision", body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = server.client.wait_job(response.json()["job"]["id"], timeout=300)
    return job


def test_host_yml_replaces_the_bootstrap_key_and_the_server_pins_the_new_one(
    host: Host, server: Server, tmp_path: Path
) -> None:
    known_hosts = server.data_dir / "known_hosts" / "aws"
    bootstrap = host.key(str(server.data_dir / "terraform" / "aws" / "ssh_host_ed25519_key"))
    old_known_hosts = tmp_path / "known_hosts.bootstrap"
    old_known_hosts.write_text(host.line(bootstrap))
    assert host.ssh(old_known_hosts).returncode == 0  # the instance serves the bootstrap key

    job = provision(server)

    assert job["status"] == "succeeded", job
    tasks = [e["task"] for e in job["events"]]
    assert "Pin the SSH host keys: 1 key(s) in known_hosts/aws" in tasks  # the bootstrap key, first
    made = host.key(str(host.made_key))
    assert made != bootstrap
    assert any(t.startswith("Pin the host key made on paas-aws: SHA256:") for t in tasks), tasks
    assert known_hosts.read_text() == host.line(made)
    assert server.client.get("/infra").json()["hosts"][0]["host_key"] == made

    # A fresh connection with the bootstrap key pinned is refused; with the new key it is verified.
    refused = host.ssh(old_known_hosts)
    assert refused.returncode == 255 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr, refused
    accepted = host.ssh(known_hosts)
    assert accepted.returncode == 0 and accepted.stdout == "connected\n", accepted

    # A reboot (every connection dropped, Ansible's too): sshd starts from its configuration on disk
    # and still serves the new key. Provisioning again: the outputs still report the bootstrap key,
    # yet the new key stays pinned, host.yml connects with it, and the host keeps its key.
    host.sshd.stop()
    host.sshd.start("bootstrap")
    assert host.ssh(old_known_hosts).returncode == 255
    job = provision(server)

    assert job["status"] == "succeeded", job
    tasks = [e["task"] for e in job["events"]]
    assert "Pin the SSH host keys: 1 key(s) in known_hosts/aws (paas-aws: the key made on the host)" in tasks
    assert any(t.endswith("(pinned already)") for t in tasks), tasks
    assert host.key(str(host.made_key)) == made
    assert known_hosts.read_text() == host.line(made)
    assert host.ssh(known_hosts).returncode == 0


def test_a_direct_host_yml_leaves_the_host_key_alone_unless_asked(host: Host, tmp_path: Path) -> None:
    # A new instance serving the bootstrap key, and an operator's own data dir with that key pinned.
    host.boot("i-0000000000000000b")
    bootstrap = host.key(str(host.data_dir / "terraform" / "aws" / "ssh_host_ed25519_key"))
    data_dir = tmp_path / "data"
    (data_dir / "known_hosts").mkdir(parents=True)
    (data_dir / "known_hosts" / "aws").write_text(host.line(bootstrap))
    outputs = tmp_path / "outputs.json"
    world = json.loads(host.world.read_text())
    outputs.write_text(
        json.dumps({"hosts": {"value": {"paas-aws": world["host"] | {"host_key": bootstrap}}}})
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PAAS_", "ANSIBLE_"))},
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_STRATEGY": "linear",
        "PAAS_TERRAFORM_ENV": "aws",
        "PAAS_DATA_DIR": str(data_dir),
        "PAAS_TERRAFORM_OUTPUT": str(outputs),
    }
    argv = [
        "ansible-playbook",
        *("-i", str(REPO / "inventory" / "terraform.py"), str(REPO / "playbooks" / "host.yml")),
        *("--tags", "sshd_host_key", "-e", json.dumps(host.role_vars)),
    ]

    run = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)

    assert run.returncode == 0, run.stdout[-3000:]
    assert not host.made_key.exists() and not host.drop_in.exists()
    assert host.ssh(data_dir / "known_hosts" / "aws").returncode == 0

    # Asked: the key is replaced (and the play shows the key to pin).
    run = subprocess.run(
        [*argv, "-e", "sshd_host_key_rotate=true"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert run.returncode == 0, run.stdout[-3000:]
    made = host.key(str(host.made_key))
    assert f"Pin {made} for paas-aws" in run.stdout
    assert host.ssh(data_dir / "known_hosts" / "aws").returncode == 255


def test_a_replaced_instance_is_pinned_with_the_bootstrap_key_then_gets_a_key_of_its_own(
    host: Host, server: Server
) -> None:
    # Terraform replaced the instance: it boots with the bootstrap key (user data), the record of the
    # key made on the old instance no longer applies.
    host.boot("i-0000000000000000c")
    before = (server.data_dir / "known_hosts" / "aws").read_text()

    job = provision(server)

    assert job["status"] == "succeeded", job
    tasks = [e["task"] for e in job["events"]]
    assert "Pin the SSH host keys: 1 key(s) in known_hosts/aws" in tasks
    made = host.key(str(host.made_key))
    assert host.line(made) != before
    assert (server.data_dir / "known_hosts" / "aws").read_text() == host.line(made)
    records = json.loads((server.data_dir / "terraform" / "aws" / "rotated_host_keys.json").read_text())
    assert records["paas-aws"]["instance_id"] == "i-0000000000000000c"
    assert host.ssh(server.data_dir / "known_hosts" / "aws").returncode == 0

    # The destroy forgets every key.
    response = server.client.post("/infra/destroy", {})
    assert response.status_code == 202, response.text
    assert server.client.wait_job(response.json()["job"]["id"], timeout=120)["status"] == "succeeded"
    assert not (server.data_dir / "known_hosts" / "aws").exists()
    assert not (server.data_dir / "terraform" / "aws" / "rotated_host_keys.json").exists()
