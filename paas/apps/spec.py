"""The security boundary: JSON in, a typed spec out, or a :class:`ValidationError` naming each bad field.

The rules are the ones ``roles/app/tasks/assert.yml`` enforces (names, reserved names and
ports from :mod:`paas.contract`) (so a request the API accepts is never
refused by the playbook), matched against the whole value (``re.fullmatch``: no trailing newline slips
through), plus the API's own: no unknown fields, no control characters.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from paas.contract import (
    NAME_PATTERN,
    PORT_MAX,
    PORT_MIN,
    RESERVED_NAMES,
    SLOT_PORT_MAX,
    SLOT_PORT_MIN,
    check_name,
    check_port,
)
from paas.core.config import MEMORY_PATTERN, MEMORY_RE, Settings
from paas.core.errors import ValidationError
from paas.core.validation import require_object, schema_errors

# roles/app/tasks/assert.yml's alternatives (no host or user starting with '-'), then no whitespace,
# control character, '{' or '}', and no '::'.
REPO_PATTERN = (
    r"^(?!.*::)(?!-)(https://(?!-)[^/@:\s{}\x00-\x1f\x7f]+(:[0-9]+)?/"
    r"|ssh://([A-Za-z0-9._][A-Za-z0-9._-]*@)?(?!-)[^/@:\s{}\x00-\x1f\x7f]+(:[0-9]+)?/"
    r"|[A-Za-z0-9._][A-Za-z0-9._-]*@[A-Za-z0-9.][A-Za-z0-9.-]*:[^\s{}\x00-\x1f\x7f]|file:///)"
    r"[^\s{}\x00-\x1f\x7f]*$"
)
CPUS_MIN, CPUS_MAX = 0.01, 64
PIDS_MIN, PIDS_MAX = 16, 65536

DEPLOY_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "repo", "port", "container_port"],
    "properties": {
        "name": {
            "type": "string",
            "pattern": NAME_PATTERN,
            "not": {"enum": sorted(RESERVED_NAMES)},
            "description": f"App name ({', '.join(map(repr, sorted(RESERVED_NAMES)))} reserved).",
        },
        "repo": {
            "type": "string",
            "minLength": 1,
            "maxLength": 2048,
            "pattern": REPO_PATTERN,
            "description": "Git URL: https://host/path, ssh://[user@]host/path, user@host:path or "
            "file:///path (file:// only when the server allows it, under its PAAS_FILE_REPO_ROOTS; hosts "
            "limited to PAAS_REPO_HOSTS when set). No whitespace, '{' or '}', no host starting with '-'.",
        },
        "port": {
            "type": "integer",
            "minimum": PORT_MIN,
            "maximum": PORT_MAX,
            "not": {"type": "integer", "minimum": SLOT_PORT_MIN, "maximum": SLOT_PORT_MAX},
            "description": f"Public port on the host (not within {SLOT_PORT_MIN}-{SLOT_PORT_MAX}, the "
            "platform's internal range).",
        },
        "container_port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "ref": {
            "type": "string",
            "maxLength": 200,
            "pattern": r"^$|^(?!.*\.\.)[A-Za-z0-9._/][A-Za-z0-9._/-]{0,199}$",
            "description": "Branch, tag or commit; empty for the default branch.",
        },
        "env": {
            "type": "object",
            "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
            "additionalProperties": {"type": "string", "pattern": r"^[^\x00]*$"},
            "description": "Environment variables of the container. Values are never stored nor logged.",
        },
        "health_path": {"type": "string", "pattern": r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,255}$"},
        "context": {
            "type": "string",
            "pattern": r"^(?!(.*/)?\.\.(/|$))[A-Za-z0-9._][A-Za-z0-9._/-]{0,254}$",
            "description": "Build context: a directory of the repository (symlinks must resolve inside it).",
        },
        "resources": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "memory": {
                    "type": "string",
                    "pattern": MEMORY_PATTERN,
                    "description": "Memory limit in m or g, e.g. 256m or 1g (at least 6m).",
                },
                "cpus": {"type": "number", "minimum": CPUS_MIN, "maximum": CPUS_MAX},
                "pids": {"type": "integer", "minimum": PIDS_MIN, "maximum": PIDS_MAX},
            },
            "description": "Limits of the app's container; each one not given is the server's default "
            "(PAAS_APP_MEMORY, PAAS_APP_CPUS, PAAS_APP_PIDS).",
        },
    },
}


REF_RE = re.compile(r"[A-Za-z0-9._/][A-Za-z0-9._/-]{0,199}")
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HEALTH_PATH_RE = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,255}")
CONTEXT_RE = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._/-]{0,254}")
CONTEXT_PARENT_RE = re.compile(r"(^|/)\.\.(/|$)")
# The same alternatives as assert.yml: https://host[:port]/, ssh://[user@]host[:port]/, user@host:path,
# file:///. Hosts take no '@' (no credentials) and no whitespace; the groups are user, host and path.
REPO_RE = re.compile(
    r"https://(?P<h1>[^/@:\s]+)(:[0-9]+)?(?P<p1>/.*)"
    r"|ssh://((?P<u2>[A-Za-z0-9._-]+)@)?(?P<h2>[^/@:\s]+)(:[0-9]+)?(?P<p2>/.*)"
    r"|(?P<u3>[A-Za-z0-9._-]+)@(?P<h3>[A-Za-z0-9.-]+):(?P<p3>[^\s].*)"
    r"|file://(?P<p4>/.*)",
    re.DOTALL,
)
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
REPO_MAX = 2048
_DEPLOY_VALIDATOR = Draft202012Validator(DEPLOY_REQUEST)


@dataclass(frozen=True)
class RepoPolicy:
    """Where the server lets deploys clone from (``PAAS_ALLOW_FILE_REPOS``, ``PAAS_FILE_REPO_ROOTS``,
    ``PAAS_REPO_HOSTS``). The playbooks run directly know none of it: the operator is trusted there."""

    allow_file: bool = False
    # Real paths (symlinks resolved).
    file_roots: tuple[Path, ...] = ()
    # Lower-case host names; empty: any host.
    hosts: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> RepoPolicy:
        return cls(settings.allow_file_repos, settings.file_repo_roots, settings.repo_hosts)


@dataclass(frozen=True)
class Resources:
    """Limits of an app's container. None: the server's default (``PAAS_APP_*``)."""

    memory: str | None = None
    cpus: float | None = None
    pids: int | None = None

    def given(self) -> dict[str, Any]:
        """The limits the request set (what the store keeps)."""
        return {
            k: v
            for k, v in (("memory", self.memory), ("cpus", self.cpus), ("pids", self.pids))
            if v is not None
        }

    def effective(self, settings: Settings) -> dict[str, Any]:
        """Every limit, the server's defaults filling in."""
        return {
            "memory": self.memory or settings.app_memory,
            "cpus": self.cpus if self.cpus is not None else settings.app_cpus,
            "pids": self.pids if self.pids is not None else settings.app_pids,
        }


