"""The security boundary: JSON in, a typed spec out, or a :class:`ValidationError` naming each bad field.

The rules are the ones ``roles/app/tasks/assert.yml`` enforces (so a request the API accepts is never
refused by the playbook), matched against the whole value (``re.fullmatch``: no trailing newline slips
through), plus the API's own: no unknown fields, no control characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from paas import schemas
from paas.config import ENVIRONMENTS
from paas.errors import ValidationError

NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
REF_RE = re.compile(r"[A-Za-z0-9._/][A-Za-z0-9._/-]{0,199}")
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HEALTH_PATH_RE = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,255}")
CONTEXT_RE = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._/-]{0,254}")
CONTEXT_PARENT_RE = re.compile(r"(^|/)\.\.(/|$)")
# The same alternatives as assert.yml: https://host[:port]/, ssh://[user@]host[:port]/, user@host:path,
# file:///. Hosts take no '@' (no credentials) and no whitespace.
REPO_RE = re.compile(
    r"(https://[^/@:\s]+(:[0-9]+)?/"
    r"|ssh://([A-Za-z0-9._-]+@)?[^/@:\s]+(:[0-9]+)?/"
    r"|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]"
    r"|file:///)"
)
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
REPO_MAX = 2048
PORT_MIN, PORT_MAX = 1024, 65535
SLOT_PORT_MIN, SLOT_PORT_MAX = 61000, 63999

VARIABLE_NAME_RE = re.compile(schemas.VARIABLE_NAME_PATTERN.strip("^$"))
_DEPLOY_VALIDATOR = Draft202012Validator(schemas.DEPLOY_REQUEST)
_DESTROY_VALIDATOR = Draft202012Validator(schemas.DESTROY_REQUEST)

_TYPE_WORDS = {"string": "a string", "integer": "an integer", "object": "an object", "boolean": "a boolean"}


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

    def extra_vars(self) -> dict[str, Any]:
        """The deploy playbook's inputs (roles/app/defaults/main.yml)."""
        return {
            "app_name": self.name,
            "app_repo": self.repo,
            "app_ref": self.ref,
            "app_port": self.port,
            "app_container_port": self.container_port,
            "app_env": dict(self.env),
            "app_health_path": self.health_path,
            "app_context": self.context,
        }


def _field_of(path: list[Any] | Any) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "body"


# Constraints the Python rules below judge with better words (and without echoing the value).
_RULE_VALIDATORS = frozenset({"pattern", "minimum", "maximum", "minLength", "maxLength"})


