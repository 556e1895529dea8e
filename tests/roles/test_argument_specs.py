"""The roles stand alone: each meta/argument_specs.yml agrees with its defaults/main.yml.

Read from the YAML files, no Ansible run. The rules, for every role with an argument spec:

- a required option has no default, neither in the spec nor in defaults/main.yml;
- every variable of defaults/main.yml is an option of the spec, of the same type and with the same
  default; every option with a default in the spec has it in defaults/main.yml (one to one);
- an optional option without a default is one that another entry point of the role requires
  (defaults/main.yml serves every entry point, so it cannot hold it: the tasks take its absence);
- options with a closed set of values (``*_state``) list it as ``choices``, and defaults lie in them;
- variables and options carry the role's prefix.

A default that interpolates another variable (``paas/{{ app_name }}``) is written ``paas/<app_name>`` in
the spec: Ansible templates the spec at validation time, when a required variable may be missing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
SPEC_ROLES = sorted(p.parent.parent.name for p in ROLES.glob("*/meta/argument_specs.yml"))

# Python types a default of each argument spec type may have.
TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "path": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
    "raw": (object,),
}
SIMPLE_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.exists() else None


def spec_form(value: Any) -> Any:
    """How the spec writes a default of defaults/main.yml: ``{{ var }}`` as ``<var>``."""
    return SIMPLE_VARIABLE.sub(r"<\1>", value) if isinstance(value, str) else value


def is_template(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def violations(role_dir: Path) -> list[str]:
    """Every broken rule of one role, as readable lines (empty: none)."""
    role = role_dir.name
    defaults: dict[str, Any] = load(role_dir / "defaults" / "main.yml") or {}
    entry_points: dict[str, Any] = (load(role_dir / "meta" / "argument_specs.yml") or {}).get(
        "argument_specs"
    ) or {}
    found: list[str] = []
    if "main" not in entry_points:
        found.append(f"{role}: no entry point main")
    required_somewhere = {
        name
        for spec in entry_points.values()
        for name, option in (spec.get("options") or {}).items()
        if option.get("required")
    }
    declared: set[str] = set()
    for entry, spec in entry_points.items():
        for name, option in (spec.get("options") or {}).items():
            where = f"{role} {entry} {name}"
            declared.add(name)
            if not name.startswith(f"{role}_"):
                found.append(f"{where}: not prefixed {role}_")
            kind = option.get("type", "str")
            if kind not in TYPES:
                found.append(f"{where}: unknown type {kind}")
                continue
            if option.get("required"):
                if "default" in option:
                    found.append(f"{where}: required, with a default in the spec")
                if name in defaults:
                    found.append(f"{where}: required, with a default in defaults/main.yml")
                continue
            if "default" not in option:
                if name in defaults:
                    found.append(f"{where}: defaults/main.yml has it, the spec gives no default")
                elif name not in required_somewhere:
                    found.append(f"{where}: optional without a default")
                continue
            if name not in defaults:
                found.append(f"{where}: spec default {option['default']!r}, none in defaults/main.yml")
                continue
            value = defaults[name]
            if option["default"] != spec_form(value):
                found.append(f"{where}: spec default {option['default']!r} != defaults/main.yml {value!r}")
            if not is_template(value) and not isinstance(value, TYPES[kind]):
                found.append(f"{where}: default {value!r} is not of type {kind}")
            if kind == "int" and isinstance(value, bool):
                found.append(f"{where}: default {value!r} is a boolean, not an int")
            choices = option.get("choices")
            if name.endswith("_state") and not choices:
                found.append(f"{where}: a closed set of values without choices")
            if choices and not is_template(value):
                values = value if kind == "list" else [value]
                if any(v not in choices for v in values):
                    found.append(f"{where}: default {value!r} not within choices {choices}")
    for name in sorted(set(defaults) - declared):
        found.append(f"{role} {name}: in defaults/main.yml, in no entry point of the spec")
    for name in sorted(defaults):
        if not name.startswith(f"{role}_"):
            found.append(f"{role} {name}: default not prefixed {role}_")
    return found


@pytest.mark.parametrize("role", SPEC_ROLES)
def test_argument_spec_agrees_with_defaults(role: str) -> None:
    assert violations(ROLES / role) == []


def test_every_role_with_defaults_has_an_argument_spec() -> None:
    with_defaults = {p.parent.parent.name for p in ROLES.glob("*/defaults/main.yml")}
    assert with_defaults <= set(SPEC_ROLES)
    assert "app" in SPEC_ROLES


def write_role(root: Path, defaults: dict[str, Any], options: dict[str, Any]) -> Path:
    role_dir = root / "demo"
    (role_dir / "defaults").mkdir(parents=True)
    (role_dir / "meta").mkdir()
    (role_dir / "defaults" / "main.yml").write_text(yaml.safe_dump(defaults))
    specs = {"argument_specs": {"main": {"short_description": "demo", "options": options}}}
    (role_dir / "meta" / "argument_specs.yml").write_text(yaml.safe_dump(specs))
    return role_dir


GOOD_OPTIONS: dict[str, Any] = {
    "demo_name": {"type": "str", "required": True},
    "demo_state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "demo_dir": {"type": "str", "default": "/srv/<demo_name>"},
}
GOOD_DEFAULTS: dict[str, Any] = {"demo_state": "present", "demo_dir": "/srv/{{ demo_name }}"}

BROKEN: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "required with a default": (
        {**GOOD_DEFAULTS, "demo_name": ""},
        GOOD_OPTIONS,
        "required, with a default in defaults/main.yml",
    ),
    "required with a spec default": (
        GOOD_DEFAULTS,
        {**GOOD_OPTIONS, "demo_name": {"type": "str", "required": True, "default": "x"}},
        "required, with a default in the spec",
    ),
    "default without a spec": (
        {**GOOD_DEFAULTS, "demo_extra": 1},
        GOOD_OPTIONS,
        "in no entry point",
    ),
    "spec default missing from defaults": (
        GOOD_DEFAULTS,
        {**GOOD_OPTIONS, "demo_port": {"type": "int", "default": 80}},
        "none in defaults/main.yml",
    ),
    "defaults differ": (
        {**GOOD_DEFAULTS, "demo_state": "absent"},
        GOOD_OPTIONS,
        "!= defaults/main.yml",
    ),
    "wrong type": (
        {**GOOD_DEFAULTS, "demo_port": "80"},
        {**GOOD_OPTIONS, "demo_port": {"type": "int", "default": "80"}},
        "is not of type int",
    ),
    "state without choices": (
        GOOD_DEFAULTS,
        {**GOOD_OPTIONS, "demo_state": {"type": "str", "default": "present"}},
        "without choices",
    ),
    "optional without a default": (
        GOOD_DEFAULTS,
        {**GOOD_OPTIONS, "demo_extra": {"type": "str"}},
        "optional without a default",
    ),
    "no prefix": (
        {**GOOD_DEFAULTS, "other": 1},
        {**GOOD_OPTIONS, "other": {"type": "int", "default": 1}},
        "not prefixed demo_",
    ),
}


def test_the_rules_pass_a_good_role(tmp_path: Path) -> None:
    assert violations(write_role(tmp_path, GOOD_DEFAULTS, GOOD_OPTIONS)) == []


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_rules_catch_a_violation(case: str, tmp_path: Path) -> None:
    defaults, options, expected = BROKEN[case]
    found = violations(write_role(tmp_path, defaults, options))
    assert any(expected in line for line in found), found
