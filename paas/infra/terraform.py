"""Terraform for the service: what to run, with which environment and files, and how to read what it says.

Pure builders and parsers (the service decides when to run, :mod:`paas.execution.commands` runs). Per
environment ``<env>`` (a root module ``terraform/<env>/``) the layout in the data dir is::

    <data>/terraform/terraformrc               the CLI config (TF_CLI_CONFIG_FILE) of every run
    <data>/terraform/<env>/.terraform/         TF_DATA_DIR
    <data>/terraform/<env>/terraform.tfstate   the state (local backend, -backend-config=path=...)
    <data>/terraform/<env>/run/                a run's variables file and plan (0600, deleted after it)
    <data>/terraform/<env>/ssh_host_ed25519_key  (aws) the host key the server generated for the host
    <data>/known_hosts/<env>                   the pinned host keys, written after every apply

Variables reach Terraform through a 0600 ``-var-file`` deleted after the run, never on the command
line. Variables whose name says they may be secret (:func:`is_secret_name`) are never stored, and their
values are masked in anything shown (:func:`secret_masker`); so is anything Terraform prints about a
variable's value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paas.core.masking import Masker

# A variable whose name says it may hold a secret: never stored, masked wherever it could show.
SECRET_NAME_RE = re.compile(r"key|secret|token|password|passphrase|credential")
DECLARED_RE = re.compile(r'^variable\s+"([A-Za-z_][A-Za-z0-9_-]*)"', re.MULTILINE)
# Plugin dirs checked (without any scan) when PAAS_TF_PLUGIN_MIRROR is not set.
KNOWN_MIRRORS = (
    Path("/opt/tf-plugins"),
    Path("/usr/local/share/terraform/plugins"),
    Path("/usr/share/terraform/plugins"),
)
MIRROR_ENTRIES_MAX = 200
# Variables of the server's environment that never reach Terraform: the API token, variables and
# arguments that would change what runs (the service sets its own), and debug logs (they print values).
DROPPED_ENV_RE = re.compile(
    r"PAAS_API_TOKEN|TF_VAR_.*|TF_CLI_ARGS.*|TF_WORKSPACE|TF_DATA_DIR|TF_CLI_CONFIG_FILE|TF_LOG.*"
    r"|TF_INPUT|TF_IN_AUTOMATION"
)
TASK_MAX = 300
ERROR_MAX = 1500

# Lines of `plan`, `apply` and `destroy` worth a job event: (pattern, result).
_RESOURCE_LINE_RE = re.compile(
    r"^\s*# (?!\()(.+?) (will be .+|must be .+|has moved to .+|is tainted.*|has changed|has been deleted)$"
)
_PROGRESS_RE = re.compile(r"^(?!\s)(.+?): (Creation|Modifications|Destruction|Read) complete after \S+")
_SUMMARY_RE = re.compile(
    r"^(Plan: \d+ to add, \d+ to change, \d+ to destroy\."
    r"|No changes\. .*|Apply complete! .*|Destroy complete! .*)$"
)
_NONZERO_RE = re.compile(r"\b[1-9][0-9]* (to add|to change|to destroy|added|changed|destroyed)\b")
_WARNING_RE = re.compile(r"^Warning: (.+)$")
# What Terraform prints around a diagnostic that is not its message: source locations and snippets
# (a snippet of a variables file holds values), value dumps ("var.x is ..."), box drawing.
_NOISE_RE = re.compile(
    r"^(on \S.* line \d+.*|\d+: .*|[├│╷╵─].*|[A-Za-z_][A-Za-z0-9_]*\.\S+ is .*"
    r"|This was checked by the validation rule .*)$"
)
_BOX = "│╷╵ "


class TerraformError(Exception):
    """What Terraform printed cannot be read (or a file the run needs cannot be written)."""


@dataclass(frozen=True)
class Workspace:
    """Where one environment's module, state, data dir and pinned keys are."""

    environment: str
    repo_root: Path
    data_dir: Path

    @property
    def module_dir(self) -> Path:
        return self.repo_root / "terraform" / self.environment

    @property
    def root(self) -> Path:
        return self.data_dir / "terraform" / self.environment

    @property
    def tf_data_dir(self) -> Path:
        return self.root / ".terraform"

    @property
    def state_path(self) -> Path:
        return self.root / "terraform.tfstate"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def host_key_path(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    @property
    def rotated_host_keys_path(self) -> Path:
        """The host keys made on the hosts that replace the bootstrap keys (:mod:`paas.infra.host_keys`)."""
        return self.root / "rotated_host_keys.json"

    @property
    def known_hosts_path(self) -> Path:
        return self.data_dir / "known_hosts" / self.environment

    @property
    def cli_config_path(self) -> Path:
        return self.data_dir / "terraform" / "terraformrc"

    @property
    def inventory_script(self) -> Path:
        return self.repo_root / "inventory" / "terraform.py"


# ---- variables ----
def is_secret_name(name: str) -> bool:
    """Whether a variable's name says it may hold a secret (key, secret, token, password...)."""
    return SECRET_NAME_RE.search(name.lower()) is not None


def declared_variables(module_dir: Path) -> frozenset[str]:
    """Names of the variables a root module declares (``variable "<name>"`` blocks of its .tf files)."""
    names: set[str] = set()
    for path in sorted(module_dir.glob("*.tf")):
        names.update(DECLARED_RE.findall(path.read_text(encoding="utf-8")))
    return frozenset(names)


def split_variables(variables: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``(values that may be stored, names of the secret ones)``."""
    plain = {name: value for name, value in variables.items() if not is_secret_name(name)}
    return plain, sorted(name for name in variables if is_secret_name(name))


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool):
        return
    elif isinstance(value, int | float):
        yield str(value)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


# Secret values this short would mask ordinary words; they are not worth hiding (and Terraform's
# value dumps are dropped anyway).
SECRET_MIN = 4


def secret_masker(variables: Mapping[str, Any], extra: Iterable[str] = ()) -> Masker:
    """Masks secret values (those of secret-named variables, keys the server made) in text shown to
    anyone: job events and messages."""
    values = [s for name, value in variables.items() if is_secret_name(name) for s in _strings(value)]
    return Masker([*values, *extra], minimum=SECRET_MIN)


def variables_file_text(variables: Mapping[str, Any]) -> str:
    """A ``.tfvars.json`` document, one variable per line (a diagnostic's snippet shows one line)."""
    return json.dumps(dict(variables), indent=2, sort_keys=True) + "\n"


# ---- host keys ----
def generate_host_key(comment: str) -> tuple[str, str]:
    """A new ed25519 SSH host key: ``(OpenSSH private key, "ssh-ed25519 <base64> <comment>")``."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode("ascii")
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )
    return private, f"{public} {comment}"


# ---- CLI config and provider mirror ----
def mirror_providers(mirror: Path) -> list[str]:
    """``<host>/<namespace>/<type>`` of the providers a filesystem mirror holds (three directory
    levels listed, bounded; no recursive scan)."""
    found: list[str] = []
    try:
        for host in sorted(p for p in mirror.iterdir() if p.is_dir() and "." in p.name):
            for namespace in sorted(p for p in host.iterdir() if p.is_dir()):
                for kind in sorted(p for p in namespace.iterdir() if p.is_dir()):
                    found.append(f"{host.name}/{namespace.name}/{kind.name}")
                    if len(found) >= MIRROR_ENTRIES_MAX:
                        return found
    except OSError:
        return found
    return found


def find_plugin_mirror(setting: Path | str | None, candidates: Iterable[Path] = KNOWN_MIRRORS) -> Path | None:
    """The provider mirror to use: the configured one, none (``"off"``), or the first known plugin dir
    that holds providers."""
    if setting == "off":
        return None
    if isinstance(setting, Path):
        return setting
    for candidate in candidates:
        if candidate.is_dir() and mirror_providers(candidate):
            return candidate
    return None


def cli_config(mirror: Path | None) -> str:
    """The CLI config of the server's runs: install the mirror's providers from it (and those only from
    it), every other provider from its registry. No mirror: an empty config (the registry)."""
    header = "# Written by Mini PaaS for its Terraform runs (TF_CLI_CONFIG_FILE); rewritten every run.\n"
    providers = mirror_providers(mirror) if mirror is not None else []
    if not providers:
        return header
    listed = ", ".join(json.dumps(p) for p in providers)
    return (
        f"{header}provider_installation {{\n"
        f"  filesystem_mirror {{\n"
        f"    path    = {json.dumps(str(mirror))}\n"
        f"    include = [{listed}]\n"
        f"  }}\n"
        f"  direct {{\n"
        f"    exclude = [{listed}]\n"
        f"  }}\n"
        f"}}\n"
    )


# ---- what to run ----
def process_env(base: Mapping[str, str], workspace: Workspace) -> dict[str, str]:
    """Terraform's environment: the server's (cloud credentials come from there), without what must not
    reach it, plus the environment's data dir, the CLI config, and no prompts."""
    env = {name: value for name, value in base.items() if not DROPPED_ENV_RE.fullmatch(name)}
    env.update(
        TF_DATA_DIR=str(workspace.tf_data_dir),
        TF_CLI_CONFIG_FILE=str(workspace.cli_config_path),
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",
    )
    return env


def inventory_env(workspace: Workspace, terraform: str) -> dict[str, str]:
    """What inventory/terraform.py needs to read this environment (for ansible-playbook or directly)."""
    return {
        "PAAS_TERRAFORM_ENV": workspace.environment,
        "PAAS_DATA_DIR": str(workspace.data_dir),
        "PAAS_TERRAFORM": terraform,
        "TF_CLI_CONFIG_FILE": str(workspace.cli_config_path),
    }


def _base(terraform: str, workspace: Workspace, command: str) -> list[str]:
    return [terraform, f"-chdir={workspace.module_dir}", command]


def init_argv(terraform: str, workspace: Workspace) -> list[str]:
    return [
        *_base(terraform, workspace, "init"),
        "-input=false",
        "-no-color",
        f"-backend-config=path={workspace.state_path}",
    ]


def plan_argv(terraform: str, workspace: Workspace, var_file: Path, plan_file: Path) -> list[str]:
    return [
        *_base(terraform, workspace, "plan"),
        "-input=false",
        "-no-color",
        f"-var-file={var_file}",
        f"-out={plan_file}",
    ]


def apply_argv(terraform: str, workspace: Workspace, plan_file: Path) -> list[str]:
    return [*_base(terraform, workspace, "apply"), "-input=false", "-no-color", str(plan_file)]


def output_argv(terraform: str, workspace: Workspace) -> list[str]:
    return [*_base(terraform, workspace, "output"), "-json", "-no-color"]


def destroy_argv(terraform: str, workspace: Workspace, var_file: Path) -> list[str]:
    return [
        *_base(terraform, workspace, "destroy"),
        "-input=false",
        "-no-color",
        "-auto-approve",
        f"-var-file={var_file}",
    ]


def known_hosts_argv(python: str, workspace: Workspace) -> list[str]:
    return [python, str(workspace.inventory_script), "--known-hosts"]


# ---- reading what Terraform prints ----
def progress_event(line: str) -> tuple[str, str] | None:
    """A job event ``(task, result)`` for a line of plan/apply/destroy worth one, else None: each
    resource change of a plan, each resource done, the summaries, warnings."""
    text = line.rstrip()
    match = _RESOURCE_LINE_RE.match(text)
    if match:
        address, what = match.groups()
        result = "changed" if what.startswith(("will be", "must be", "has moved")) else "ok"
        return f"plan: {address} {what}"[:TASK_MAX], result
    match = _PROGRESS_RE.match(text)
    if match:
        return text[:TASK_MAX], "changed"
    if _SUMMARY_RE.match(text):
        return text[:TASK_MAX], "changed" if _NONZERO_RE.search(text) else "ok"
    match = _WARNING_RE.match(text)
    if match:
        return f"Warning: {match.group(1)}"[:TASK_MAX], "ok"
    return None


def summarise_error(stderr: str) -> str | None:
    """Terraform's error diagnostics, one ``Error: <summary>: <detail>`` each, without source snippets
    or value dumps; None when stderr holds no ``Error:``."""
    errors: list[list[str]] = []
    collecting = False
    for raw in stderr.splitlines():
        line = raw.strip().lstrip(_BOX).strip()
        if line.startswith("Error: "):
            errors.append([line])
            collecting = True
        elif line.startswith("Warning: "):
            collecting = False
        elif collecting and line and not _NOISE_RE.match(line):
            errors[-1].append(line)
    if not errors:
        return None
    text = "; ".join(
        block[0] + (": " + " ".join(block[1:]) if len(block) > 1 else "") for block in errors[:3]
    )
    return text if len(text) <= ERROR_MAX else text[: ERROR_MAX - 3] + "..."


def read_outputs(text: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(hosts, outputs)`` from ``terraform output -json``: the hosts of the inventory contract and
    the other outputs, sensitive ones left out."""
    try:
        data = json.loads(text or "{}")
    except ValueError as exc:
        raise TerraformError(f"terraform output is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TerraformError("terraform output is not a JSON object")
    hosts: list[dict[str, Any]] = []
    outputs: dict[str, Any] = {}
    for name, output in sorted(data.items()):
        if not isinstance(output, dict) or output.get("sensitive"):
            continue
        value = output.get("value")
        if name != "hosts":
            outputs[name] = value
            continue
        if not isinstance(value, dict):
            raise TerraformError("output 'hosts' is not a map of hosts")
        for host_name, host in sorted(value.items()):
            if not isinstance(host, dict):
                raise TerraformError(f"output 'hosts': {host_name!r} is not an object")
            hosts.append(
                {
                    "name": str(host_name),
                    "address": host.get("address"),
                    "port": host.get("port"),
                    "user": host.get("user"),
                    "connection": host.get("connection"),
                    "groups": host.get("groups"),
                    "host_key": host.get("host_key"),
                }
            )
    return hosts, outputs
