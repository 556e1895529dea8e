"""SSH host keys are always verified: no product file (everything tracked but tests/) turns the check off."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = [
    re.compile(r"StrictHostKeyChecking\s*[= ]\s*(no|off|false|accept-new)\b", re.IGNORECASE),
    re.compile(r"host_key_checking\s*[=:]\s*(false|no|0)\b", re.IGNORECASE),
    re.compile(r"ANSIBLE_HOST_KEY_CHECKING\s*[=:]\s*[\"']?(false|no|0)\b", re.IGNORECASE),
    re.compile(r"UserKnownHostsFile\s*[= ]\s*/dev/null", re.IGNORECASE),
    re.compile(r"check_host_keys\s*[=:]\s*[\"']?(ignore|accept)", re.IGNORECASE),
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


def test_the_checks_would_catch_the_usual_spellings() -> None:
    samples = [
        "-o StrictHostKeyChecking=no",
        "StrictHostKeyChecking no",
        "host_key_checking = False",
        "host_key_checking: false",
        "ANSIBLE_HOST_KEY_CHECKING=False",
        'ANSIBLE_HOST_KEY_CHECKING: "false"',
        "-o UserKnownHostsFile=/dev/null",
    ]
    for sample in samples:
        assert any(p.search(sample) for p in FORBIDDEN), sample
    for fine in (
        "host_key_checking = True",
        "StrictHostKeyChecking=yes",
        'ANSIBLE_HOST_KEY_CHECKING": "True"',
    ):
        assert not any(p.search(fine) for p in FORBIDDEN), fine
