"""Infrastructure environments: where the app hosts come from and how to prepare or tear them down.

An environment is a pure planner: it says which hosts it has and which *steps* provision or destroy
it; the service runs the steps as one job. Only ``local`` (this machine, ``inventory/local.yml``)
exists now. A Terraform environment (``local|ssh|aws`` under ``terraform/<env>/``) plugs in as another
:class:`Environment` whose ``provision_steps`` are ``CommandStep``\\s ``terraform init``, ``plan -out``
and ``apply <plan>`` (run in ``terraform/<env>/`` with ``TF_DATA_DIR=<data>/terraform/<env>/.terraform``)
followed by ``PlaybookStep("playbooks/host.yml", inventory=inventory/terraform.py)``, whose
``destroy_steps`` are ``terraform destroy``, and whose ``hosts``/``outputs`` read
``terraform output -json`` (the contract ``inventory/terraform.py`` reads). The service then needs a
command executor beside the playbook runner for ``CommandStep``; nothing else changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from paas.config import Settings

log = logging.getLogger(__name__)

HOST_GROUP = "paas_hosts"


@dataclass(frozen=True)
class PlaybookStep:
    """Run a playbook of the repository (against ``inventory``, default the server's)."""

    playbook: str
    description: str
    extravars: Mapping[str, Any] = field(default_factory=dict)
    inventory: Path | None = None


@dataclass(frozen=True)
class CommandStep:
    """Run a program (argv, never a shell string) in ``cwd`` (for Terraform environments)."""

    argv: tuple[str, ...]
    description: str
    cwd: Path | None = None


Step = PlaybookStep | CommandStep


class Environment(Protocol):
    name: str

    def hosts(self) -> list[dict[str, Any]]:
        """The app hosts: ``[{"name", "address", "connection"}]``."""
        ...

    def outputs(self) -> dict[str, Any]:
        """Outputs of the environment (Terraform outputs; empty for ``local``)."""
        ...

    def provision_steps(self) -> list[Step]: ...

    def destroy_steps(self) -> list[Step]: ...


class LocalEnvironment:
    """This machine, reached with ``ansible_connection: local`` through the server's inventory."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self._inventory = settings.inventory

    def hosts(self) -> list[dict[str, Any]]:
        try:
            data = yaml.safe_load(self._inventory.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            log.warning("cannot read the inventory %s: %s", self._inventory, exc)
            return []
        return sorted(_group_hosts(data, HOST_GROUP), key=lambda h: str(h["name"]))

    def outputs(self) -> dict[str, Any]:
        return {}

    def provision_steps(self) -> list[Step]:
        return [PlaybookStep("playbooks/host.yml", "prepare the hosts: Docker, nginx, git, directories")]

    def destroy_steps(self) -> list[Step]:
        # Nothing to tear down on this machine once its apps are gone: Docker and nginx stay.
        return []


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


def environment_for(settings: Settings) -> Environment:
    """The environment ``PAAS_ENVIRONMENT`` names."""
    if settings.environment == "local":
        return LocalEnvironment(settings)
    raise ValueError(f"unknown environment {settings.environment!r}")
