"""The argument specs really fire: one ansible-playbook run on localhost (connection local) that
includes roles with a missing, a wrong-typed and an out-of-choices option, each in a block whose rescue
records which task failed and why. Nothing on the host changes: validation is a role's first task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")

# case: (role, tasks_from, vars, what the failure names)
CASES: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "missing": ("app_health", "main", {}, "missing required arguments: app_health_url"),
    "type": (
        "app_proxy",
        "main",
        {"app_proxy_name": "fire", "app_proxy_port": "not-a-port"},
        "argument 'app_proxy_port' is of type str and we were unable to convert to int",
    ),
    "choices": (
        "app_proxy",
        "main",
        {"app_proxy_name": "fire", "app_proxy_state": "maybe"},
        "app_proxy_state must be one of: present, absent",
    ),
    "entry point": (
        "app",
        "status",
        {"app_name": "fire", "app_status_retries": "many"},
        "argument 'app_status_retries' is of type str and we were unable to convert to int",
    ),
    "missing in main": (
        "app",
        "main",
        {"app_name": "fire", "app_port": 8080, "app_container_port": 5000},
        "missing required arguments: app_repo",
    ),
}


def playbook() -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    for case, (role, tasks_from, variables, _) in CASES.items():
        include: dict[str, Any] = {"name": role, "tasks_from": tasks_from}
        record = (
            f"{{{json.dumps(case)}: {{'task': ansible_failed_task.name, 'msg': ansible_failed_result.msg}}}}"
        )
        tasks.append(
            {
                "name": f"Case {case}",
                "block": [
                    {"name": f"Include {role}", "ansible.builtin.include_role": include, "vars": variables}
                ],
                "rescue": [
                    {
                        "name": "Record the failure",
                        "ansible.builtin.set_fact": {
                            "fire_failures": f"{{{{ fire_failures | default({{}}) | combine({record}) }}}}"
                        },
                    }
                ],
            }
        )
    tasks.append({"name": "Show", "ansible.builtin.debug": {"msg": "FIRE {{ fire_failures | to_json }}"}})
    return [{"name": "Fire the argument specs", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]


@pytest.fixture(scope="module")
def failures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    path = tmp_path_factory.mktemp("fire") / "fire.yml"
    path.write_text(yaml.safe_dump(playbook(), sort_keys=False))
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, str(path)],
        cwd=REPO,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if '"msg": "FIRE ' in line)
    result: dict[str, dict[str, str]] = json.loads(json.loads("{" + line.strip() + "}")["msg"][5:])
    return result


@pytest.mark.parametrize("case", sorted(CASES))
def test_argument_spec_validation_fails_naming_the_option(case: str, failures: dict[str, Any]) -> None:
    _, tasks_from, _, expected = CASES[case]
    assert case in failures, failures
    assert failures[case]["task"].startswith(f"Validating arguments against arg spec '{tasks_from}'")
    assert "Validation of arguments failed" in failures[case]["msg"]
    assert expected in failures[case]["msg"]
