"""Infrastructure environments: where the app hosts come from and how to create, prepare or tear them down.

An environment is a planner: it says which *steps* provision or destroy it; the service runs the steps
as one job (:class:`PlaybookStep` through the playbook runner, :class:`CommandStep` through the command
executor) and records what they found.

- :class:`TerraformEnvironment` (``local``, ``ssh``, ``aws``: the root modules ``terraform/<env>/``).
  Provisioning is ``terraform init``, ``plan -out`` (its resource changes become job events),
  ``apply <plan>``, ``output -json`` (the hosts), ``inventory/terraform.py --known-hosts`` (the host
  keys, pinned into ``<data>/known_hosts/<env>``), then ``playbooks/host.yml`` against
  ``inventory/terraform.py`` for that environment. Destroying is ``terraform destroy``. Variables go
  through a 0600 variables file that exists only during the job (see :mod:`paas.infra.terraform`).
- :class:`StaticEnvironment`: the server's own inventory (``PAAS_INVENTORY``, default this machine),
  which app jobs use as long as no Terraform environment was applied.

How the first SSH host key is learned, per environment (there is never trust on first use):

- ``local``: no SSH at all (``ansible_connection: local``).
- ``ssh``: the request must carry ``variables.host_key`` (the server's public host key); without it the
  request is refused (400). It is pinned before the first connection.
- ``aws``: the server generates an ed25519 *bootstrap* host key pair before the first apply
  (``<data>/terraform/aws/ssh_host_ed25519_key``, mode 0600, reused by later provisions, deleted by a
  successful destroy) and passes it as ``ssh_host_key``; cloud-init installs it as the instance's only
  host key at its first boot, so the key is pinned before the instance exists.

The bootstrap key does not stay: its private half sits in the instance's user data (readable through
the metadata service on the instance) and in the server's data dir. For ``aws`` (:data:`ROTATING`)
host.yml runs with ``sshd_host_key_rotate: true`` (elsewhere ``false``): over the connection verified
with the bootstrap key, role ``sshd_host_key`` generates an ed25519 key on the host, points sshd at it,
reloads sshd (open connections stay up) and reports its public half (fact ``sshd_host_key_report``).
The host step's ``after`` pins that key in ``known_hosts/aws`` in place of the bootstrap key, even when
host.yml failed later; a host.yml that succeeded without reporting one fails the job. The key is also
recorded, so the known_hosts step of later provisions pins it instead of the bootstrap key the outputs
report, for as long as the instance is the same (see :mod:`paas.infra.host_keys`): the bootstrap key is
refused from then on. cloud-init installs user data at an instance's first boot only (and Terraform
ignores changes to it), so a re-provision never brings the bootstrap key back; a replaced instance boots
with it, is pinned with it, and host.yml replaces it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from paas.core.config import Settings
from paas.core.files import write_private
from paas.core.masking import Masker
from paas.core.store import write_atomically
from paas.infra import host_keys
from paas.infra import terraform as tf
from paas.infra.steps import CommandStep, PlaybookStep, Step, StepError

if TYPE_CHECKING:
    from paas.execution.runner import PlaybookResult

log = logging.getLogger(__name__)

HOST_GROUP = "paas_hosts"
HOST_PLAYBOOK = "playbooks/host.yml"
# Seconds a step may take when the job's own timeout is not the bound.
INIT_TIMEOUT = 600.0
READ_TIMEOUT = 120.0
# Variables the server sets itself, per environment (a request must not).
SERVER_VARIABLES = {"aws": ("ssh_host_key",)}
# Environments whose bootstrap host key host.yml replaces with one made on the host (role sshd_host_key).
ROTATING = frozenset({"aws"})
ROTATE_VARIABLE = "sshd_host_key_rotate"
ROTATED_KEY_FACT = "sshd_host_key_report"


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

    @property
    def rotates_host_keys(self) -> bool:
        """Whether host.yml replaces the hosts' bootstrap keys with keys made on them."""
        return self.name in ROTATING

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
            write_private(var_file, tf.variables_file_text({**variables, **server_vars}))
            environ = os.environ if self._environ is None else self._environ
            yield Session(
                self,
                terraform=terraform,
                env=tf.process_env(environ, ws),
                var_file=var_file,
                plan_file=plan_file,
                redact=tf.secret_masker(variables, generated),
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
            write_private(path, private)
            write_private(public_path, public + "\n")
            log.info("generated the SSH host key of the %s environment's host: %s", self.name, public)
        return path.read_text(encoding="utf-8"), public_path.read_text(encoding="utf-8").strip()

    def forget_host_keys(self) -> None:
        """After a destroy: the pinned keys, the generated host key pair and the keys made on the hosts
        are of hosts that are gone."""
        ws = self.workspace
        for path in (
            ws.known_hosts_path,
            ws.host_key_path,
            ws.host_key_path.with_name("ssh_host_ed25519_key.pub"),
            ws.rotated_host_keys_path,
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
        redact: Masker,
    ) -> None:
        self.environment = environment
        self.redact = redact
        self.hosts: list[dict[str, Any]] = []
        self.outputs: dict[str, Any] = {}
        # The host keys the outputs report (for aws: the bootstrap keys), by host name.
        self._reported_keys: dict[str, str] = {}
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
            self._host_step(),
        ]

    def _host_step(self) -> PlaybookStep:
        env, rotate = self.environment, self.environment.rotates_host_keys
        return PlaybookStep(
            HOST_PLAYBOOK,
            "prepare the hosts: Docker, nginx, git, directories"
            + (", a host key made there" if rotate else ""),
            extravars={ROTATE_VARIABLE: rotate},
            inventory=env.inventory,
            env=env.inventory_env(),
            name="host",
            capture_facts=(ROTATED_KEY_FACT,) if rotate else (),
            after=self._pin_rotated_key if rotate else None,
        )

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
        self._reported_keys = {str(h["name"]): str(h.get("host_key") or "") for h in self.hosts}
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
        rotated = self._keep_rotated_keys(lines) if self.environment.rotates_host_keys else []
        path = self.environment.workspace.known_hosts_path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(path, "".join(f"{line}\n" for line in lines))
        made = f" ({', '.join(rotated)}: the key made on the host)" if rotated else ""
        return f"Pin the SSH host keys: {len(lines)} key(s) in known_hosts/{self.environment.name}{made}"

    def _instance_id(self) -> str | None:
        value = self.outputs.get("instance_id")
        return value if isinstance(value, str) else None

    def _keep_rotated_keys(self, lines: list[str]) -> list[str]:
        """Pin the keys made on the hosts (where they still apply) instead of the bootstrap keys."""
        path = self.environment.workspace.rotated_host_keys_path
        return host_keys.keep_rotated(lines, self.hosts, self._instance_id(), path)

    def _pin_rotated_key(self, result: PlaybookResult) -> str | None:
        """After host.yml (aws): pin the key the host reported it made, in place of the one pinned."""
        report = result.facts.get(ROTATED_KEY_FACT)
        if report is None:
            if result.ok:
                raise StepError(
                    f"{HOST_PLAYBOOK} reported no host key made on the host ({ROTATED_KEY_FACT}): the "
                    "bootstrap key stays pinned"
                )
            return None  # the play stopped before the key was replaced: the pinned one is still served
        ws = self.environment.workspace
        try:
            return host_keys.pin_reported(
                report,
                hosts=self.hosts,
                reported=self._reported_keys,
                instance_id=self._instance_id(),
                known_hosts=ws.known_hosts_path,
                records=ws.rotated_host_keys_path,
            )
        except ValueError as exc:
            raise StepError(f"{HOST_PLAYBOOK} reported a host key that cannot be pinned: {exc}") from None

    def _destroyed(self, stdout: str) -> None:
        self.environment.forget_host_keys()
        self.hosts, self.outputs = [], {}
        return None
