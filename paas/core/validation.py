"""Request bodies against JSON Schema: one reason per bad field, in words (never echoing the value).

Each request's own module (:mod:`paas.apps.spec`, :mod:`paas.infra.requests`) holds its schema and
the rules a schema cannot say.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from paas.core.errors import ValidationError

_TYPE_WORDS = {"string": "a string", "integer": "an integer", "object": "an object", "boolean": "a boolean"}


def require_object(body: Any) -> None:
    """400 unless ``body`` is a JSON object."""
    if not isinstance(body, dict):
        raise ValidationError(
            "the request body must be a JSON object", fields={"body": "must be a JSON object"}
        )


def _field_of(path: list[Any] | Any) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "body"


# Constraints the Python rules below judge with better words (and without echoing the value).
_RULE_VALIDATORS = frozenset({"pattern", "minimum", "maximum", "minLength", "maxLength"})


def schema_errors(validator: Draft202012Validator, body: Any) -> tuple[dict[str, str], set[str]]:
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


def parse_empty(body: Any) -> None:
    """Bodies of actions that take no input: an empty JSON object (the API reads no body as ``{}``)."""
    if body == {}:
        return
    raise ValidationError(
        "this request takes no body (or an empty JSON object)", fields={"body": "must be empty"}
    )
