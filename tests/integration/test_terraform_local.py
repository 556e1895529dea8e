"""terraform/local and terraform/ssh applied for real, then read back by inventory/terraform.py.

Both modules use built-in resources only, so no provider is downloaded. State and Terraform's data
dir go to a temporary PAAS_DATA_DIR, exactly as the service drives them; the ssh host is a
documentation address (TEST-NET-1) that is never connected to.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.components import ANSIBLE_INVENTORY, TERRAFORM, requires

pytestmark = pytest.mark.integration
needs = requires(TERRAFORM)

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "inventory" / "terraform.py"
MODULE_FILES = ["README.md", "examples", "main.tf", "outputs.tf", "variables.tf", "versions.tf"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def terraform_env(data_dir: Path, environment: str) -> dict[str, str]:
    """What the service sets: its own CLI config, a per-environment TF_DATA_DIR, no prompts."""
    cli_config = data_dir.parent / "terraformrc"
    cli_config.touch()
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(data_dir.parent),
        "TF_CLI_CONFIG_FILE": str(cli_config),
        "TF_DATA_DIR": str(data_dir / "terraform" / environment / ".terraform"),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
    }


def terraform(data_dir: Path, environment: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["terraform", f"-chdir={REPO_ROOT / 'terraform' / environment}", *args, "-no-color"],
        env=terraform_env(data_dir, environment),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"terraform {args[0]} failed:\n{result.stdout}\n{result.stderr}"
    return result


def init_and_apply(data_dir: Path, environment: str, *variables: str) -> None:
    state = data_dir / "terraform" / environment / "terraform.tfstate"
    terraform(data_dir, environment, "init", f"-backend-config=path={state}")
    terraform(data_dir, environment, "apply", "-auto-approve", *variables)
    assert state.is_file()


def inventory(data_dir: Path, environment: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The inventory as Ansible runs it, reading terraform itself (no PAAS_TERRAFORM_OUTPUT)."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(data_dir.parent),
        "PAAS_DATA_DIR": str(data_dir),
        "PAAS_TERRAFORM_ENV": environment,
        "TF_CLI_CONFIG_FILE": terraform_env(data_dir, environment)["TF_CLI_CONFIG_FILE"],
    }
    return subprocess.run(
        [str(SCRIPT), *(args or ("--list",))], env=env, capture_output=True, text=True, timeout=60
    )


def listed(data_dir: Path, environment: str) -> dict[str, Any]:
    result = inventory(data_dir, environment)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def assert_repository_untouched(environment: str) -> None:
    """init/apply wrote nothing beside the module: no .terraform/, no lock file, no state."""
    assert sorted(p.name for p in (REPO_ROOT / "terraform" / environment).iterdir()) == MODULE_FILES


def test_local_environment_applies_and_feeds_the_inventory(data_dir: Path) -> None:
    init_and_apply(data_dir, "local")

    outputs = json.loads(terraform(data_dir, "local", "output", "-json").stdout)
    assert outputs["environment"]["value"] == "local"
    assert outputs["hosts"]["value"] == {
        "localhost": {
            "address": "localhost",
            "port": 0,
            "user": "",
            "private_key_file": "",
            "connection": "local",
            "groups": ["paas_hosts"],
            "host_key": "",
            "python_interpreter": "",
        }
    }
    assert listed(data_dir, "local") == {
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
    assert_repository_untouched("local")


def test_ssh_environment_pins_its_host_key_and_destroy_empties_the_inventory(data_dir: Path) -> None:
    host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOcwv5GFGZkiRFfv0RYZ76N+bls+KLqD619RxQ1T4/Xo"
    variables = [
        "-var=address=192.0.2.10",
        "-var=port=2222",
        "-var=user=deploy",
        f"-var=private_key_path={data_dir / 'id_ed25519'}",
        f"-var=host_key={host_key} root@server",
        '-var=groups=["web"]',
    ]
    init_and_apply(data_dir, "ssh", *variables)

    known_hosts = inventory(data_dir, "ssh", "--known-hosts")
    assert known_hosts.returncode == 0, known_hosts.stderr
    assert known_hosts.stdout == f"[192.0.2.10]:2222 {host_key}\n"
    known_hosts_file = data_dir / "known_hosts" / "ssh"
    known_hosts_file.parent.mkdir()
    known_hosts_file.write_text(known_hosts.stdout, encoding="utf-8")

    assert listed(data_dir, "ssh") == {
        "_meta": {
            "hostvars": {
                "paas-ssh": {
                    "ansible_host": "192.0.2.10",
                    "ansible_port": 2222,
                    "ansible_user": "deploy",
                    "ansible_become": True,
                    "ansible_ssh_private_key_file": str(data_dir / "id_ed25519"),
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "ansible_ssh_common_args": (
                        f"-o UserKnownHostsFile={known_hosts_file} -o StrictHostKeyChecking=yes"
                    ),
                }
            }
        },
        "paas_hosts": {"hosts": ["paas-ssh"]},
        "web": {"hosts": ["paas-ssh"]},
    }
    assert_repository_untouched("ssh")

    terraform(data_dir, "ssh", "destroy", "-auto-approve", *variables)
    assert listed(data_dir, "ssh") == {"_meta": {"hostvars": {}}}


def test_ansible_reads_the_inventory(data_dir: Path) -> None:
    ansible_inventory = Path(sys.executable).with_name("ansible-inventory")
    ANSIBLE_INVENTORY.require()
    init_and_apply(data_dir, "local")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(data_dir.parent),
        "PAAS_DATA_DIR": str(data_dir),
        "PAAS_TERRAFORM_ENV": "local",
        "TF_CLI_CONFIG_FILE": terraform_env(data_dir, "local")["TF_CLI_CONFIG_FILE"],
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(data_dir.parent / "ansible-tmp"),
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
    }

    result = subprocess.run(
        [str(ansible_inventory), "-i", str(SCRIPT), "--list"],
        env=env,
        cwd=data_dir.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["paas_hosts"]["hosts"] == ["localhost"]
    assert document["_meta"]["hostvars"]["localhost"]["ansible_connection"] == "local"


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("-var=address=-oProxyCommand=sh", "address must be a DNS name"),
        ("-var=port=0", "port must be an integer from 1 to 65535"),
        ("-var=private_key_path= ", "private_key_path must be empty or a non-blank path"),
        ("-var=private_key_path={{ lookup('pipe', 'id') }}", "private_key_path must be empty or a non-blank"),
        ("-var=python_interpreter=python3", "python_interpreter must be empty or an absolute path"),
        ("-var=host_key=server ssh-ed25519 AAAAC3Nz", "host_key must be empty or a public key line"),
    ],
)
def test_ssh_environment_rejects_unsafe_input(data_dir: Path, variable: str, message: str) -> None:
    state = data_dir / "terraform" / "ssh" / "terraform.tfstate"
    terraform(data_dir, "ssh", "init", f"-backend-config=path={state}")
    defaults = ["-var=address=192.0.2.10", "-var=user=deploy", "-var=private_key_path=/k"]

    result = subprocess.run(
        ["terraform", f"-chdir={REPO_ROOT / 'terraform' / 'ssh'}", "plan", "-no-color", *defaults, variable],
        env=terraform_env(data_dir, "ssh"),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert message in " ".join(result.stderr.split())