@dataclass(frozen=True)
class DeploySpec:
    """A valid deploy request. ``env`` values are secrets: never logged, never stored."""

    name: str
    repo: str
    port: int
    container_port: int
    ref: str = ""
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    health_path: str = "/"
    context: str = "."
    resources: Resources = field(default_factory=Resources)

    def extra_vars(self, settings: Settings) -> dict[str, Any]:
        """The deploy playbook's inputs (roles/app/defaults/main.yml)."""
        limits = self.resources.effective(settings)
        return {
            "app_name": self.name,
            "app_repo": self.repo,
            "app_ref": self.ref,
            "app_port": self.port,
            "app_container_port": self.container_port,
            "app_env": dict(self.env),
            "app_health_path": self.health_path,
            "app_context": self.context,
            "app_memory": limits["memory"],
            "app_cpus": limits["cpus"],
            "app_pids": limits["pids"],
            "app_build_timeout": int(settings.build_timeout),
        }


def check_repo(repo: str, policy: RepoPolicy | None = None) -> str | None:
    """Why ``repo`` may not be cloned, or None. Without a policy: the playbook's own rules (any host,
    ``file://`` anywhere)."""
    if len(repo) > REPO_MAX:
        return f"must be at most {REPO_MAX} characters"
    if re.search(r"\s", repo) or CONTROL_RE.search(repo):
        return "must not contain whitespace or control characters"
    if "{" in repo or "}" in repo:
        return "must not contain '{' or '}'"
    if "::" in repo:
        return "must not contain '::'"
    if repo.startswith("-"):
        return "must not start with '-'"
    match = REPO_RE.fullmatch(repo)
    if match is None:
        return (
            "must be an https://host/path, ssh://[user@]host/path, user@host:path or file:///path URL "
            "without credentials"
        )
    user = match.group("u2") or match.group("u3") or ""
    host = match.group("h1") or match.group("h2") or match.group("h3") or ""
    if host.startswith("-") or user.startswith("-"):
        return "the host and user must not start with '-'"
    if policy is None:
        return None
    path = match.group("p4")
    if path is not None:
        return _check_file_repo(path, policy)
    if policy.hosts and host.lower() not in policy.hosts:
        return (
            f"host {host!r} is not one this server deploys from (PAAS_REPO_HOSTS: {', '.join(policy.hosts)})"
        )
    return None


def _check_file_repo(path: str, policy: RepoPolicy) -> str | None:
    if not policy.allow_file:
        return "file:// repositories are not enabled on this server (PAAS_ALLOW_FILE_REPOS=1 enables them)"
    if "%" in path:
        return "a file:// URL must not contain '%'"
    if not policy.file_roots:
        return "file:// repositories are enabled but no directory is allowed (PAAS_FILE_REPO_ROOTS is empty)"
    # The real path: a symlink inside a root that points out of every root is refused.
    real = Path(os.path.realpath(unquote(path)))
    if not any(real.is_relative_to(root) for root in policy.file_roots):
        return "a file:// repository must lie under one of the server's PAAS_FILE_REPO_ROOTS"
    return None


