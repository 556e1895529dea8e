"""SSH host keys are always verified: no product file (everything tracked but tests/) turns the check off."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def setting(name: str, values: str) -> re.Pattern[str]:
    """``name`` set to one of ``values``, however it is spelled: ssh options (``-o Name=no``, ``Name no``),
    INI and YAML (``name = false``, ``name: "false"``), shell (``NAME=0``) and Python (``env["NAME"] =
    "False"``, ``{"Name": "no"}``, ``f(Name="no")``, ``setdefault("NAME", "0")``): the name may be
    followed by its closing quote and bracket, the value preceded by a quote."""
    return re.compile(rf"{name}[\"']?\]?\s*[=:, ]\s*[\"']?({values})\b", re.IGNORECASE)


FORBIDDEN = [
    setting("StrictHostKeyChecking", "no|off|false|accept-new"),
    setting("host_key_checking", "false|no|off|0"),
    setting("ANSIBLE_HOST_KEY_CHECKING", "false|no|off|0"),
    setting("UserKnownHostsFile", "/dev/null"),
    setting("GlobalKnownHostsFile", "/dev/null"),
    setting("check_host_keys", "ignore|accept"),
    # paramiko: a client that accepts (or only warns about) an unknown host key.
    re.compile(r"set_missing_host_key_policy\(\s*(paramiko\.)?(client\.)?(AutoAddPolicy|WarningPolicy)\b"),
    # asyncssh: known_hosts=None turns the check off.
    re.compile(r"known_hosts\s*=\s*None\b"),
]


def product_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "-z"], capture_output=True, check=True
    ).stdout.decode()
    files = [REPO_ROOT / name for name in listed.split("\0") if name and not name.startswith("tests/")]
    return [f for f in files if f.is_file()]


def test_the_product_files_are_found() -> None:
    names = {str(p.relative_to(REPO_ROOT)) for p in product_files()}
    assert {"ansible.cfg", "inventory/terraform.py", "paas/execution/runner.py", "README.md"} <= names


@pytest.mark.parametrize("pattern", FORBIDDEN, ids=lambda p: p.pattern.split("\\")[0])
def test_no_product_file_turns_host_key_checking_off(pattern: re.Pattern[str]) -> None:
    offenders = []
    for path in product_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [f"{path.relative_to(REPO_ROOT)}: {m.group(0)}" for m in pattern.finditer(text)]
    assert offenders == []


CAUGHT = [
    # ssh options and config
    "-o StrictHostKeyChecking=no",
    "StrictHostKeyChecking no",
    "StrictHostKeyChecking accept-new",
    "-o UserKnownHostsFile=/dev/null",
    "GlobalKnownHostsFile /dev/null",
    # ansible.cfg, YAML, shell
    "host_key_checking = False",
    "host_key_checking: false",
    "ansible_host_key_checking: no",
    "ANSIBLE_HOST_KEY_CHECKING=False",
    'ANSIBLE_HOST_KEY_CHECKING: "false"',
    "check_host_keys: ignore",
    # Python
    'env["ANSIBLE_HOST_KEY_CHECKING"] = "False"',
    "os.environ['ANSIBLE_HOST_KEY_CHECKING']='0'",
    'os.environ.setdefault("ANSIBLE_HOST_KEY_CHECKING", "False")',
    'env = {"ANSIBLE_HOST_KEY_CHECKING": "False", "PATH": path}',
    'env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False")',
    '{"host_key_checking": False}',
    "run(inventory, host_key_checking=False)",
    '{"StrictHostKeyChecking": "no"}',
    'ssh_options = {\n    "StrictHostKeyChecking":\n        "no",\n}',
    'connect(host, StrictHostKeyChecking="no")',
    'options["UserKnownHostsFile"] = "/dev/null"',
    '["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]',
    'extravars["ansible_ssh_common_args"] = "-o StrictHostKeyChecking=no"',
    'kwargs = {"check_host_keys": "ignore"}',
    "client.set_missing_host_key_policy(paramiko.AutoAddPolicy())",
    "client.set_missing_host_key_policy(WarningPolicy())",
    "await asyncssh.connect(host, known_hosts=None)",
]
NOT_CAUGHT = [
    "host_key_checking = True",
    "StrictHostKeyChecking=yes",
    "-o UserKnownHostsFile=/var/lib/paas/known_hosts/ssh -o StrictHostKeyChecking=yes",
    'ANSIBLE_HOST_KEY_CHECKING": "True"',
    'env["ANSIBLE_HOST_KEY_CHECKING"] = "True"',
    'os.environ.setdefault("ANSIBLE_HOST_KEY_CHECKING", "1")',
    '{"StrictHostKeyChecking": "yes", "UserKnownHostsFile": str(known_hosts)}',
    'connect(host, StrictHostKeyChecking="yes")',
    '{"host_key_checking": True}',
    "check_host_keys: enforce",
    "client.set_missing_host_key_policy(paramiko.RejectPolicy())",
    "await asyncssh.connect(host, known_hosts=str(known_hosts))",
    "SSH host keys are verified (`host_key_checking = True`); nothing turns it off.",
]


@pytest.mark.parametrize("sample", CAUGHT)
def test_the_checks_catch_each_spelling(sample: str) -> None:
    assert any(p.search(sample) for p in FORBIDDEN), sample


@pytest.mark.parametrize("sample", NOT_CAUGHT)
def test_the_checks_leave_what_keeps_checking(sample: str) -> None:
    assert [p.pattern for p in FORBIDDEN if p.search(sample)] == [], sample


def test_every_check_catches_a_sample() -> None:
    """A pattern that catches no sample could be one that never matches anything."""
    assert [p.pattern for p in FORBIDDEN if not any(p.search(s) for s in CAUGHT)] == []
