"""Infrastructure environments: where the app hosts come from and how to create, prepare or tear them down.

An environment is a planner: it says which *steps* provision or destroy it; the service runs the steps
as one job (:class:`PlaybookStep` through the playbook runner, :class:`CommandStep` through the command
executor) and records what they found.

- :class:`TerraformEnvironment` (``local``, ``ssh``, ``aws``: the root modules ``terraform/<env>/``).
  Provisioning is ``terraform init``, ``plan -out`` (its resource changes become job events),
  ``apply <plan>``, ``output -json`` (the hosts), ``inventory/terraform.py --known-hosts`` (the host
  keys, pinned into ``<data>/known_hosts/<env>``), then ``playbooks/host.yml`` against
  ``inventory/terraform.py`` for that environment. Destroying is ``terraform destroy``. Variables go
  through a 0600 variables file that exists only during the job (see :mod:`paas.terraform`).
- :class:`StaticEnvironment`: the server's own inventory (``PAAS_INVENTORY``, default this machine),
  which app jobs use as long as no Terraform environment was applied.

How the first SSH host key is learned, per environment (there is never trust on first use):

- ``local``: no SSH at all (``ansible_connection: local``).
- ``ssh``: the request must carry ``variables.host_key`` (the server's public host key); without it the
  request is refused (400). It is pinned before the first connection.
- ``aws``: the server generates an ed25519 host key pair before the first apply
  (``<data>/terraform/aws/ssh_host_ed25519_key``, mode 0600, reused by later provisions, deleted by a
  successful destroy) and passes it as ``ssh_host_key``; cloud-init installs it as the instance's only
  host key, so the key is pinned before the instance exists.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from paas import terraform as tf
from paas.config import Settings
from paas.store import write_atomically

log = logging.getLogger(__name__)

HOST_GROUP = "paas_hosts"
HOST_PLAYBOOK = "playbooks/host.yml"
# Seconds a step may take when the job's own timeout is not the bound.
INIT_TIMEOUT = 600.0
READ_TIMEOUT = 120.0
# Variables the server sets itself, per environment (a request must not).
SERVER_VARIABLES = {"aws": ("ssh_host_key",)}


class StepError(Exception):
    """What a step produced cannot be used: the job fails with this message."""


@dataclass(frozen=True)
class PlaybookStep:
    """Run a playbook of the repository (against ``inventory``, default the server's)."""

    playbook: str
    description: str
    extravars: Mapping[str, Any] = field(default_factory=dict)
    inventory: Path | None = None
    # Environment variables for ansible-playbook and the inventory script.
    env: Mapping[str, str] = field(default_factory=dict)
    # The job's failed_step when this step fails.
    name: str = "host"


@dataclass(frozen=True)
class CommandStep:
    """Run a program (argv, never a shell string) with the environment ``env`` (its whole environment).

    ``progress`` turns an output line into a job event ``(task, result)`` (or None); ``capture``
    collects stdout instead, for ``after``, which runs when the program succeeded, may raise
    :class:`StepError`, and returns the task of the step's closing event (None: no event).
    """

    argv: tuple[str, ...]
    description: str
    name: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    cwd: Path | None = None
    timeout: float | None = None
    capture: bool = False
    progress: Callable[[str], tuple[str, str] | None] | None = None
    after: Callable[[str], str | None] | None = None


Step = PlaybookStep | CommandStep


class StaticEnvironment:
    """The server's own inventory (``PAAS_INVENTORY``): this machine unless configured otherwise."""

    def __init__(self, settings: Settings) -> None:
        self._inventory = settings.inventory

    def hosts(self) -> list[dict[str, Any]]:
        try:
            data = yaml.safe_load(self._inventory.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            log.warning("cannot read the inventory %s: %s", self._inventory, exc)
            return []
        return sorted(_group_hosts(data, HOST_GROUP), key=lambda h: str(h["name"]))


def _group_hosts(data: Any, group: str) -> list[dict[str, Any]]:
    """Hosts of ``group`` anywhere in a YAML inventory (``all.children...``)."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any, in_group: bool) -> None:
        if not isinstance(node, dict):
            return
        hosts = node.get("hosts")
        if in_group and isinstance(hosts, dict):
            for name, hostvars in hosts.items():
                hv = hostvars if isinstance(hostvars, dict) else {}
                found[str(name)] = {
                    "name": str(name),
                    "address": str(hv.get("ansible_host", name)),
                    "connection": str(hv.get("ansible_connection", "ssh")),
                }
        children = node.get("children")
        if isinstance(children, dict):
            for child_name, child in children.items():
                walk(child, in_group or child_name == group)

    if isinstance(data, dict):
        for name, node in data.items():
            walk(node, name == group)
    return list(found.values())


class TerraformEnvironment:
    """The root module ``terraform/<name>/`` with its state and pinned keys in the data dir."""

    def __init__(self, settings: Settings, name: str, environ: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.settings = settings
        self.workspace = tf.Workspace(name, settings.repo_root, settings.data_dir)
        self._environ = environ

    @property
    def inventory(self) -> Path:
        """The dynamic inventory of this environment (with :meth:`inventory_env`)."""
        return self.workspace.inventory_script

    def inventory_env(self) -> dict[str, str]:
        return tf.inventory_env(self.workspace, self.settings.terraform)

    def declared_variables(self) -> frozenset[str]:
        return tf.declared_variables(self.workspace.module_dir)

    def check_variables(self, variables: Mapping[str, Any]) -> dict[str, str]:
        """Field errors (``variables.<name>``) of the variables a provision would apply."""
        fields: dict[str, str] = {}
        declared = self.declared_variables()
        for name in sorted(variables):
            if name in SERVER_VARIABLES.get(self.name, ()):
                fields[f"variables.{name}"] = (
                    f"is set by the server (a host key it generates): see terraform/{self.name}/README.md"
                )
            elif name not in declared:
                fields[f"variables.{name}"] = f"is not a variable of terraform/{self.name}"
        if self.name == "ssh" and not str(variables.get("host_key") or "").strip():
            fields["variables.host_key"] = (
                "is required for the ssh environment: the server's public SSH host key "
                "('ssh-ed25519 AAAA...', the content of /etc/ssh/ssh_host_ed25519_key.pub), pinned "
                "before the first connection (a key is never trusted on first use)"
            )
        return fields

    def terraform_path(self) -> str:
        """The Terraform executable (``PAAS_TERRAFORM`` or ``terraform`` on PATH)."""
        environ = os.environ if self._environ is None else self._environ
        found = shutil.which(self.settings.terraform, path=environ.get("PATH"))
        if found is None:
            raise StepError(
                f"terraform is not found ({self.settings.terraform!r}): install Terraform >= 1.5 "
                "or set PAAS_TERRAFORM to its path"
            )
        return found

    @contextlib.contextmanager
    def session(self, variables: Mapping[str, Any]) -> Iterator[Session]:
        """The files one job's steps need, deleted when it ends: the variables file (0600, the given
        variables plus the server's own) and the plan."""
        ws = self.workspace
        terraform = self.terraform_path()
        for directory in (ws.data_dir / "terraform", ws.root, ws.run_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        mirror = tf.find_plugin_mirror(self.settings.tf_plugin_mirror)
        write_atomically(ws.cli_config_path, tf.cli_config(mirror))
        server_vars: dict[str, Any] = {}
        generated: list[str] = []
        if self.name == "aws":
            private, public = self._host_key()
            server_vars["ssh_host_key"] = {"private_key": private, "public_key": public}
            generated.append(private)
        token = uuid.uuid4().hex
        var_file = ws.run_dir / f"{token}.tfvars.json"
        plan_file = ws.run_dir / f"{token}.tfplan"
        try:
            tf.write_private(var_file, tf.variables_file_text({**variables, **server_vars}))
            environ = os.environ if self._environ is None else self._environ
            yield Session(
                self,
                terraform=terraform,
                env=tf.process_env(environ, ws),
                var_file=var_file,
                plan_file=plan_file,
                redact=tf.Redactor.for_variables(variables, generated),
            )
        finally:
            var_file.unlink(missing_ok=True)
            plan_file.unlink(missing_ok=True)

    def _host_key(self) -> tuple[str, str]:
        """The host key pair the server made for this environment's host (made now if there is none)."""
        path = self.workspace.host_key_path
        public_path = path.with_name(path.name + ".pub")
        if not (path.is_file() and public_path.is_file()):
            private, public = tf.generate_host_key(f"paas-{self.name}")
            tf.write_private(path, private)
            tf.write_private(public_path, public + "\n")
            log.info("generated the SSH host key of the %s environment's host: %s", self.name, public)
        return path.read_text(encoding="utf-8"), public_path.read_text(encoding="utf-8").strip()

    def forget_host_keys(self) -> None:
        """After a destroy: the pinned keys and the generated host key pair are of hosts that are gone."""
        ws = self.workspace
        for path in (
            ws.known_hosts_path,
            ws.host_key_path,
            ws.host_key_path.with_name("ssh_host_ed25519_key.pub"),
        ):
            path.unlink(missing_ok=True)


def scrub_runs(data_dir: Path) -> None:
    """After a crash: delete the variables files and plans runs may have left behind."""
    for leftover in (data_dir / "terraform").glob("*/run/*"):
        with contextlib.suppress(OSError):
            leftover.unlink()


class Session:
    """One job's steps against one environment, and what they found (hosts, outputs)."""

    def __init__(
        self,
        environment: TerraformEnvironment,
        *,
        terraform: str,
        env: Mapping[str, str],
        var_file: Path,
        plan_file: Path,
        redact: tf.Redactor,
    ) -> None:
        self.environment = environment
        self.redact = redact
        self.hosts: list[dict[str, Any]] = []
        self.outputs: dict[str, Any] = {}
        self._tf = terraform
        self._env = dict(env)
        self._var_file = var_file
        self._plan_file = plan_file

    def _terraform(self, argv: list[str], description: str, name: str, **kwargs: Any) -> CommandStep:
        return CommandStep(tuple(argv), description, name, env=self._env, **kwargs)

    def provision_steps(self) -> list[Step]:
        env, ws, tf_path = self.environment, self.environment.workspace, self._tf
        return [
            self._terraform(tf.init_argv(tf_path, ws), "terraform init", "init", timeout=INIT_TIMEOUT),
            self._terraform(
                tf.plan_argv(tf_path, ws, self._var_file, self._plan_file),
                "terraform plan",
                "plan",
                progress=tf.progress_event,
            ),
            self._terraform(
                tf.apply_argv(tf_path, ws, self._plan_file),
                "terraform apply",
                "apply",
                progress=tf.progress_event,
            ),
            self._terraform(
                tf.output_argv(tf_path, ws),
                "terraform output",
                "output",
                timeout=READ_TIMEOUT,
                capture=True,
                after=self._read_outputs,
            ),
            CommandStep(
                tuple(tf.known_hosts_argv(sys.executable, ws)),
                "Pin the SSH host keys",
                "known_hosts",
                env={**self._env, **env.inventory_env()},
                timeout=READ_TIMEOUT,
                capture=True,
                after=self._pin_host_keys,
            ),
            PlaybookStep(
                HOST_PLAYBOOK,
                "prepare the hosts: Docker, nginx, git, directories",
                inventory=env.inventory,
                env=env.inventory_env(),
                name="host",
            ),
        ]

    def destroy_steps(self) -> list[Step]:
        ws, tf_path = self.environment.workspace, self._tf
        return [
            self._terraform(tf.init_argv(tf_path, ws), "terraform init", "init", timeout=INIT_TIMEOUT),
            self._terraform(
                tf.destroy_argv(tf_path, ws, self._var_file),
                "terraform destroy",
                "destroy",
                progress=tf.progress_event,
                after=self._destroyed,
            ),
        ]

    def _read_outputs(self, stdout: str) -> str:
        try:
            self.hosts, self.outputs = tf.read_outputs(stdout)
        except tf.TerraformError as exc:
            raise StepError(str(exc)) from None
        names = ", ".join(str(h["name"]) for h in self.hosts) or "none"
        return f"terraform output: hosts {names}"

    def _pin_host_keys(self, stdout: str) -> str:
        lines = [line for line in stdout.splitlines() if line.strip()]
        unpinned = [
            str(h["name"])
            for h in self.hosts
            if h.get("connection") == "ssh" and not str(h.get("host_key") or "").strip()
        ]
        if unpinned:
            raise StepError(
                f"no host key to pin for {', '.join(unpinned)}: the environment's hosts must report "
                "their host key (see terraform/<env>/README.md, host key pinning)"
            )
        path = self.environment.workspace.known_hosts_path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(path, "".join(f"{line}\n" for line in lines))
        return f"Pin the SSH host keys: {len(lines)} key(s) in known_hosts/{self.environment.name}"

    def _destroyed(self, stdout: str) -> None:
        self.environment.forget_host_keys()
        self.hosts, self.outputs = [], {}
        return None
