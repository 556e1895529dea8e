"""The contract is defined once (roles/paas_contract/vars/main.yml): Python, the OpenAPI document and
the roles read it, and no other file of paas/ or roles/ keeps a copy of its values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from paas import contract
from paas.api.openapi import openapi_document
from paas.apps.model import APP_SCHEMA

REPO_ROOT = Path(__file__).resolve().parents[2]
# Literal spellings of contract values that would be copies (the file itself excepted).
COPIES = {
    "name pattern": re.compile(re.escape("[a-z][a-z0-9-]{0,30}")),
    "job id pattern": re.compile(re.escape("[0-9a-f]{32}")),
    "slot port range": re.compile(r"\b6(1000|3999)\b"),
    "failure steps": re.compile(r"clone\W+build\W+start\W+health\W+cutover"),
}


def test_python_reads_the_roles_definition() -> None:
    data = yaml.safe_load(contract.CONTRACT_FILE.read_text())["paas_contract"]
    assert data["name_pattern"] == contract.NAME_PATTERN
    assert frozenset(data["reserved_names"]) == contract.RESERVED_NAMES
    assert tuple(data["failure_steps"]) == contract.FAILURE_STEPS
    assert (data["slot_port_min"], data["slot_port_max"]) == (contract.SLOT_PORT_MIN, contract.SLOT_PORT_MAX)


def test_openapi_document_uses_the_contract() -> None:
    schemas = openapi_document()["components"]["schemas"]
    deploy = schemas["DeployRequest"]["properties"]
    assert deploy["name"]["pattern"] == contract.NAME_PATTERN
    assert set(deploy["name"]["not"]["enum"]) == contract.RESERVED_NAMES
    assert deploy["port"]["not"]["minimum"] == contract.SLOT_PORT_MIN
    assert deploy["port"]["not"]["maximum"] == contract.SLOT_PORT_MAX
    assert APP_SCHEMA["properties"]["state"]["enum"] == list(contract.APP_STATES)
    assert schemas["App"] == APP_SCHEMA


@pytest.mark.parametrize("name", ["deploy", "Web", "-web", "a" * 32, "", 5])
def test_check_name_refuses(name: object) -> None:
    assert contract.check_name(name) is not None


def test_check_name_accepts() -> None:
    assert contract.check_name("web-1") is None


def _product_files() -> list[Path]:
    files = [*REPO_ROOT.joinpath("paas").rglob("*.py"), *REPO_ROOT.joinpath("roles").rglob("*")]
    return [
        f
        for f in files
        if f.is_file() and f.suffix in (".py", ".yml", ".yaml", ".j2") and f != contract.CONTRACT_FILE
    ]


@pytest.mark.parametrize("what", sorted(COPIES))
def test_no_other_file_copies_the_contract(what: str) -> None:
    pattern = COPIES[what]
    copies = [
        str(f.relative_to(REPO_ROOT))
        for f in _product_files()
        if "/molecule/" not in str(f) and pattern.search(f.read_text(encoding="utf-8"))
    ]
    assert copies == []


def test_the_copy_check_can_see_a_copy() -> None:
    samples = {
        "name pattern": "app_name is match('^[a-z][a-z0-9-]{0,30}$')",
        "job id pattern": 're.fullmatch(r"[0-9a-f]{32}", job_id)',
        "slot port range": "app_slot_port_min: 61000",
        "failure steps": 'FAILED_STEPS = ("clone", "build", "start", "health", "cutover")',
    }
    for what, sample in samples.items():
        assert COPIES[what].search(sample), what
