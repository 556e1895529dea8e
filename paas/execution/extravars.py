"""Request data is data, never code: the extra vars file of a playbook run.

Every string of a request's extra vars (keys and values, at any depth) is written tagged ``!unsafe``, so
Ansible never templates it; only the operator's own variables (``PAAS_EXTRA_VARS``) stay plain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml


class _Unsafe(str):
    """A string Ansible must never template: written as ``!unsafe``."""


class _VarsDumper(yaml.SafeDumper):
    """YAML of extra vars: plain data, with ``!unsafe`` on request strings."""


def _represent_unsafe(dumper: yaml.SafeDumper, data: _Unsafe) -> yaml.ScalarNode:
    return dumper.represent_scalar("!unsafe", str(data), style='"')


_VarsDumper.add_representer(_Unsafe, _represent_unsafe)


def mark_unsafe(value: Any) -> Any:
    """``value`` with every string in it (mapping keys too, at any depth) marked unsafe."""
    if isinstance(value, str):
        # Ansible reads an empty !unsafe scalar as null; an empty string holds no template anyway.
        return _Unsafe(value) if value else value
    if isinstance(value, Mapping):
        return {mark_unsafe(str(k)): mark_unsafe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mark_unsafe(v) for v in value]
    return value


def render_extra_vars(trusted: Mapping[str, Any], request: Mapping[str, Any]) -> str:
    """The extra vars file: the operator's ``trusted`` variables as they are, under the request's,
    whose strings are all ``!unsafe``. Top-level names are variable names (not data): kept plain."""
    payload: dict[str, Any] = dict(trusted)
    payload.update({str(name): mark_unsafe(value) for name, value in request.items()})
    return yaml.dump(payload, Dumper=_VarsDumper, default_flow_style=False, allow_unicode=True)
