"""The playbook's validator agrees with the API's.

For every deploy body below, the verdict of the API (``parse_deploy`` with a policy that allows file://
anywhere, as the playbook does) is compared with the verdict of the app role's own input checks
(``tasks_from: assert``). One ansible-playbook run judges every case: each case is a host of its own
(connection local) whose vars are the case's inputs, in a 0600 inventory file with every string tagged
``!unsafe`` (as the service hands request data over); a refused case is a failed host.

A few differences are deliberate (``DIFFERENT``): there the API refuses what a person running
ansible-playbook may give.
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

from paas.apps.spec import RepoPolicy, parse_deploy

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
POLICY = RepoPolicy(allow_file=True, file_roots=(Path("/"),))

GOOD: dict[str, Any] = {
    "name": "agree",
    "repo": "https://example.com/org/app.git",
    "port": 18080,
    "container_port": 5000,
}


def case(**changes: Any) -> dict[str, Any]:
    """GOOD with some fields changed; a field set to None is left out."""
    body = {**GOOD, **changes}
    return {k: v for k, v in body.items() if v is not None}


CASES: dict[str, dict[str, Any]] = {
    # Accepted by both.
    "minimal": case(),
    "everything": case(
        ref="v1.2.3",
        env={"GREETING": "hi", "EMPTY": "", "_UNDER": "x y"},
        health_path="/healthz?probe=1",
        context="services/web",
        resources={"memory": "256m", "cpus": 0.5, "pids": 64},
    ),
    "name-longest": case(name="a" + "b" * 30),
    "name-dashes": case(name="my-app-2"),
    "repo-ssh": case(repo="ssh://git@example.com:2222/org/app.git"),
    "repo-scp": case(repo="git@example.com:org/app.git"),
    "repo-file": case(repo="file:///srv/git/app.git"),
    "port-lowest": case(port=1024),
    "port-highest": case(port=65535),
    "port-below-slots": case(port=60999),
    "port-above-slots": case(port=64000),
    "container-port-range": case(container_port=1),
    "limits-highest": case(resources={"memory": "1g", "cpus": 64, "pids": 65536}),
    "limits-lowest": case(resources={"memory": "6m", "cpus": 0.01, "pids": 16}),
    # Refused by both.
    "name-missing": case(name=None),
    "name-uppercase": case(name="Hello"),
    "name-digit-first": case(name="1app"),
    "name-too-long": case(name="a" * 32),
    "name-reserved": case(name="deploy"),
    "name-newline": case(name="app\n"),
    "name-number": case(name=5),
    "repo-missing": case(repo=None),
    "repo-http": case(repo="http://example.com/app.git"),
    "repo-ext": case(repo="ext::sh -c touch% /tmp/agree-pwned"),
    "repo-option": case(repo="--upload-pack=touch /tmp/agree-pwned"),
    "repo-credentials": case(repo="https://user:secret@example.com/app.git"),
    "repo-space": case(repo="https://example.com/a b.git"),
    "repo-host-dash": case(repo="ssh://-oProxyCommand=touch/x"),
    "repo-no-path": case(repo="https://example.com"),
    "repo-braces": case(repo="https://example.com/{x}.git"),
    "repo-control": case(repo="https://example.com/a\x01b.git"),
    "repo-scp-empty-path": case(repo="git@example.com:"),
    "repo-too-long": case(repo="https://example.com/" + "a" * 2040),
    "ref-option": case(ref="--upload-pack=touch"),
    "ref-dotdot": case(ref="main/../x"),
    "ref-shell": case(ref="main;touch /tmp/agree-pwned"),
    "ref-newline": case(ref="main\n"),
    "port-low": case(port=80),
    "port-high": case(port=70000),
    "port-slot-first": case(port=61000),
    "port-slot-last": case(port=63999),
    "port-boolean": case(port=True),
    "container-port-zero": case(container_port=0),
    "container-port-high": case(container_port=65536),
    "health-path-relative": case(health_path="healthz"),
    "health-path-space": case(health_path="/a b"),
    "health-path-newline": case(health_path="/x\n"),
    "context-parent": case(context="../x"),
    "context-inner-parent": case(context="a/../b"),
    "context-absolute": case(context="/etc"),
    "env-bad-key": case(env={"BAD-KEY": "x"}),
    "env-key-newline": case(env={"KEY\n": "x"}),
    "env-number": case(env={"PORT": 8080}),
    "env-float": case(env={"RATIO": 0.5}),
    "env-boolean": case(env={"DEBUG": True}),
    "env-null": case(env={"X": None}),
    "env-list": case(env={"X": ["a"]}),
    "env-not-object": case(env=["A=1"]),
    "cpus-too-few": case(resources={"cpus": 0.001}),
    "cpus-too-many": case(resources={"cpus": 65}),
    "pids-too-few": case(resources={"pids": 15}),
    "pids-too-many": case(resources={"pids": 65537}),
    "memory-too-small": case(resources={"memory": "5m"}),
}

# Refused by the API, accepted by the role on purpose.
DIFFERENT: dict[str, tuple[dict[str, Any], str]] = {
    "port-text": (case(port="8080"), "`-e app_port=8080` gives the playbook a string"),
    "memory-kilobytes": (
        case(resources={"memory": "8192k"}),
        "the role takes any Docker size, the API m or g",
    ),
    "repo-file-percent": (
        case(repo="file:///srv/git/a%20b.git"),
        "the API's file:// policy (PAAS_FILE_REPO_ROOTS); the playbooks run directly trust the operator",
    ),
}

FIELDS = {
    "name": "app_name",
    "repo": "app_repo",
    "ref": "app_ref",
    "port": "app_port",
    "container_port": "app_container_port",
    "env": "app_env",
    "health_path": "app_health_path",
    "context": "app_context",
}
RESOURCES = {"memory": "app_memory", "cpus": "app_cpus", "pids": "app_pids"}


def role_vars(body: dict[str, Any]) -> dict[str, Any]:
    """The app role's inputs for a deploy body (as DeploySpec.extra_vars maps them)."""
    result = {FIELDS[k]: v for k, v in body.items() if k in FIELDS}
    result.update({RESOURCES[k]: v for k, v in body.get("resources", {}).items()})
    return result


