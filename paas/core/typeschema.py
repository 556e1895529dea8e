"""JSON Schema from Python types: the API's documents are typed once (``TypedDict``) and their OpenAPI
schemas derive from those types.

Supported: ``str``, ``int``, ``float``, ``bool``, ``None`` unions, ``Literal``, ``list[T]``,
``dict[str, T]``, ``Any``, nested ``TypedDict`` (every key required: the API always sends each one) and
``Annotated[T, {...}]``, whose dict adds JSON Schema keywords (``pattern``, ``enum``, ``format``,
``description``...).
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def schema_of(tp: Any) -> dict[str, Any]:
    """The JSON Schema of the type ``tp``."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extras = get_args(tp)
        schema = schema_of(base)
        for extra in extras:
            if isinstance(extra, dict):
                schema.update(extra)
        return schema
    if tp is Any:
        return {}
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if origin in (Union, types.UnionType):
        return _nullable(tp)
    if origin is list:
        (item,) = get_args(tp)
        return {"type": "array", "items": schema_of(item)}
    if origin is dict:
        _, value = get_args(tp)
        mapping: dict[str, Any] = {"type": "object"}
        if value is not Any:
            mapping["additionalProperties"] = schema_of(value)
        return mapping
    if is_typeddict(tp):
        hints = get_type_hints(tp, include_extras=True)
        return {
            "type": "object",
            "required": list(hints),
            "properties": {name: schema_of(hint) for name, hint in hints.items()},
        }
    raise TypeError(f"no JSON Schema for {tp!r}")


def _nullable(tp: Any) -> dict[str, Any]:
    args = [a for a in get_args(tp) if a is not type(None)]
    if len(args) != 1 or len(args) == len(get_args(tp)):
        raise TypeError(f"only `T | None` unions have a JSON Schema here, not {tp!r}")
    schema = schema_of(args[0])
    kind = schema.get("type")
    if isinstance(kind, str):
        schema["type"] = [kind, "null"]
    elif "enum" in schema:
        schema["enum"] = [*schema["enum"], None]
    else:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema
