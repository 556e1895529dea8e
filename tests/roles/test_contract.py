"""The contract is defined once, in roles/paas_contract/vars/main.yml, and only read elsewhere in roles/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
CONTRACT_FILE = ROLES / "paas_contract" / "vars" / "main.yml"

# What the Python service reads (paas_contract.<key>), with the type of each value.
KEYS: dict[str, type] = {
    "name_pattern": str,
    "reserved_names": list,
    "job_id_pattern": str,
    "app_states": list,
    "live_states": list,
    "failure_steps": list,
    "port_min": int,
    "port_max": int,
    "slot_port_min": int,
    "slot_port_max": int,
}


def contract() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CONTRACT_FILE.read_text())
    assert list(data) == ["paas_contract"]
    result: dict[str, Any] = data["paas_contract"]
    return result


def role_files() -> list[Path]:
    """The roles' text files outside paas_contract (tasks, defaults, specs, modules, templates, READMEs)."""
    return sorted(
        path
        for path in ROLES.rglob("*")
        if path.is_file()
        and "paas_contract" not in path.parts
        and path.suffix in {".yml", ".py", ".j2", ".md"}
    )


def test_contract_keys_and_types() -> None:
    values = contract()
    assert set(values) == set(KEYS)
    for key, kind in KEYS.items():
        assert isinstance(values[key], kind), key
    assert "{{" not in CONTRACT_FILE.read_text()
    assert set(values["live_states"]) <= set(values["app_states"])
    assert values["port_min"] <= values["slot_port_min"] < values["slot_port_max"] <= values["port_max"]
    for pattern in (values["name_pattern"], values["job_id_pattern"]):
        re.compile(pattern)
    assert all(re.fullmatch(values["name_pattern"], name) for name in values["reserved_names"])


# Values only the contract may spell out. (1024 and 65535 are also every TCP port's bounds, "deploy" and
# the state names plain words: the roles may use those.)
UNIQUE = ("name_pattern", "job_id_pattern", "failure_steps", "slot_port_min", "slot_port_max")


def copies(value: Any) -> list[str]:
    """How a contract value would look if a role kept its own copy of it."""
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, str):
        return [value, value.strip("^$")]
    return [", ".join(value), ",".join(value), "|".join(value), ", ".join(f"'{v}'" for v in value)]


@pytest.mark.parametrize("key", UNIQUE)
def test_no_role_keeps_its_own_copy(key: str) -> None:
    needles = copies(contract()[key])
    found = [
        f"{path.relative_to(ROLES)}: {needle}"
        for path in role_files()
        for needle in needles
        if needle in path.read_text()
    ]
    assert found == []


def test_roles_reading_the_contract_depend_on_it() -> None:
    for role_dir in sorted(p for p in ROLES.iterdir() if p.is_dir() and p.name != "paas_contract"):
        code = [
            path
            for sub in ("tasks", "defaults", "vars", "handlers", "templates")
            for path in (role_dir / sub).rglob("*")
            if path.is_file()
        ]
        if not any("paas_contract" in path.read_text() for path in code):
            continue
        meta = yaml.safe_load((role_dir / "meta" / "main.yml").read_text())
        dependencies = [d["role"] if isinstance(d, dict) else d for d in meta.get("dependencies") or []]
        assert "paas_contract" in dependencies, role_dir.name
