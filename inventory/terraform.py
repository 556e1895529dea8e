#!/usr/bin/env python3
"""Ansible dynamic inventory read from the outputs of a Mini PaaS Terraform environment.

Every root module in terraform/<env>/ emits the same contract: an output `hosts`, a map of
inventory hostname to {address, port, user, private_key_file, connection, groups, host_key,
python_interpreter}, and an output `environment`. This script turns it into Ansible's dynamic
inventory JSON:

    inventory/terraform.py --list           all groups and `_meta.hostvars`
    inventory/terraform.py --host NAME      the variables of one host ({} when unknown)
    inventory/terraform.py --known-hosts    known_hosts lines for the hosts' pinned host keys

Environment:
    PAAS_TERRAFORM_ENV     environment to read (default "local"): terraform/<env>/
    PAAS_DATA_DIR          platform data dir (default $XDG_DATA_HOME/paas or ~/.local/share/paas);
                           Terraform's data dir is <data>/terraform/<env>/.terraform
    PAAS_TERRAFORM_OUTPUT  a file holding `terraform output -json`, read instead of running terraform
    PAAS_TERRAFORM         the terraform executable (default: `terraform` on PATH)

SSH hosts are pinned to <data>/known_hosts/<env> (StrictHostKeyChecking=yes) when that file exists;
host key checking is never turned off. --known-hosts prints the keys the outputs report; for aws that is
the bootstrap key, which playbooks/host.yml replaces with a key made on the host: the Mini PaaS server
then pins that key instead (it keeps a record of it, see paas/infra/host_keys.py), so do not overwrite a
known_hosts file with this output once the key was replaced.

An SSH user other than root gets `ansible_become: true` (the roles need root). `python_interpreter`
(optional in the contract: "" when absent) becomes `ansible_python_interpreter` of an SSH host; a
local host always runs the controller's Python.
Values become Ansible variables, which Ansible templates: none may hold a Jinja delimiter.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ENVIRONMENT = "local"
HOST_GROUP = "paas_hosts"
TERRAFORM_TIMEOUT_SECONDS = 120

ENVIRONMENT_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,31}")
HOSTNAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
GROUP_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
RESERVED_GROUPS = frozenset({"all", "ungrouped", "_meta"})
# A DNS name or an IP address; never starts with '-', so it cannot be read as an ssh option.
ADDRESS_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]{0,252}")
HOST_KEY_PATTERN = re.compile(
    r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9-]+@openssh\.com) [A-Za-z0-9+/]+=*"
)
# An absolute path: no spaces, quotes or Jinja delimiters.
INTERPRETER_PATTERN = re.compile(r"/[A-Za-z0-9._/+-]{0,254}")
JINJA_PATTERN = re.compile(r"\{[{%#]|[}%#]\}")
CONNECTIONS = ("local", "ssh")
HOST_FIELDS = ("address", "port", "user", "private_key_file", "connection", "groups", "host_key")


class InventoryError(Exception):
    """A problem reading the environment, reported as one line on stderr."""


@dataclass(frozen=True)
class Settings:
    """Where the inventory of one environment comes from."""

    environment: str
    data_dir: Path
    output_file: Path | None

    @property
    def module_dir(self) -> Path:
        return REPO_ROOT / "terraform" / self.environment

    @property
    def terraform_data_dir(self) -> Path:
        return self.data_dir / "terraform" / self.environment / ".terraform"

    @property
    def known_hosts_file(self) -> Path:
        return self.data_dir / "known_hosts" / self.environment


@dataclass(frozen=True)
class Host:
    """One entry of the `hosts` output."""

    name: str
    address: str
    port: int
    user: str
    private_key_file: str
    connection: str
    groups: tuple[str, ...]
    host_key: str
    python_interpreter: str = ""


def read_settings(environ: Mapping[str, str]) -> Settings:
    """Settings from PAAS_TERRAFORM_ENV, PAAS_DATA_DIR, XDG_DATA_HOME and PAAS_TERRAFORM_OUTPUT."""
    environment = environ.get("PAAS_TERRAFORM_ENV") or DEFAULT_ENVIRONMENT
    if not ENVIRONMENT_PATTERN.fullmatch(environment):
        raise InventoryError(
            f"PAAS_TERRAFORM_ENV={environment!r} is not an environment name "
            "(a lowercase letter, then up to 31 lowercase letters, digits, '_' or '-')"
        )
    # The same rule as the service's settings (paas/core/config.py).
    if environ.get("PAAS_DATA_DIR"):
        data_dir = Path(environ["PAAS_DATA_DIR"])
    elif environ.get("XDG_DATA_HOME"):
        data_dir = Path(environ["XDG_DATA_HOME"]) / "paas"
    else:
        data_dir = Path(environ.get("HOME") or Path.home()) / ".local" / "share" / "paas"
    data_dir = data_dir.expanduser().resolve()
    output = environ.get("PAAS_TERRAFORM_OUTPUT")
    return Settings(environment, data_dir, Path(output).expanduser() if output else None)


def terraform_command(settings: Settings) -> list[str]:
    """The argv that prints the environment's outputs (run with terraform_environ)."""
    return ["terraform", f"-chdir={settings.module_dir}", "output", "-json", "-no-color"]