def _schema_errors(validator: Draft202012Validator, body: Any) -> tuple[dict[str, str], set[str]]:
    """Structural errors (missing, unknown, wrong type), one reason per field; and the fields that
    broke a value constraint, for the rules to explain."""
    fields: dict[str, str] = {}
    constrained: set[str] = set()
    for error in sorted(validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path]):
        where = list(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            for name in error.validator_value:
                if name not in error.instance:
                    fields.setdefault(_field_of([*where, name]), "is required")
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = error.schema.get("properties", {})
            for name in error.instance:
                if name not in known:
                    fields.setdefault(_field_of([*where, name]), "is not a known field")
        elif error.validator == "propertyNames":
            fields.setdefault(_field_of(where), "variable names must match ^[A-Za-z_][A-Za-z0-9_]*$")
        elif error.validator == "type":
            expected = error.validator_value
            word = _TYPE_WORDS.get(expected, expected) if isinstance(expected, str) else "of another type"
            fields.setdefault(_field_of(where), f"must be {word}")
        elif error.validator in _RULE_VALIDATORS:
            constrained.add(_field_of(where))
        else:
            fields.setdefault(_field_of(where), "is invalid")
    return fields, constrained


# Names that are routes of the API (/apps/deploy).
RESERVED_NAMES = frozenset({"deploy"})


def check_name(name: Any) -> str | None:
    """Why ``name`` is not a valid app name, or None."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        return "must match ^[a-z][a-z0-9-]{0,30}$"
    if name in RESERVED_NAMES:
        return f"{name!r} is reserved"
    return None


def check_repo(repo: str) -> str | None:
    if len(repo) > REPO_MAX:
        return f"must be at most {REPO_MAX} characters"
    if re.search(r"\s", repo) or CONTROL_RE.search(repo):
        return "must not contain whitespace or control characters"
    if "::" in repo:
        return "must not contain '::'"
    if repo.startswith("-"):
        return "must not start with '-'"
    if not REPO_RE.match(repo):
        return (
            "must be an https://host/path, ssh://[user@]host/path, user@host:path or file:///path URL "
            "without credentials"
        )
    return None


def check_port(port: int) -> str | None:
    if not PORT_MIN <= port <= PORT_MAX:
        return f"must be within {PORT_MIN}-{PORT_MAX}"
    if SLOT_PORT_MIN <= port <= SLOT_PORT_MAX:
        return f"is reserved for the platform's internal container ports ({SLOT_PORT_MIN}-{SLOT_PORT_MAX})"
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


def parse_deploy(body: Any) -> DeploySpec:
    """Validate a ``POST /apps/deploy`` body."""
    if not isinstance(body, dict):
        raise ValidationError(
            "the request body must be a JSON object", fields={"body": "must be a JSON object"}
        )
    fields, constrained = _schema_errors(_DEPLOY_VALIDATOR, body)

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
    rule("repo", str, check_repo)
    rule("port", int, check_port)
    rule("container_port", int, check_container_port)
    rule("ref", str, check_ref)
    rule("health_path", str, check_health_path)
    rule("context", str, check_context)
    if isinstance(body.get("env"), dict):
        _check_env(body["env"], fields)
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
    )


@dataclass(frozen=True)
class ProvisionSpec:
    """A valid provision request. ``variables`` may hold secrets: never logged."""

    environment: str
    variables: Mapping[str, Any] = field(default_factory=dict, repr=False)


def _scalar_reason(value: Any) -> str | None:
    if isinstance(value, bool | int | float):
        return None
    if isinstance(value, str):
        return "must not contain NUL characters" if "\x00" in value else None
    return "must be a string, a number, a boolean, or a list or an object of those"


def _variable_reason(value: Any) -> str | None:
    """Why a Terraform variable's value is not accepted (a scalar, or a list or map of scalars)."""
    if isinstance(value, list):
        return next((r for r in map(_scalar_reason, value) if r), None)
    if isinstance(value, dict):
        return next((r for r in map(_scalar_reason, value.values()) if r), None)
    return _scalar_reason(value)


def parse_provision(body: Any, default_environment: str) -> ProvisionSpec:
    """Validate a ``POST /infra/provision`` body: ``{"environment"?, "variables"?}``.

    Variable names and value shapes only; what the environment's module declares is the service's
    check (:meth:`paas.infra.TerraformEnvironment.check_variables`).
    """
    if not isinstance(body, dict):
        raise ValidationError(
            "the request body must be a JSON object", fields={"body": "must be a JSON object"}
        )
    fields: dict[str, str] = {}
    for name in body:
        if name not in ("environment", "variables"):
            fields[name if len(str(name)) <= 64 else "body"] = "is not a known field"
    environment = body.get("environment", default_environment)
    if environment not in ENVIRONMENTS:
        fields["environment"] = f"must be one of {', '.join(ENVIRONMENTS)}"
    variables = body.get("variables", {})
    if not isinstance(variables, dict):
        fields["variables"] = "must be an object"
        variables = {}
    for name, value in variables.items():
        if not VARIABLE_NAME_RE.fullmatch(name):
            fields.setdefault("variables", "names must match ^[a-z_][a-z0-9_]*$ (at most 64 characters)")
            continue
        reason = _variable_reason(value)
        if reason:
            fields[f"variables.{name}"] = reason
    if fields:
        raise ValidationError("the provision request is invalid: " + ", ".join(sorted(fields)), fields=fields)
    return ProvisionSpec(environment=str(environment), variables=dict(variables))


def parse_destroy(body: Any) -> bool:
    """Validate a ``POST /infra/destroy`` body (``{}`` or ``{"force": bool}``); returns ``force``."""
    if not isinstance(body, dict):
        raise ValidationError(
            "the request body must be a JSON object", fields={"body": "must be a JSON object"}
        )
    fields, _ = _schema_errors(_DESTROY_VALIDATOR, body)
    if fields:
        raise ValidationError("the destroy request is invalid: " + ", ".join(sorted(fields)), fields=fields)
    return bool(body.get("force", False))


def parse_empty(body: Any) -> None:
    """Bodies of actions that take no input: an empty JSON object (the API reads no body as ``{}``)."""
    if body == {}:
        return
    raise ValidationError(
        "this request takes no body (or an empty JSON object)", fields={"body": "must be empty"}
    )
