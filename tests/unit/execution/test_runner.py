"""paas.execution.runner without Ansible: what reaches ansible-runner, what is kept, what is deleted."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from paas.core.config import Settings
from paas.core.runs import RunStatus, TaskEvent
from paas.execution import runner as runner_module
from paas.execution.runner import AnsibleRunner, PlaybookRequest, prune_artifacts, scrub_artifacts

SECRET = "env-secret-9876"


def event(kind: str, task: str, res: dict[str, Any], **data: Any) -> dict[str, Any]:
    return {
        "event": kind,
        "created": "2026-01-01T00:00:00",
        "event_data": {"task": task, "host": "h", "res": res, **data},
    }


class UnsafeLoader(yaml.SafeLoader):
    """Reads ``!unsafe`` scalars as ``("unsafe", value)``, as a check of what Ansible would get."""


UnsafeLoader.add_constructor(
    "!unsafe",
    lambda loader, node: ("unsafe", loader.construct_scalar(node)),  # type: ignore[arg-type]
)


def fake_run(status: str, events: list[dict[str, Any]], seen: dict[str, Any]) -> Any:
    def run(**kwargs: Any) -> Any:
        seen.update(kwargs)
        vars_file = Path(kwargs["cmdline"].split("@", 1)[1])
        text = vars_file.read_text()
        seen["vars_text"] = text
        seen["vars"] = yaml.load(text, Loader=UnsafeLoader)  # noqa: S506 - a loader of !unsafe only
        seen["vars_mode"] = vars_file.stat().st_mode & 0o777
        seen["written"] = [kwargs["event_handler"](e) for e in events]
        seen["cancel"] = kwargs["cancel_callback"]()
        return SimpleNamespace(status=status, rc=0 if status == "successful" else 2)

    return run


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path, api_token="x" * 20, extra_vars={"app_health_retries": 2, "app_name": "x"}
    )


def test_success_with_events_and_captures(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    events = [
        event("playbook_on_task_start", "ignored", {}),
        event("runner_on_ok", "Expose", {"changed": False, "ansible_facts": {"app_source_commit": "abc"}}),
        event(
            "runner_on_ok",
            "Probe",
            {"changed": False, "healthy": True, "_ansible_no_log": False},
            task_action="app_health_probe",
        ),
        event("runner_on_ok", "Run", {"changed": True}),
        event("runner_on_skipped", "Skip", {}),
        event("runner_item_on_ok", "Item", {}),
    ]
    monkeypatch.setattr(runner_module.ansible_runner, "run", fake_run("successful", events, seen))
    got: list[TaskEvent] = []
    result = AnsibleRunner(settings).run(
        PlaybookRequest(
            ident="job1",
            playbook="playbooks/deploy.yml",
            extravars={"app_name": "web", "app_env": {"K": SECRET}, "app_ref": ""},
            capture_facts=("app_source_commit",),
            capture_actions=("app_health_probe",),
        ),
        on_event=got.append,
        should_cancel=lambda: True,
    )
    assert result.status is RunStatus.SUCCEEDED and result.ok
    assert result.facts == {"app_source_commit": "abc"}
    assert result.actions == {"app_health_probe": {"changed": False, "healthy": True}}
    assert [(e.task, e.result) for e in got] == [
        ("Expose", "ok"),
        ("Probe", "ok"),
        ("Run", "changed"),
        ("Skip", "skipped"),
    ]
    # Job vars win over the server's extra vars; they went through a 0600 file, deleted afterwards.
    # Every string of the request is !unsafe (keys too); the server's own extra vars stay plain.
    assert seen["vars"] == {
        "app_health_retries": 2,
        "app_name": ("unsafe", "web"),
        "app_env": {("unsafe", "K"): ("unsafe", SECRET)},
        "app_ref": "",
    }
    assert seen["vars_mode"] == 0o600
    assert not (settings.artifacts_dir / "job1" / "vars.yml").exists()
    assert seen["fact_cache_type"] == "memory"
    assert "extravars" not in seen and seen["suppress_env_files"] is True
    # No event is written to disk by ansible-runner.
    assert seen["written"] == [False] * len(events)
    assert seen["cancel"] is True
    env = seen["envvars"]
    assert env.get("PAAS_API_TOKEN", "") == "" and env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert env["ANSIBLE_CONFIG"].endswith("ansible.cfg")
    assert env["PATH"].split(":")[0].endswith("bin")
    assert seen["project_dir"] == str(settings.repo_root)
    assert seen["playbook"] == str(settings.repo_root / "playbooks/deploy.yml")
    assert SECRET not in json.dumps(
        {k: v for k, v in seen.items() if k not in ("vars", "vars_text")}, default=str
    )


def test_failure_picks_the_deploy_message(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    events = [
        event("runner_on_failed", "Clone", {"msg": "fatal: repository not found"}),
        event(
            "runner_on_failed",
            "Fail the deploy at step clone",
            {"msg": "deploy of 'web' failed at step 'clone': fatal: repository not found"},
        ),
        event("runner_on_failed", "Ignored", {"msg": "later but ignored"}, ignore_errors=True),
    ]
    monkeypatch.setattr(runner_module.ansible_runner, "run", fake_run("failed", events, {}))
    result = AnsibleRunner(settings).run(
        PlaybookRequest(ident="j", playbook="playbooks/deploy.yml"),
        on_event=lambda e: None,
        should_cancel=lambda: False,
    )
    assert result.status is RunStatus.FAILED
    assert result.failed_task == "Fail the deploy at step clone"
    assert result.message == "deploy of 'web' failed at step 'clone': fatal: repository not found"


def test_failure_without_a_task_reads_the_output(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def run(**kwargs: Any) -> Any:
        out = settings.artifacts_dir / "j" / "artifacts" / "j"
        out.mkdir(parents=True)
        (out / "stdout").write_text("\x1b[31mERROR! the playbook could not be found\x1b[0m\n")
        return SimpleNamespace(status="failed", rc=1)

    monkeypatch.setattr(runner_module.ansible_runner, "run", run)
    result = AnsibleRunner(settings).run(
        PlaybookRequest(ident="j", playbook="playbooks/x.yml"),
        on_event=lambda e: None,
        should_cancel=lambda: False,
    )
    assert result.message == "ERROR! the playbook could not be found"


def test_an_exception_is_a_failed_result(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def run(**kwargs: Any) -> Any:
        raise RuntimeError("no ansible-playbook")

    monkeypatch.setattr(runner_module.ansible_runner, "run", run)
    result = AnsibleRunner(settings).run(
        PlaybookRequest(ident="j", playbook="p.yml", extravars={"k": SECRET}),
        on_event=lambda e: None,
        should_cancel=lambda: False,
    )
    assert result.status is RunStatus.FAILED and "no ansible-playbook" in (result.message or "")
    assert not (settings.artifacts_dir / "j" / "vars.yml").exists()


@pytest.mark.parametrize(
    ("raw", "status"), [("canceled", RunStatus.CANCELED), ("timeout", RunStatus.TIMEOUT)]
)
def test_other_statuses(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, raw: str, status: RunStatus
) -> None:
    monkeypatch.setattr(runner_module.ansible_runner, "run", fake_run(raw, [], {}))
    result = AnsibleRunner(settings).run(
        PlaybookRequest(ident="j", playbook="p.yml", keep_artifacts=False),
        on_event=lambda e: None,
        should_cancel=lambda: False,
    )
    assert result.status is status
    assert not (settings.artifacts_dir / "j").exists()


def test_scrub_and_prune(tmp_path: Path) -> None:
    ids = [f"{i:032x}" for i in range(5)]
    for job_id in ids:
        d = tmp_path / job_id
        (d / "artifacts" / job_id / "job_events").mkdir(parents=True)
        (d / "vars.yml").write_text(SECRET)
        (d / "artifacts" / job_id / "job_events" / "x-partial.json").write_text(SECRET)
    (tmp_path / "monitor").mkdir()
    scrub_artifacts(tmp_path)
    assert not list(tmp_path.glob("*/vars.json")) and not list(tmp_path.glob("*/artifacts/*/job_events"))
    for number, job_id in enumerate(ids):
        os.utime(tmp_path / job_id, (1000 + number, 1000 + number))
    prune_artifacts(tmp_path, 2, in_use={ids[0]})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ids[0], ids[3], ids[4], "monitor"])


@pytest.mark.parametrize(
    ("message", "start", "said"),
    [
        (
            "Host key checking is enabled, and SSH reported an unrecognized or mismatching host key.",
            "host key changed for paas-ssh: ",
            "Host key checking is enabled",
        ),
        (
            "Failed to connect to the host via ssh: @@@@@@@@@@@\r\n"
            "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n@@@@@@@@@@@\r\n"
            "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\r\n"
            "Host key verification failed.",
            "host key changed for paas-ssh: ",
            "REMOTE HOST IDENTIFICATION HAS CHANGED",
        ),
        (
            "Failed to connect to the host via ssh: No ED25519 host key is known for [127.0.0.1]:2222 "
            "and you have requested strict checking.\r\nHost key verification failed.",
            "host key not trusted for paas-ssh: ",
            "Host key verification failed",
        ),
    ],
)
def test_refused_host_keys_are_named_as_such(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, message: str, start: str, said: str
) -> None:
    events = [
        event("runner_on_unreachable", "Gather", {"msg": message, "unreachable": True}, host="paas-ssh")
    ]
    events[0]["event_data"]["host"] = "paas-ssh"
    monkeypatch.setattr(runner_module.ansible_runner, "run", fake_run("failed", events, {}))
    result = AnsibleRunner(settings).run(
        PlaybookRequest(ident="j", playbook="playbooks/deploy.yml"),
        on_event=lambda e: None,
        should_cancel=lambda: False,
    )
    assert result.status is RunStatus.FAILED and result.failed_step == "connect"
    assert result.message is not None and result.message.startswith(start) and said in result.message


def test_other_unreachable_hosts_are_not_host_key_failures(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [event("runner_on_unreachable", "Gather", {"msg": "Connection refused", "unreachable": True})]
    monkeypatch.setattr(runner_module.ansible_runner, "run", fake_run("failed", events, {}))
    result = AnsibleRunner(settings).run(
        PlaybookRequest(ident="j", playbook="playbooks/deploy.yml"),
        on_event=lambda e: None,
        should_cancel=lambda: False,
    )
    assert result.failed_step is None and result.message == "Connection refused"


def test_request_environment_reaches_ansible_but_never_the_token(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(runner_module.ansible_runner, "run", fake_run("successful", [], seen))
    AnsibleRunner(settings).run(
        PlaybookRequest(
            ident="j",
            playbook="playbooks/host.yml",
            inventory=Path("/repo/inventory/terraform.py"),
            env={"PAAS_TERRAFORM_ENV": "ssh", "PAAS_API_TOKEN": "leak"},
        ),
        on_event=lambda e: None,
        should_cancel=lambda: False,
    )
    assert seen["inventory"] == "/repo/inventory/terraform.py"
    assert seen["envvars"]["PAAS_TERRAFORM_ENV"] == "ssh" and seen["envvars"].get("PAAS_API_TOKEN", "") == ""


def test_credentials_of_the_server_never_reach_the_records_of_a_run(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ansible-runner writes the whole environment of ansible-playbook into artifacts/<id>/command."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIACANARY",
        "AWS_SECRET_ACCESS_KEY": "canary-secret",
        "AWS_SESSION_TOKEN": "canary-token",
        "GITHUB_TOKEN": "canary-gh",
        "DB_PASSWORD": "canary-db",
        "AWS_PROFILE": "paas",
        "MY_DB_PASS": "canary-unnamed",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "ANSIBLE_VERBOSITY": "1",
    }.items():
        monkeypatch.setenv(name, value)
    env = AnsibleRunner(settings).environment()
    # An allowlist, not a name filter: whatever its name, a variable not on the list is blanked.
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "GITHUB_TOKEN",
        "DB_PASSWORD",
        "AWS_PROFILE",
        "MY_DB_PASS",
    ):
        assert env[name] == "", name
    for name in ("LANG", "LC_ALL", "ANSIBLE_VERBOSITY"):
        assert name not in env, name  # allowed: inherited as they are
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