def _check_resources(body: Any, fields: dict[str, str]) -> Resources:
    """The ``resources`` object (its structure is the schema's; the ranges are judged here)."""
    if not isinstance(body, dict):
        return Resources()
    memory = body.get("memory")
    cpus = _real(body.get("cpus"))
    pids = _real(body.get("pids"))
    if "resources.memory" not in fields and isinstance(memory, str) and not MEMORY_RE.fullmatch(memory):
        fields["resources.memory"] = "must be a size in m or g such as 256m or 1g, at least 6m"
    if "resources.cpus" not in fields and cpus is not None and not CPUS_MIN <= cpus <= CPUS_MAX:
        fields["resources.cpus"] = f"must be within {CPUS_MIN:g}-{CPUS_MAX}"
    if "resources.pids" not in fields and pids is not None:
        if not pids.is_integer():
            fields["resources.pids"] = "must be an integer"
        elif not PIDS_MIN <= pids <= PIDS_MAX:
            fields["resources.pids"] = f"must be within {PIDS_MIN}-{PIDS_MAX}"
    return Resources(
        memory=memory.lower() if isinstance(memory, str) else None,
        cpus=cpus,
        pids=int(pids) if pids is not None and pids.is_integer() else None,
    )


def _real(value: Any) -> float | None:
    """A JSON number as a float (None for anything else; booleans are not numbers)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def check_container_port(port: int) -> str | None:
    return None if 1 <= port <= 65535 else "must be within 1-65535"


def check_ref(ref: str) -> str | None:
    if ref == "":
        return None
    if not REF_RE.fullmatch(ref) or ".." in ref:
        return (
            "may hold only letters, digits, '.', '_', '/' and '-', must not start with '-', "
            "must not contain '..' and is at most 200 characters"
        )
    return None


def check_health_path(path: str) -> str | None:
    if not HEALTH_PATH_RE.fullmatch(path):
        return "must be a URL path starting with '/' (at most 256 characters, no spaces)"
    return None


def check_context(context: str) -> str | None:
    if not CONTEXT_RE.fullmatch(context) or CONTEXT_PARENT_RE.search(context):
        return "must be a relative directory of the repository without '..' (at most 255 characters)"
    return None


def _check_env(env: Mapping[str, Any], fields: dict[str, str]) -> None:
    for key, value in env.items():
        where = f"env.{key}" if len(key) <= 64 and ENV_KEY_RE.fullmatch(key) else "env"
        if not ENV_KEY_RE.fullmatch(key):
            fields.setdefault("env", "variable names must match ^[A-Za-z_][A-Za-z0-9_]*$")
        elif not isinstance(value, str):
            fields.setdefault(where, "must be a string")
        elif "\x00" in value:
            fields.setdefault(where, "must not contain NUL characters")


def parse_deploy(body: Any, policy: RepoPolicy | None = None) -> DeploySpec:
    """Validate a ``POST /apps/deploy`` body (``repo`` against the server's ``policy``)."""
    require_object(body)
    fields, constrained = schema_errors(_DEPLOY_VALIDATOR, body)

    def rule(name: str, kind: type, check: Any) -> None:
        value = body.get(name)
        if name in fields or name not in body or isinstance(value, bool):
            return
        if kind is int and isinstance(value, float):
            # JSON Schema counts 8080.0 as an integer; anything else is not.
            if not value.is_integer():
                fields[name] = "must be an integer"
                return
            value = int(value)
        if not isinstance(value, kind):
            return
        reason = check(value)
        if reason:
            fields[name] = reason

    if "name" not in fields and "name" in body:
        reason = check_name(body["name"])
        if reason:
            fields["name"] = reason
    rule("repo", str, lambda repo: check_repo(repo, policy or RepoPolicy()))
    rule("port", int, check_port)
    rule("container_port", int, check_container_port)
    rule("ref", str, check_ref)
    rule("health_path", str, check_health_path)
    rule("context", str, check_context)
    if isinstance(body.get("env"), dict):
        _check_env(body["env"], fields)
    resources = _check_resources(body.get("resources"), fields)
    for name in constrained:
        fields.setdefault(name, "is invalid")
    if fields:
        raise ValidationError("the deploy request is invalid: " + ", ".join(sorted(fields)), fields=fields)
    return DeploySpec(
        name=body["name"],
        repo=body["repo"],
        port=int(body["port"]),
        container_port=int(body["container_port"]),
        ref=body.get("ref", ""),
        env=dict(body.get("env", {})),
        health_path=body.get("health_path", "/"),
        context=body.get("context", "."),
        resources=resources,
    )