def terraform_environ(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment plus Terraform's data dir for this environment."""
    return {
        **environ,
        "TF_DATA_DIR": str(settings.terraform_data_dir),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
    }


def read_terraform_output(settings: Settings, environ: Mapping[str, str]) -> str:
    """The text of `terraform output -json`, from PAAS_TERRAFORM_OUTPUT or from terraform itself."""
    if settings.output_file is not None:
        try:
            return settings.output_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise InventoryError(
                f"cannot read PAAS_TERRAFORM_OUTPUT={settings.output_file}: {error}"
            ) from error

    env = settings.environment
    if not (settings.module_dir / "versions.tf").is_file():
        raise InventoryError(
            f"unknown environment {env!r}: {settings.module_dir} is not a Terraform root module"
        )
    if not settings.terraform_data_dir.is_dir():
        raise InventoryError(
            f"environment {env!r} is not initialised: {settings.terraform_data_dir} does not exist "
            f"(run terraform init with TF_DATA_DIR set to it, see terraform/{env}/README.md)"
        )
    wanted = environ.get("PAAS_TERRAFORM") or "terraform"
    executable = shutil.which(wanted, path=environ.get("PATH"))
    if executable is None:
        raise InventoryError(
            f"{wanted} is not found (needed to read environment {env!r}; put terraform on PATH, set "
            "PAAS_TERRAFORM, or set PAAS_TERRAFORM_OUTPUT to a file holding `terraform output -json`)"
        )
    argv = [executable, *terraform_command(settings)[1:]]
    try:
        completed = subprocess.run(
            argv,
            env=terraform_environ(settings, environ),
            capture_output=True,
            text=True,
            timeout=TERRAFORM_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise InventoryError(
            f"terraform output for environment {env!r} did not finish within {TERRAFORM_TIMEOUT_SECONDS}s"
        ) from error
    except OSError as error:
        raise InventoryError(f"cannot run {executable}: {error}") from error
    if completed.returncode != 0:
        raise InventoryError(
            f"terraform output for environment {env!r} failed (exit {completed.returncode}): "
            f"{summarise_terraform_error(completed.stderr)}"
        )
    return completed.stdout


def summarise_terraform_error(stderr: str) -> str:
    """The first `Error:` line of terraform's diagnostics (box drawing removed), else the last line."""
    lines = [line.strip().lstrip("│╷╵").strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line]
    for line in lines:
        if line.startswith("Error:"):
            return line
    return lines[-1] if lines else "no error message"


def parse_outputs(text: str) -> list[Host]:
    """Hosts from `terraform output -json`; an empty state or no `hosts` output gives no hosts."""
    try:
        outputs = json.loads(text)
    except json.JSONDecodeError as error:
        raise InventoryError(f"terraform output is not valid JSON: {error}") from error
    if not isinstance(outputs, dict):
        raise InventoryError(f"terraform output must be a JSON object of outputs, got {type_name(outputs)}")
    if "hosts" not in outputs:
        return []
    output = outputs["hosts"]
    if not isinstance(output, dict) or "value" not in output:
        raise InventoryError(
            "output 'hosts' must be an object with a 'value' (as printed by terraform output -json)"
        )
    hosts = output["value"]
    if not isinstance(hosts, dict):
        raise InventoryError(
            f"output 'hosts' must be a map of inventory hostname to host object, got {type_name(hosts)}"
        )
    return [parse_host(name, value) for name, value in sorted(hosts.items())]


def parse_host(name: str, value: Any) -> Host:
    """One host object of the contract, every field checked."""
    if not HOSTNAME_PATTERN.fullmatch(name):
        raise InventoryError(
            f"host {name!r}: not a valid inventory hostname (letters, digits, '.', '_', '-')"
        )
    if not isinstance(value, dict):
        raise InventoryError(f"host {name!r}: must be an object, got {type_name(value)}")
    missing = [field for field in HOST_FIELDS if field not in value]
    if missing:
        raise InventoryError(f"host {name!r}: missing {', '.join(repr(field) for field in missing)}")

    address = require_str(name, value, "address")
    if not ADDRESS_PATTERN.fullmatch(address):
        raise InventoryError(f"host {name!r}: 'address' {address!r} is not a DNS name or an IP address")
    connection = require_str(name, value, "connection")
    if connection not in CONNECTIONS:
        raise InventoryError(f"host {name!r}: 'connection' must be 'local' or 'ssh', got {connection!r}")
    port = value["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InventoryError(f"host {name!r}: 'port' must be an integer from 0 to 65535, got {port!r}")
    user = require_str(name, value, "user")
    if connection == "ssh" and (port == 0 or not user):
        raise InventoryError(f"host {name!r}: an ssh host needs a 'port' from 1 to 65535 and a 'user'")
    groups = value["groups"]
    if not isinstance(groups, list) or not all(isinstance(group, str) for group in groups):
        raise InventoryError(f"host {name!r}: 'groups' must be a list of strings, got {groups!r}")
    for group in groups:
        if not GROUP_PATTERN.fullmatch(group) or group in RESERVED_GROUPS:
            raise InventoryError(f"host {name!r}: {group!r} is not a valid group name")
    host_key = require_str(name, value, "host_key")
    if host_key and not HOST_KEY_PATTERN.fullmatch(host_key):
        raise InventoryError(f"host {name!r}: 'host_key' must be '' or '<type> <base64>', got {host_key!r}")
    python_interpreter = (
        require_str(name, value, "python_interpreter") if "python_interpreter" in value else ""
    )
    if python_interpreter and not INTERPRETER_PATTERN.fullmatch(python_interpreter):
        raise InventoryError(
            f"host {name!r}: 'python_interpreter' must be '' or an absolute path, got {python_interpreter!r}"
        )
    return Host(
        name=name,
        address=address,
        port=port,
        user=user,
        private_key_file=require_str(name, value, "private_key_file"),
        connection=connection,
        groups=tuple(dict.fromkeys([HOST_GROUP, *groups])),
        host_key=host_key,
        python_interpreter=python_interpreter,
    )


def require_str(name: str, value: dict[str, Any], field: str) -> str:
    item = value[field]
    if not isinstance(item, str):
        raise InventoryError(f"host {name!r}: {field!r} must be a string, got {type_name(item)}")
    if "\n" in item or "\r" in item:
        raise InventoryError(f"host {name!r}: {field!r} must be on one line")
    if JINJA_PATTERN.search(item):
        # Ansible would template it: a value from Terraform must never run code on the controller.
        raise InventoryError(f"host {name!r}: {field!r} must not contain a Jinja delimiter")
    return item


def type_name(value: Any) -> str:
    """The JSON name of a decoded value's type."""
    if value is None:
        return "null"
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}
    return names.get(type(value), type(value).__name__)


def host_vars(host: Host, known_hosts_file: Path | None) -> dict[str, Any]:
    """Ansible connection variables of one host."""
    if host.connection == "local":
        return {
            "ansible_host": host.address,
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        }
    variables: dict[str, Any] = {
        "ansible_host": host.address,
        "ansible_port": host.port,
        "ansible_user": host.user,
    }
    if host.user != "root":
        # The roles install packages and write system config: a login user other than root sudoes.
        variables["ansible_become"] = True
    if host.private_key_file:
        variables["ansible_ssh_private_key_file"] = host.private_key_file
    if host.python_interpreter:
        variables["ansible_python_interpreter"] = host.python_interpreter
    if known_hosts_file is not None:
        variables["ansible_ssh_common_args"] = (
            f"-o UserKnownHostsFile={shlex.quote(str(known_hosts_file))} -o StrictHostKeyChecking=yes"
        )
    return variables


def build_inventory(hosts: Sequence[Host], known_hosts_file: Path | None) -> dict[str, Any]:
    """The `--list` document: one entry per group plus `_meta.hostvars`."""
    inventory: dict[str, Any] = {
        "_meta": {"hostvars": {h.name: host_vars(h, known_hosts_file) for h in hosts}}
    }
    for group in sorted({group for host in hosts for group in host.groups}):
        inventory[group] = {"hosts": [host.name for host in hosts if group in host.groups]}
    return inventory


def known_hosts_lines(hosts: Sequence[Host]) -> list[str]:
    """known_hosts lines for the ssh hosts that carry a host key."""
    lines = []
    for host in hosts:
        if host.connection == "ssh" and host.host_key:
            pattern = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
            lines.append(f"{pattern} {host.host_key}")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="terraform.py",
        description="Ansible dynamic inventory: `terraform output -json` of terraform/$PAAS_TERRAFORM_ENV.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--list", action="store_true", help="print every group and host")
    mode.add_argument("--host", metavar="NAME", help="print the variables of one host")
    mode.add_argument(
        "--known-hosts", action="store_true", help="print known_hosts lines for pinned host keys"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        settings = read_settings(env)
        hosts = parse_outputs(read_terraform_output(settings, env))
    except InventoryError as error:
        print(f"terraform.py: error: {error}", file=sys.stderr)
        return 1

    known_hosts_file = settings.known_hosts_file if settings.known_hosts_file.is_file() else None
    if args.known_hosts:
        lines = known_hosts_lines(hosts)
        sys.stdout.write("".join(f"{line}\n" for line in lines))
        return 0
    if args.host is not None:
        document: dict[str, Any] = next(
            (host_vars(host, known_hosts_file) for host in hosts if host.name == args.host), {}
        )
    else:
        document = build_inventory(hosts, known_hosts_file)
    print(json.dumps(document, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