def api_accepts(body: dict[str, Any]) -> bool:
    try:
        parse_deploy(body, POLICY)
    except Exception as exc:
        if type(exc).__name__ != "ValidationError":
            raise
        return False
    return True


class _Unsafe(str):
    """A string Ansible must never template: written as ``!unsafe``."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Unsafe, lambda dumper, data: dumper.represent_scalar("!unsafe", str(data), style='"')
)


def unsafe(value: Any) -> Any:
    if isinstance(value, str):
        # An empty !unsafe scalar reads as null; an empty string holds no template anyway.
        return _Unsafe(value) if value else value
    if isinstance(value, dict):
        return {unsafe(k): unsafe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unsafe(v) for v in value]
    return value


PLAYBOOK: list[dict[str, Any]] = [
    {
        "name": "Judge deploy inputs",
        "hosts": "all",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Check the inputs",
                "ansible.builtin.include_role": {"name": "app", "tasks_from": "assert"},
            }
        ],
    }
]


@pytest.fixture(scope="module")
def role_verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the app role's checks say of every case: 'accepted' or 'refused: <message>'.

    Each case is a host of its own (connection local, the forks of ansible.cfg) whose host vars are the
    case's inputs, only those the body gives (the role's defaults fill in the others): a refused case is
    a failed host, the others carry on.
    """
    bodies = {**CASES, **{name: body for name, (body, _) in DIFFERENT.items()}}
    work = tmp_path_factory.mktemp("agree")
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    hosts = {name: {**local, **unsafe(role_vars(body))} for name, body in bodies.items()}
    inventory = work / "cases.yml"
    inventory.touch(mode=0o600)
    inventory.write_text(yaml.dump({"all": {"hosts": hosts}}, Dumper=_Dumper, allow_unicode=False))
    book = work / "agree.yml"
    book.write_text(yaml.safe_dump(PLAYBOOK, sort_keys=False, width=1000))
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(inventory), str(book)],
        cwd=REPO,
        # Plain linear: the checks run on the controller, where Mitogen's context per host costs more
        # than it saves.
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_STRATEGY": "linear",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    verdicts = dict.fromkeys(bodies, "accepted")
    for line in proc.stdout.splitlines():
        if line.startswith("fatal: [") and "=> {" in line:
            host = line[len("fatal: [") : line.index("]")]
            message = str(json.loads(line.split("=> ", 1)[1]).get("msg", ""))
            # A check names the variable it refuses; a missing required input is undefined. Anything
            # else is an error of the test, not a verdict.
            refused = message.startswith("app_") or "is undefined" in message
            verdicts[host] = ("refused: " if refused else "error: ") + message
    recap = [line for line in proc.stdout.splitlines() if " : ok=" in line]
    assert len(recap) == len(bodies), proc.stdout[-3000:] + proc.stderr[-3000:]
    return verdicts


def test_the_cases_cover_both_verdicts() -> None:
    accepted = [name for name, body in CASES.items() if api_accepts(body)]
    assert 10 <= len(accepted) < len(CASES) - 30


@pytest.mark.parametrize("name", sorted(CASES))
def test_role_and_api_agree(name: str, role_verdicts: dict[str, str]) -> None:
    api = "accepted" if api_accepts(CASES[name]) else "refused"
    role = role_verdicts[name]
    assert role.split(":")[0] == api, f"API {api}, role {role}"


@pytest.mark.parametrize("name", sorted(DIFFERENT))
def test_deliberate_differences(name: str, role_verdicts: dict[str, str]) -> None:
    body, why = DIFFERENT[name]
    assert not api_accepts(body), why
    assert role_verdicts[name] == "accepted", why
