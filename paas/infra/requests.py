"""The infrastructure's requests: ``POST /infra/provision`` and ``POST /infra/destroy`` bodies in, typed
specs out, or a :class:`ValidationError` naming each bad field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from paas.core.config import ENVIRONMENTS
from paas.core.errors import ValidationError
from paas.core.validation import require_object, schema_errors

VARIABLE_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,63}$"
# Sizes are bounded by the body limit (64 KiB) alone.
_TF_SCALAR: dict[str, Any] = {
    "anyOf": [{"type": "string", "pattern": r"^[^\x00]*$"}, {"type": "number"}, {"type": "boolean"}]
}

PROVISION_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "environment": {
            "enum": list(ENVIRONMENTS),
            "description": "terraform/<environment>/ to apply; default: the server's PAAS_ENVIRONMENT.",
        },
        "variables": {
            "type": "object",
            "propertyNames": {"pattern": VARIABLE_NAME_PATTERN},
            "additionalProperties": {
                "anyOf": [
                    _TF_SCALAR,
                    {"type": "array", "items": _TF_SCALAR},
                    {"type": "object", "additionalProperties": _TF_SCALAR},
                ]
            },
            "description": "Terraform variables of the environment's module (strings, numbers, booleans, "
            "or lists or maps of those). Values of variables whose name contains key, secret, token, "
            "password, passphrase or credential are never stored nor shown; the others are kept for "
            "later provisions and the destroy.",
        },
    },
}

DESTROY_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"force": {"type": "boolean", "description": "Remove every app first."}},
}


VARIABLE_NAME_RE = re.compile(VARIABLE_NAME_PATTERN.strip("^$"))
_DESTROY_VALIDATOR = Draft202012Validator(DESTROY_REQUEST)


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
    check (:meth:`paas.infra.environments.TerraformEnvironment.check_variables`).
    """
    require_object(body)
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
    require_object(body)
    fields, _ = schema_errors(_DESTROY_VALIDATOR, body)
    if fields:
        raise ValidationError("the destroy request is invalid: " + ", ".join(sorted(fields)), fields=fields)
    return bool(body.get("force", False))
